# make cluster  - create .venv, install, run on port 8060 (ARGS="--port 18060 --workers 3 ...")
# make test     - the whole test suite
# make tap      - print the running cluster's events and logs (ARGS="--filter job:")
# make bench    - benchmarks, each figure beside a baseline measured in the same run

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: cluster test tap bench lint clean browser haproxy

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

cluster: $(STAMP)
	$(PY) run_cluster.py $(ARGS)

tap: $(STAMP)
	$(PY) run_cluster.py tap $(ARGS)

test: $(STAMP) browser haproxy
	$(VENV)/bin/pytest -q $(ARGS)

# Debian's Chromium for the page tests (Playwright drives it; it cannot download its own here)
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# Debian's HAProxy, the load balancer in front of two remote web tiers in tests/test_remote_web.py
# (which skips, saying why, where it cannot be installed)
haproxy:
	@command -v haproxy >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null; } || echo "haproxy could not be installed: the load-balancer tests will skip"

bench: $(STAMP)
	bash bench/install-tools.sh
	$(PY) bench/run_all.py $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) data
