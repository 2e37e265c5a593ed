#!/usr/bin/env bash
# The reward ablations of benchmarks/results/ablation-*: each line writes one folder (summary.md, table.json,
# curves.csv, ablation.png) and is resumable (finished runs are kept in OUT/runs, which git ignores).
# Usage: bash benchmarks/ablation_results.sh [sentiment|rlaif|detoxify|toxic-start ...]
# (about 40, 15, 35 and 45 minutes on 2 cores)
set -euo pipefail
CLI=${CLI:-.venv/bin/criticgym}
for what in "${@:-sentiment rlaif detoxify}"; do
  for one in $what; do
    case $one in
      # RELC's claim on its first task: critic spans against the sparse score and random spans, 8 seeds
      sentiment) $CLI bench ablation --arms sparse,relc-lexicon,random --seeds 8 --out benchmarks/results/ablation-cpu ;;
      # the policy's own model (a frozen copy) as a label-word judge (RLAIF) and as a clause critic (RELC)
      rlaif) $CLI bench ablation --arms sparse,relc-lexicon,rlaif-direct,rlaif-pairwise,relc-label --judge-model label:self \
               --seeds 3 --out benchmarks/results/ablation-rlaif-cpu ;;
      # RELC's second task: the toxicity critic (positive value 0, negative -0.5); held-out judge: a word list
      detoxify) $CLI bench ablation --env criticgym/Detoxify-v0 --arms sparse,relc,random --seeds 8 \
                  --out benchmarks/results/ablation-detoxify-cpu ;;
      # the same from a policy with room to improve: fine-tuned on offensive continuations until the word list flags 30%
      toxic-start) $CLI bench toxic-start --out runs/toxic-start --no-progress
                   $CLI bench ablation --env criticgym/Detoxify-v0 --model runs/toxic-start/model \
                     --arms sparse,relc-toxicity,random-toxicity --seeds 8 \
                     --out benchmarks/results/ablation-detoxify-toxic-start-cpu ;;
      *) echo "unknown ablation $one (sentiment, rlaif, detoxify or toxic-start)" >&2; exit 2 ;;
    esac
  done
done
