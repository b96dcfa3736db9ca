# Fleet Curator — every target sets itself up on a machine with only Python 3.11+ and pip.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell $(PYTHON) -c "import hashlib,sys;print(hashlib.sha256(open('pyproject.toml','rb').read()).hexdigest()[:12])" 2>/dev/null)
DEMO_OUT ?= demo_out
PYTEST_ARGS ?=

.PHONY: install demo test test-fast bench ui lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	$(BIN)/python -m pip check
	rm -f $(VENV)/.installed-*
	touch $@

## Simulate a small fleet and run the main job end to end on it (Beam's local runner).
demo: $(STAMP)
	$(BIN)/fleet demo --out $(DEMO_OUT)

## The whole test suite (slow cases included, as in CI).
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## The suite without the cases marked slow.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

## Benchmarks: ratios against bounds measured in the same run (not tests).
bench: $(STAMP)
	$(BIN)/python bench/decode.py --json bench/results/decode.json

clean:
	rm -rf $(DEMO_OUT) .pytest_cache build *.egg-info
