"""Train a PPO proxy on the default task under a wall-time budget; compare it with always-accept.

    python benchmarks/bench_train.py --minutes 20                                    # the BENCHMARKS.md run
    python benchmarks/bench_train.py --minutes 20 --reward runs/rm --out runs/ppo_rm  # train on a learned RM

Training uses ``--reward`` (VADER by default, or a reward-model folder from ``proxy-rlhf rm train``);
evaluation always scores with ``--eval-reward`` (VADER by default), so a proxy trained on a learned RM
is judged by the reward that labelled the RM's preference data.

Held-out reward on every ``default-eval`` prompt (one response each, same env seeds for both agents),
95% confidence intervals, rejection rate, training wall time and decisions per second, and the
proxy's trainable parameters next to the LLM's.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from agents.baselines import AlwaysAccept
from agents.eval.compare import run_agents, table
from agents.train import SB3Config, train
from agents.training import resolve_lm
from proxy_env.config import EnvConfig
from proxy_env.prompts import load_prompts
from proxy_env.rewards import resolve_reward


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=20.0, help="training wall-time budget")
    parser.add_argument("--num-envs", type=int, default=16, help="envs run in parallel during training")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="response budget")
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="PPO learning rate")
    parser.add_argument("--eval-prompts", type=int, default=0, help="held-out prompts (0: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed")
    parser.add_argument("--out", default="runs/bench_ppo", help="checkpoint folder")
    parser.add_argument(
        "--reward", default="default", help="training reward: 'default' (VADER) or a reward-model folder"
    )
    parser.add_argument("--eval-reward", default="default", help="reward the held-out comparison is scored with")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    lm = resolve_lm("default", None)
    cfg = SB3Config(
        env=EnvConfig(reward=args.reward, max_new_tokens=args.max_new_tokens),
        num_envs=args.num_envs,
        total_timesteps=10**9,
        time_limit_s=args.minutes * 60,
        seed=args.seed,
        n_steps=64,
        batch_size=256,
        learning_rate=args.learning_rate,
        algo_kwargs={"n_epochs": 4, "ent_coef": 0.01},
        eval_prompts="",
        save_dir=args.out,
        tensorboard_log=f"{args.out}-tb",
    )
    start = time.perf_counter()
    result = train(cfg, model=lm)
    wall = time.perf_counter() - start
    steps = result.model.num_timesteps
    prompts = load_prompts("default-eval")
    prompts = prompts[: args.eval_prompts] if args.eval_prompts else prompts
    results = run_agents(
        lm,
        {"always-accept (LLM)": AlwaysAccept(), "PPO proxy": result.model},
        prompts,
        resolve_reward(args.eval_reward),
        seed=args.seed,
        batch_size=32,
        max_new_tokens=args.max_new_tokens,
    )
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {args.threads} threads"
    print(f"device: {device}; torch {torch.__version__}")
    print(
        f"training: {steps:,} decisions in {wall:.0f} s = {steps / wall:.1f} decisions/s ({args.num_envs} envs, "
        f"max_new_tokens={args.max_new_tokens}, lr={args.learning_rate})"
    )
    print(
        f"proxy: {result.params.proxy:,} trainable parameters = {100 * result.params.ratio:.3f}% of the LLM's {result.params.llm:,}"
    )
    print(f"training reward: {args.reward}; evaluation reward: {args.eval_reward}; held-out prompts: {len(prompts)}\n")
    print(table(results, reference="always-accept (LLM)"))


if __name__ == "__main__":
    main()
