#!/usr/bin/env bash
# SELF on held-out Arithmetic problems (benchmarks/results/self-arithmetic/): per seed, three runs of
# `criticgym self-evolve` on SmolLM2-135M, then the summary table and plot. Resumable: a finished run is skipped,
# a killed one resumes from its checkpoint.
#   self:      meta-skill learning (stage 0), then one self-evolution round filtered by the model's own judgement
#   m0-train:  gold question-answer records only (stage 0 = the paper's M0), then a round that keeps every answer
#              (plain self-training, no feedback)
#   program:   meta-skills, then a round filtered by the program annotator (an oracle filter: the ceiling of SELF's)
# Usage: bash benchmarks/self_results.sh [seeds]   (default 3). Cost on this project's 2-core CPU, measured with
# other jobs sharing the cores: the base evaluation of 64 problems took 7 minutes, and stage 0's fine-tuning
# (512 records, 2 epochs, 10 of 30 layers trained) had not finished after 40 minutes: several hours per seed on a
# CPU. Run it on an idle machine, or with --device cuda added to COMMON.
set -euo pipefail
CLI=${CLI:-.venv/bin/criticgym}
OUT=benchmarks/results/self-arithmetic
SEEDS=${1:-3}
COMMON="--model smollm2-135m --rounds 1 --meta-records 256 --qa-records 256 --prompts-per-round 128 \
  --eval-problems 64 --max-new-tokens 48 --feedback-tokens 64 --freeze-layers 20 --no-progress"
for seed in $(seq 0 $((SEEDS - 1))); do
  for arm in self m0-train program; do
    case $arm in
      self) options="--filter self" ;;
      m0-train) options="--no-meta-skill --filter none" ;;
      program) options="--filter program" ;;
    esac
    dir=$OUT/runs/$arm/seed-$seed
    [ -f "$dir/metrics.csv" ] && continue
    $CLI self-evolve $COMMON $options --seed "$seed" --out "$dir"
  done
done
.venv/bin/python benchmarks/self_summary.py "$OUT" --command "bash benchmarks/self_results.sh $SEEDS"
