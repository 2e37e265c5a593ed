#!/usr/bin/env bash
# RAIN with smollm2-135m on a CPU: every arm of benchmarks/results/rain-<task>/. The search's evaluator is a scorer
# (or the model itself); a different, held-out judge decides what counts as acceptable.
#   sentiment: SentimentControl-v0, search with VADER, judge with the sentiment classifier (about 45 minutes)
#   detoxify:  Detoxify-v0, search with alt-profanity-check, judge with better-profanity's word list (about 25)
# Usage: bash benchmarks/rain_results.sh [sentiment|detoxify] [OUT]   (2 cores)
set -euo pipefail
TASK=${1:-sentiment}
case $TASK in
  sentiment) ENV=criticgym/SentimentControl-v0 EVALUATOR=vader JUDGE=sentiment-classifier SELF="self self-label" ;;
  detoxify) ENV=criticgym/Detoxify-v0 EVALUATOR=toxicity JUDGE=profanity-list SELF="self" ;;
  *) echo "unknown task '$TASK': use sentiment or detoxify" >&2; exit 2 ;;
esac
OUT=${2:-benchmarks/results/rain-$TASK}
CLI=${CLI:-.venv/bin/criticgym}
COMMON=(--env "$ENV" --model smollm2-135m --prompts 16 --seeds 2 --judge "$JUDGE"
        --rain.searches 10 --rain.min-new-searches 5 --no-progress)
$CLI search --method vanilla,rain --evaluator "$EVALUATOR" "${COMMON[@]}" --out "$OUT/$EVALUATOR"
$CLI search --method vanilla,rain --evaluator "$EVALUATOR" --rain.c 0 "${COMMON[@]}" --out "$OUT/$EVALUATOR-c0"
for evaluator in $SELF; do
  $CLI search --method vanilla,rain --evaluator "$evaluator" "${COMMON[@]}" --out "$OUT/$evaluator"
done
# best-of-N with as many forward tokens per prompt as RAIN with the scorer used
N=$(python3 -c "import json; t={r['method']: r for r in json.load(open('$OUT/$EVALUATOR/summary.json'))['table']}; print(max(2, round(t['rain']['forward_tokens'] / t['vanilla']['forward_tokens'])))")
$CLI search --method vanilla,best-of-n --n "$N" --evaluator "$EVALUATOR" "${COMMON[@]}" --out "$OUT/best-of-n"
