#!/usr/bin/env bash
# Value-guided proxies (issue 31) on the reward–KL frontier, all 266 default-eval prompts.
#   bash benchmarks/frontier_value.sh "2 4 8 16"       # the N of each proxy (default below), then bench
#   HEAD=runs/value/head-blocks bash benchmarks/frontier_value.sh "4 8 16"   # proxies fitted to another head
# 1. `proxy-rlhf value`: $SAMPLES responses per training prompt (default 64: 637 x 64 = 40,768 responses), their
#    mid-rank quantiles u, $POSITIONS labelled positions each, and the distributional value head (resumable:
#    rerun the same command after a stop). Q♯'s second round is benchmarks/frontier_rollin.sh, after this one.
# 2. Per N: `train --backend tilt --tilt-value` fits the proxy to q·E[u^(N-1) | s+y] over the tilt recipe's collected
#    positions ($TILT_DATA: frontier_tilt.sh's 32,768-decision cache is reused when its settings match). β (--kl-coef)
#    cancels out of the target (Δ = β log W), so it is 1.
# 3. One bench with its own best-of-N 1…32 (4 reference samples per prompt for its KL; per-prompt results, so φ gets a
#    bootstrap CI), with the head also as a decoding-time guide at each N (`--value-head`: nothing fitted, the accept
#    rule solved per pool). benchmarks/rephi.py puts the rows on frontier32's curve as well.
set -euo pipefail
OUT=${OUT:-runs/value}
NS=${1:-"2 4 8 16"}
SAMPLES=${SAMPLES:-64}
POSITIONS=${POSITIONS:-4}
TILT_DATA=${TILT_DATA:-runs/tilt/data_32k.pt}
EPOCHS=${EPOCHS:-12}
HEAD=${HEAD:-$OUT/head}  # the value head the proxies are fitted to and the guides use (runs/value/head-blocks: per-block norm)
RULES=${RULES:-"distribution mean"}  # the guides' readings of the head (--value-rules)
# a finished head is kept (its report.json): a rerun after a stop goes on with the proxies and the bench
[ -f "$HEAD/report.json" ] || OMP_NUM_THREADS=2 proxy-rlhf value --samples "$SAMPLES" --positions "$POSITIONS" --max-new-tokens 32 --curve 0.125 0.25 0.5 \
  --data "$OUT/data_${SAMPLES}x${POSITIONS}.pt" --out "$HEAD" --seed "${SEED:-0}"
dirs=()
for n in $NS; do
  dir="$OUT/$(basename "$HEAD")-n$n"
  dirs+=("$dir")
  [ -f "$dir/proxy_config.json" ] && continue
  OMP_NUM_THREADS=2 proxy-rlhf train --backend tilt --observation prefix --kl-coef 1.0 \
    --tilt-value "$HEAD" --tilt-value-n "$n" \
    --total-timesteps 32768 --num-envs 32 --max-new-tokens 32 --tilt-epochs "$EPOCHS" --tilt-warmup-epochs 1 --learning-rate 3e-3 \
    --tilt-data "$TILT_DATA" --save-dir "$dir" --tensorboard-log "$dir-tb" --seed "${SEED:-0}"
done
# best-of-N: sampled here (1…32, 4 reference samples for its KL), or read from a results file ($FRONTIER, e.g.
# benchmarks/results/frontier32/results.csv: same prompts, seed and settings, checked on always-accept)
if [ -n "${FRONTIER:-}" ]; then bon=(--n --frontier-from "$FRONTIER"); else bon=(--n 2 4 8 16 32 --bon-reference 4); fi
OMP_NUM_THREADS=2 proxy-rlhf bench --checkpoints "${dirs[@]}" --value-head "$HEAD" --value-n $NS --value-rules $RULES \
  --prompts default-eval "${bon[@]}" --max-new-tokens 32 --sample --batch-size 32 \
  --cache-dir "$OUT/bench/evals" --resume --out "$OUT/bench-$(basename "$HEAD")"
