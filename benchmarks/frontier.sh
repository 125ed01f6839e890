#!/usr/bin/env bash
# Proxies on the reward–KL frontier, all 266 default-eval prompts.
#   bash benchmarks/frontier.sh "1.0:0.0 0.3:0.7"     # β:GAE-λ pairs to train (default below), then bench
#   NS="2 4 8 16 32" OUT=runs/frontier32 bash benchmarks/frontier.sh "0.0:0.0"   # β = 0 (no KL term) and best-of-32
# One PPO proxy per (β, λ): KL-regularised (exact per-token charge), observation "prefix", reward shaping,
# 16,384 decisions, 10 epochs. Then one bench run: best-of-N 2…16 (nested samples, 4 reference samples for
# its KL estimate) and every proxy with sampled actions at accept powers 1 and 0.5.
set -euo pipefail
OUT=${OUT:-runs/frontier}
RUNS=${1:-"1.0:0.0 0.3:0.7"}
THREADS=${THREADS:-1}
NS=${NS:-"2 4 8 16"}  # best-of-N rows; one sampling pass of max(N) + 4 samples per prompt serves them all
dirs=()
for run in $RUNS; do
  beta=${run%%:*}; gae=${run##*:}
  dir="$OUT/beta${beta}_gae${gae}"
  dirs+=("$dir")
  [ -f "$dir/proxy_config.json" ] && continue
  OMP_NUM_THREADS=$THREADS proxy-rlhf train --observation prefix --kl-coef "$beta" --reward-shaping \
    --total-timesteps 16384 --num-envs 16 --n-steps 64 --batch-size 256 --learning-rate 1e-3 \
    --algo-kwargs "{\"n_epochs\": 10, \"gae_lambda\": $gae, \"ent_coef\": 0.0}" --init-accept-prob 0.9 \
    --max-new-tokens 32 --eval-prompts '' --seed "${SEED:-0}" --save-dir "$dir"
done
OMP_NUM_THREADS=2 proxy-rlhf bench --checkpoints "${dirs[@]}" --prompts default-eval --n $NS --bon-reference 4 \
  --max-new-tokens 32 --sample --accept-powers 0.5 --batch-size 32 --out "$OUT/bench"
