#!/usr/bin/env bash
# Is the value guide data-limited (issue 31)? φ of the head's decoding-time guide against the rollouts it learned from.
#   HEAD=runs/value/head-blocks bash benchmarks/frontier_value_scaling.sh "0.125 0.25 0.5" 16
# After frontier_value.sh (its data file and its head $HEAD, fitted on all the training prompts): per share, a head
# fitted on that share of the training prompts alone (`proxy-rlhf value --train-share`, same data file, so nothing is
# collected; same held-out prompts, settings and seed), then one bench of every head as a guide at one N, all 266
# default-eval prompts, best-of-N from frontier32 (no best-of-N sampled here). φ with its bootstrap CI:
#   python benchmarks/rephi.py --frontier benchmarks/results/leaderboard/sentiment/seed0 --evals $OUT/bench/evals/*.json
set -euo pipefail
OUT=${OUT:-runs/value}
SHARES=${1:-"0.125 0.25 0.5"}
N=${2:-16}
SAMPLES=${SAMPLES:-64}
POSITIONS=${POSITIONS:-4}
HEAD=${HEAD:-$OUT/head-blocks}
FRONTIER=${FRONTIER:-benchmarks/results/frontier32/results.csv}
heads=()
for share in $SHARES; do
  dir="$HEAD-s$share"
  heads+=("$dir")
  [ -f "$dir/report.json" ] || OMP_NUM_THREADS=2 proxy-rlhf value --samples "$SAMPLES" --positions "$POSITIONS" \
    --max-new-tokens 32 --data "$OUT/data_${SAMPLES}x${POSITIONS}.pt" --train-share "$share" --out "$dir" --seed "${SEED:-0}"
done
OMP_NUM_THREADS=2 proxy-rlhf bench --value-head "${heads[@]}" "$HEAD" --value-n "$N" --value-rules distribution \
  --prompts default-eval --n --frontier-from "$FRONTIER" --max-new-tokens 32 --sample --batch-size 32 \
  --cache-dir "$OUT/bench/evals" --resume --out "$OUT/bench_scaling-$(basename "$HEAD")-n$N"
