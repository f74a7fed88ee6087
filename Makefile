# Two commands do everything on a fresh machine (see README):
#   make demo   set up .venv if missing, then run the notebook suite on the embedded data
#   make test   set up .venv if missing, then run the test suite and the quick benchmarks
#   (make bench: the full benchmarks, which regenerate docs/benchmarks.md)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Pinned first: on these machines 2.13.0 is the CPU build on disk; an open range would pull
# a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
OUT    ?= reports/demo
PYTEST_ARGS ?= -n 2

.PHONY: demo test bench venv clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

demo: venv
	$(BIN)/gatrank suite --out $(OUT)

test: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)
	$(BIN)/python -m benchmarks --quick

bench: venv
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) reports/demo .pytest_cache
