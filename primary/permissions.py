"""Only the cluster's own user reads its data: the data dir 0700, the database 0600, the storage tree 0700.

The umask covers what is made from now on, in the primary and every child it starts; the chmods cover
what an earlier version, or ``run_cluster.py user add`` before the first start, left readable.
"""

from __future__ import annotations

import os
from contextlib import suppress
from pathlib import Path

from cluster.config import ClusterConfig

PRIVATE_UMASK = 0o077
DIR_MODE = 0o700
FILE_MODE = 0o600
DB_SUFFIXES = ("", "-wal", "-shm", "-journal")


def restrict(config: ClusterConfig) -> None:
    """Before the store is opened: SQLite gives the -wal and -shm files the database file's mode."""
    os.umask(PRIVATE_UMASK)
    for directory in (config.data_dir, config.storage_dir):
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, DIR_MODE)
    for suffix in DB_SUFFIXES:
        with suppress(FileNotFoundError):
            os.chmod(Path(f"{config.db_path}{suffix}"), FILE_MODE)
