#!/usr/bin/env bash
# Tilt proxies (`train --backend tilt`) on the reward–KL frontier, all 266 default-eval prompts.
#   bash benchmarks/frontier_tilt.sh "0.5 0.3 0.2"      # the β to train (default below), then bench
#   EPOCHS=12 LAMBDAS= OUT=runs/tilt12 FRONTIER=benchmarks/results/frontier32/results.csv bash benchmarks/frontier_tilt.sh "0.3"
#   EXTRA=--tilt-future TAG=-future EPOCHS=12 LAMBDAS= OUT=runs/tilt12 FRONTIER=... bash benchmarks/frontier_tilt.sh "0.3"
# One collection of 32,768 decisions of the LLM's own sampler (cached in $OUT/data_32k.pt, shared by every β),
# then per β: 1 warm-start epoch + $EPOCHS (default 4) epochs of the exact objective. The bench reuses best-of-N 2…16 from
# benchmarks/frontier.sh's run ($FRONTIER: same prompts, seed and settings, checked on always-accept), and
# traces the first proxy along accept powers λ ($LAMBDAS, default "1.5 2 3"; empty skips it). $EXTRA: more
# `proxy-rlhf train` flags; $TAG: a suffix of each proxy's folder and of the bench's, so variants share the data. The
# bench keeps per-prompt results in $CACHE (default $OUT/bench/evals), so benchmarks/rephi.py can give φ its bootstrap CI.
set -euo pipefail
OUT=${OUT:-runs/tilt}
BETAS=${1:-"0.5 0.3 0.2"}
FRONTIER=${FRONTIER:-runs/frontier/bench/results.csv}
EPOCHS=${EPOCHS:-4}
LAMBDAS=${LAMBDAS-"1.5 2 3"}
EXTRA=${EXTRA:-}
TAG=${TAG:-}
dirs=()
for beta in $BETAS; do
  dir="$OUT/w$beta$TAG"
  dirs+=("$dir")
  [ -f "$dir/proxy_config.json" ] && continue
  OMP_NUM_THREADS=2 proxy-rlhf train --backend tilt --observation prefix --kl-coef "$beta" \
    --total-timesteps 32768 --num-envs 32 --max-new-tokens 32 --tilt-epochs "$EPOCHS" --tilt-warmup-epochs 1 --learning-rate 3e-3 \
    --tilt-data "$OUT/data_32k.pt" --save-dir "$dir" --tensorboard-log "$dir-tb" --seed "${SEED:-0}" $EXTRA
done
OMP_NUM_THREADS=2 proxy-rlhf bench --checkpoints "${dirs[@]}" --prompts default-eval --n --frontier-from "$FRONTIER" \
  --max-new-tokens 32 --sample --batch-size 32 --cache-dir "${CACHE:-$OUT/bench/evals}" --resume --out "$OUT/bench$TAG"
[ -z "$LAMBDAS" ] && exit 0
OMP_NUM_THREADS=2 proxy-rlhf bench --checkpoints "${dirs[0]}" --prompts default-eval --n --frontier-from "$FRONTIER" \
  --max-new-tokens 32 --sample --accept-powers $LAMBDAS --batch-size 32 --out "$OUT/bench_lambda$TAG"
