#!/usr/bin/env bash
# Issue 31's RL arm: PPO with the exact KL charge fine-tunes a value-fitted proxy, on all 266 default-eval prompts.
#   bash benchmarks/frontier_value_rl.sh 4 0.3        # the N of frontier_value.sh's proxy it starts from, β of the charge
# `train --init-from $OUT/<head>-n$N` copies the fitted proxy's weights into a new PPO run (the demo's PPO recipe: prefix
# observation, reward shaping, n_steps 64 x 16 envs, 4 epochs, λ 0, at a 3x lower learning rate since it starts from a
# good policy); its first $WARMUP updates train the value head only (`--critic-warmup`), so the untrained critic's
# advantages do not move the fitted actor. Then one bench of the proxy before and after, with best-of-N 1…32 (read
# from frontier_value.sh's cache when the settings match, so φ keeps its interval).
set -euo pipefail
OUT=${OUT:-runs/value}
N=${1:-4}
BETA=${2:-0.3}
STEPS=${STEPS:-65536}
WARMUP=${WARMUP:-4}
HEAD=${HEAD:-$OUT/head}  # the head frontier_value.sh fitted the proxy to (it names the proxy's folder)
src="$OUT/$(basename "$HEAD")-n$N"
dir="$src-ppo-b$BETA"
[ -f "$dir/proxy_config.json" ] || OMP_NUM_THREADS=2 proxy-rlhf train --backend sb3 --algo ppo --observation prefix \
  --reward-shaping --kl-coef "$BETA" --init-from "$src" --critic-warmup "$WARMUP" \
  --total-timesteps "$STEPS" --num-envs 16 --n-steps 64 --batch-size 256 --learning-rate 3e-4 \
  --algo-kwargs '{"n_epochs": 4, "gae_lambda": 0.0, "ent_coef": 0.0}' --max-new-tokens 32 \
  --save-dir "$dir" --tensorboard-log "$dir-tb" --seed "${SEED:-0}"
# best-of-N: sampled here, or read from a results file ($FRONTIER, as in frontier_value.sh)
if [ -n "${FRONTIER:-}" ]; then bon=(--n --frontier-from "$FRONTIER"); else bon=(--n 2 4 8 16 32 --bon-reference 4); fi
OMP_NUM_THREADS=2 proxy-rlhf bench --checkpoints "$src" "$dir" --prompts default-eval "${bon[@]}" \
  --max-new-tokens 32 --sample --batch-size 32 --cache-dir "$OUT/bench/evals" --resume --out "$OUT/bench_rl_n${N}_b$BETA"
