#!/usr/bin/env bash
# SELF on held-out Arithmetic problems (benchmarks/results/self-arithmetic/): per seed, five runs of
# `criticgym self-evolve` on SmolLM2-135M, then the summary table and plot. Resumable: a finished run is skipped,
# a killed one resumes from its checkpoint.
#   self:      meta-skill learning (stage 0), then three self-evolution rounds filtered by the model's own judgement
#              (the paper's three; each round answers 96 new problems)
#   program:   the same stage 0, then a round filtered by the program annotator (an oracle filter: SELF's ceiling)
#   m0-train:  gold question-answer records only, as many training tokens as stage 0 above (the paper's M0), then a
#              round that keeps every answer (plain self-training, no feedback)
# Stage 0 is trained once per seed (runs/shared/) and copied into the arms that start from it. The untrained model
# is evaluated once (greedy evaluation does not depend on the seed). Every arm's round 1 answers the same 96
# problems, never one of the records'; round t the t-th block of 96 from the end of the seeded order.
# Usage: bash benchmarks/self_results.sh [seeds]   (default 3; about 2 h 40 min for three on a 2-core CPU)
set -euo pipefail
CLI=${CLI:-.venv/bin/criticgym}
OUT=benchmarks/results/self-arithmetic
SEEDS=${1:-3}
COMMON="--model smollm2-135m --prompts-per-round 96 --replay 64 --eval-problems 64 \
  --max-new-tokens 64 --feedback-tokens 112 --freeze-layers 20 --no-progress"
META="--meta-records 96 --qa-records 96"
M0="--no-meta-skill --meta-records 0 --qa-records 460"  # 460 gold answers: the tokens of 96 meta + 96 QA records

# stage0 NAME SEED OPTIONS...: the shared first stage (a run with no round)
stage0() {
  local dir=$OUT/runs/shared/$1-seed-$2 base=--no-base-eval
  [ "$1" = meta ] && [ "$2" = 0 ] && base=--base-eval
  [ -f "$dir/metrics.csv" ] || $CLI self-evolve $COMMON --rounds 0 "${@:3}" $base --seed "$2" --out "$dir"
}
# rounds ARM SEED FROM N OPTIONS...: N rounds from a shared stage 0 (a finished run resumes with nothing to do)
rounds() {
  local dir=$OUT/runs/$1/seed-$2
  mkdir -p "$dir"
  [ -f "$dir/checkpoint.pt" ] || cp "$OUT/runs/shared/$3-seed-$2/checkpoint.pt" "$dir/"
  $CLI self-evolve $COMMON --rounds "$4" "${@:5}" --seed "$2" --out "$dir"
}
for seed in $(seq 0 $((SEEDS - 1))); do
  stage0 meta "$seed" $META
  stage0 m0 "$seed" $M0
  rounds self "$seed" meta 3 $META --filter self
  rounds program "$seed" meta 1 $META --filter program
  rounds m0-train "$seed" m0 1 $M0 --filter none
done
.venv/bin/python benchmarks/self_summary.py "$OUT" --command "bash benchmarks/self_results.sh $SEEDS"
