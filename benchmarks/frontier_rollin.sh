#!/usr/bin/env bash
# Q♯'s second round (issue 31) on the reward–KL frontier, all 266 default-eval prompts; after frontier_value.sh.
#   bash benchmarks/frontier_rollin.sh "2 4 8 16"       # the N of each guide row (default below)
#   HEAD=runs/value/head-blocks bash benchmarks/frontier_rollin.sh "4 8 16"
#   HEAD=runs/value/head-blocks ROLL_IN_N=16 ROLL_INS=4 FRONTIER=benchmarks/results/frontier32/results.csv \
#     bash benchmarks/frontier_rollin.sh "8 16"
# 1. `proxy-rlhf value --roll-in`: the first round's head ($HEAD) guides $ROLL_INS roll-ins per training prompt at
#    N = $ROLL_IN_N (default 8 x 637 = 5,096), each switched to the LLM's sampler at a uniform step and labelled in the
#    prompt's first-round CDF (agents/value/rollin.py, resumable); the head is fitted again on both rounds ($HEAD-rollin).
# 2. One bench of both heads as decoding-time guides at each N, with best-of-N 1…32 (or $FRONTIER's); evaluations
#    frontier_value.sh already made under the same settings (best-of-N included) are read from its cache.
set -euo pipefail
OUT=${OUT:-runs/value}
NS=${1:-"2 4 8 16"}
SAMPLES=${SAMPLES:-64}
POSITIONS=${POSITIONS:-4}
ROLL_IN_N=${ROLL_IN_N:-4}
ROLL_INS=${ROLL_INS:-8}
BATCH_PROMPTS=${BATCH_PROMPTS:-8}  # prompts rolled in at once (x ROLL_INS rows)
HEAD=${HEAD:-$OUT/head}  # the first round's head (runs/value/head-blocks: per-block norm); round two goes to $HEAD-rollin
[ -f "$HEAD-rollin/report.json" ] || OMP_NUM_THREADS=2 proxy-rlhf value --samples "$SAMPLES" --positions "$POSITIONS" \
  --max-new-tokens 32 --data "$OUT/data_${SAMPLES}x${POSITIONS}.pt" --seed "${SEED:-0}" \
  --roll-in "$HEAD" --roll-in-n "$ROLL_IN_N" --roll-ins "$ROLL_INS" --roll-in-data "$OUT/rollin_$(basename "$HEAD")_n${ROLL_IN_N}.pt" \
  --batch-prompts "$BATCH_PROMPTS" --out "$HEAD-rollin"
# best-of-N: sampled here (1…32, 4 reference samples for its KL), or read from a results file ($FRONTIER, e.g.
# benchmarks/results/frontier32/results.csv: same prompts, seed and settings, checked on always-accept)
if [ -n "${FRONTIER:-}" ]; then bon=(--n --frontier-from "$FRONTIER"); else bon=(--n 2 4 8 16 32 --bon-reference 4); fi
OMP_NUM_THREADS=2 proxy-rlhf bench --value-head "$HEAD" "$HEAD-rollin" --value-n $NS \
  --prompts default-eval "${bon[@]}" --max-new-tokens 32 --sample --batch-size 32 \
  --cache-dir "$OUT/bench/evals" --resume --out "$OUT/bench_rollin-$(basename "$HEAD")"
