#!/usr/bin/env bash
# RAIN on SentimentControl-v0 with smollm2-135m on a CPU: every arm of benchmarks/results/rain-sentiment/.
# Search with VADER (or the model itself), judge with the sentiment classifier (held out).
# Usage: bash benchmarks/rain_results.sh [OUT]   (about 45 minutes on 2 cores)
set -euo pipefail
OUT=${1:-benchmarks/results/rain-sentiment}
CLI=${CLI:-.venv/bin/criticgym}
COMMON=(--env criticgym/SentimentControl-v0 --model smollm2-135m --prompts 16 --seeds 2 --judge sentiment-classifier
        --rain.searches 10 --rain.min-new-searches 5 --no-progress)
$CLI search --method vanilla,rain --evaluator vader "${COMMON[@]}" --out "$OUT/vader"
$CLI search --method vanilla,rain --evaluator vader --rain.c 0 "${COMMON[@]}" --out "$OUT/vader-c0"
$CLI search --method vanilla,rain --evaluator self "${COMMON[@]}" --out "$OUT/self"
$CLI search --method vanilla,rain --evaluator self-label "${COMMON[@]}" --out "$OUT/self-label"
# best-of-N with as many forward tokens per prompt as RAIN with VADER used
N=$(python3 -c "import json; t={r['method']: r for r in json.load(open('$OUT/vader/summary.json'))['table']}; print(max(2, round(t['rain']['forward_tokens'] / t['vanilla']['forward_tokens'])))")
$CLI search --method vanilla,best-of-n --n "$N" --evaluator vader "${COMMON[@]}" --out "$OUT/best-of-n"
