#!/usr/bin/env bash
# Installs the tools the benchmarks need (wrk, the load generator; curl, the S3 bench's uploader), once; a no-op when it is already there.
# Quiet: apt's output is shown only if the install fails.
set -euo pipefail

command -v wrk >/dev/null 2>&1 && command -v curl >/dev/null 2>&1 && exit 0

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
if ! output=$({ $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends wrk curl; } 2>&1); then
    echo "$output" >&2
    echo "install-tools.sh: could not install wrk and curl" >&2
    exit 1
fi
command -v wrk >/dev/null && command -v curl >/dev/null
