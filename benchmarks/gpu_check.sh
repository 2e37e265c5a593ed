#!/usr/bin/env bash
# The GPU check: the `gpu` tests and the GPU report (rollout against `generate` at batch 1 / 64 / 256, the share of
# the memory-bandwidth limit at batch 1, PPO update tokens/s; vLLM beside them where the image has vLLM), in
# well under 10 minutes on an H100/H200.
# It needs no hub and no large files: `tiny` and `smollm2-135m-random` (built there from SmolLM2's shape).
#
# Two steps, for a machine whose image has torch, transformers, peft, pytest but not the rest (the lent H200s):
#   1. here, once:  bash benchmarks/gpu_check.sh --prepare
#      (downloads the missing wheels into .whl/ and copies the tokenizer and `tiny` into .gpu-cache/, both ignored)
#   2. there:       bash benchmarks/gpu_check.sh            with .whl and .gpu-cache carried along
#      (the device tool: run(command="bash benchmarks/gpu_check.sh", carry=[".whl", ".gpu-cache"], timeout_s=590))
# On a machine with the project's venv and CUDA, step 2 alone works: PY=.venv/bin/python bash benchmarks/gpu_check.sh
# The report lands in $OUT (the device tool's output folder) or benchmarks/results/gpu/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}

if [ "${1:-}" = "--prepare" ]; then
  grep -qx '/.whl/' .git/info/exclude || echo /.whl/ >> .git/info/exclude
  grep -qx '/.gpu-cache/' .git/info/exclude || echo /.gpu-cache/ >> .git/info/exclude
  rm -rf .whl && mkdir -p .whl
  # what `import criticgym` and the tests need beyond the image (gymnasium, tyro and their own needs)
  for wheel in $(grep -E '^(gymnasium|farama-notifications|tyro|docstring-parser|typeguard|shtab)==' requirements.lock); do
    .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl "$wheel"
  done
  .venv/bin/python -c "from criticgym.rollout import load_policy; load_policy('tiny')"  # builds the cache
  cache=${CRITICGYM_CACHE:-$HOME/.cache/criticgym}
  rm -rf .gpu-cache && mkdir -p .gpu-cache && cp -r "$cache/tiny-v2" "$cache/smollm2-tokenizer" .gpu-cache/
  du -sh .whl .gpu-cache
  exit 0
fi

if [ -d .whl ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
fi
[ -d .gpu-cache ] && export CRITICGYM_CACHE=$PWD/.gpu-cache
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
if command -v nvidia-smi > /dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/device.csv"
fi
$PY -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
# the gpu-marked tests (the rest of the suite runs on CI's CPUs)
$PY -m pytest -m gpu -o addopts="" -p no:cacheprovider -q $(grep -rl "mark.gpu" tests) 2>&1 | tee "$OUT/gpu_tests.txt"
# BENCH_ARGS: e.g. "--device cpu --models tiny --batches 1,2 --new-tokens 4" for a dry run without a GPU
timeout 420 $PY benchmarks/bench_gpu.py --out "$OUT/report.md" ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench_gpu.log"
# vLLM on CUDA, where the machine's image has it (the lent machines have no network and carry 64 MiB, so vLLM cannot
# travel there): the same comparison as `make bench-vllm` on a random-weight SmolLM2 (smollm2-135m-random), then one
# PPO iteration with --engine vllm. VLLM_ARGS: extra options for bench_vllm.py.
if $PY -c "import vllm" 2> /dev/null; then
  timeout 240 $PY benchmarks/bench_vllm.py --model smollm2-135m-random --batch-sizes 32 128 256 \
    --out "$OUT/vllm.md" ${VLLM_ARGS:-} 2>&1 | tee "$OUT/bench_vllm.log"
  timeout 120 $PY -m criticgym train --model smollm2-135m-random --engine vllm --device cuda --iterations 1 \
    --num-envs 64 --eval-prompts 8 --out "$OUT/ppo-vllm" --no-progress --reward sparse 2>&1 | tee "$OUT/ppo_vllm.log"
else
  echo "vLLM is not installed in this image: no vLLM figures" | tee "$OUT/vllm.md"
fi
