"""RLlib vs SB3 at the same wall-time budget on the default task, and RLlib's scaling from 1 to 2 env runners.

    OMP_NUM_THREADS=1 python benchmarks/bench_rllib.py --minutes 10 --scaling-minutes 3   # the BENCHMARKS.md run (alone on the machine)
    OMP_NUM_THREADS=1 python benchmarks/bench_rllib.py --model tiny --minutes 0.3 --scaling-minutes 0.2 --eval-prompts 4  # smoke

1. SB3 PPO (one process, ``--sb3-threads`` torch threads, ``--num-envs`` envs) for ``--minutes``.
2. RLlib PPO, ``--runners`` env runners x ``--num-envs-per-runner`` envs, 1 torch thread each, same minutes.
   Both are the same LayerNorm→MLP proxy with the same hyper-parameters (n_steps, lr, minibatch).
3. ``bench`` on the held-out prompts: reward and exact KL of both checkpoints beside always-accept.
4. Scaling: RLlib with 1 and with 2 runners (1 torch thread each) for ``--scaling-minutes`` each;
   decisions/s and their ratio.

Decisions/s count env steps from when training starts (model loads and Ray start-up excluded); the
table also gives each run's whole wall time. Writes ``<out>/results.md``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from stable_baselines3.common.callbacks import BaseCallback

from agents.rllib.backend import RLlibConfig
from agents.rllib.train import train_rllib
from agents.train import SB3Config, train
from proxy_env.config import EnvConfig


class _Clock(BaseCallback):
    """The time SB3's ``learn`` starts stepping (after the model and env are built)."""

    def _on_training_start(self) -> None:
        self.start = time.perf_counter()

    def _on_step(self) -> bool:
        return True


def _common(args: argparse.Namespace, save_dir: str | None, minutes: float, num_envs: int) -> dict:
    """The settings both backends share: the same task, budget and proxy."""
    return dict(
        env=EnvConfig(model=args.model, max_new_tokens=args.max_new_tokens),
        num_envs=num_envs,
        total_timesteps=10**9,
        time_limit_s=60 * minutes,
        n_steps=args.n_steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        seed=args.seed,
        save_dir=save_dir,
        tensorboard_log=f"{save_dir}-tb" if save_dir else None,
    )


def run_sb3(args: argparse.Namespace, save_dir: str) -> dict:
    torch.set_num_threads(args.sb3_threads)
    clock, start = _Clock(), time.perf_counter()
    cfg = SB3Config(**_common(args, save_dir, args.minutes, args.num_envs), eval_prompts="")
    result = train(cfg, callbacks=[clock])
    end = time.perf_counter()
    steps = result.model.num_timesteps
    return {
        "name": f"SB3 PPO, 1 process, {args.num_envs} envs, {args.sb3_threads} threads",
        "steps": steps,
        "dps": steps / (end - clock.start),
        "wall": end - start,
    }


def run_rllib(args: argparse.Namespace, save_dir: str | None, runners: int, minutes: float) -> dict:
    marks: dict[str, float] = {}
    start = time.perf_counter()

    def hook(algo, result):
        marks.setdefault("start", time.perf_counter())

    cfg = RLlibConfig(
        **_common(args, save_dir, minutes, args.num_envs_per_runner),
        num_env_runners=runners,
        num_envs_per_runner=args.num_envs_per_runner,
        threads_per_runner=1,
    )
    result = train_rllib(cfg, on_iteration=hook)
    end = time.perf_counter()
    steps = result.model.num_timesteps
    return {
        "name": f"RLlib PPO, {runners} runner(s) x {args.num_envs_per_runner} envs, 1 thread each",
        "steps": steps,
        "dps": steps / (end - marks["start"]),
        "wall": end - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="frozen LLM ('default' or 'tiny' for a smoke run)")
    parser.add_argument(
        "--minutes", type=float, default=10.0, help="training budget of each of the SB3 and RLlib proxies"
    )
    parser.add_argument(
        "--scaling-minutes", type=float, default=3.0, help="budget of each of the 1- and 2-runner runs (0: skip)"
    )
    parser.add_argument("--runners", type=int, default=2, help="RLlib env runners of the compared proxy")
    parser.add_argument("--num-envs-per-runner", type=int, default=8, help="envs of each RLlib runner")
    parser.add_argument("--num-envs", type=int, default=16, help="envs of the SB3 run (default: 2 runners x 8)")
    parser.add_argument("--sb3-threads", type=int, default=2, help="torch threads of the SB3 process")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="response budget")
    parser.add_argument("--n-steps", type=int, default=64, help="rollout steps per env per update")
    parser.add_argument("--batch-size", type=int, default=256, help="minibatch size")
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="learning rate")
    parser.add_argument("--eval-prompts", type=int, default=48, help="held-out prompts of the comparison")
    parser.add_argument("--seed", type=int, default=0, help="seed")
    parser.add_argument(
        "--out", default="runs/bench_rllib", help="output folder (checkpoints, TensorBoard logs, results.md)"
    )
    parser.add_argument("--skip-compare", action="store_true", help="only the scaling runs")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = [
        f"model {args.model!r}, {args.max_new_tokens} tokens, n_steps {args.n_steps}, minibatch {args.batch_size}, "
        f"lr {args.learning_rate}, seed {args.seed}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, {os.cpu_count()} CPUs",
        "",
    ]
    if not args.skip_compare:
        runs = [
            run_sb3(args, str(out / "sb3_ppo")),
            run_rllib(args, str(out / "rllib_ppo"), args.runners, args.minutes),
        ]
        lines += ["| training run | decisions | decisions/s | wall s (all) |", "|---|---|---|---|"]
        lines += [f"| {r['name']} | {r['steps']:,} | {r['dps']:.1f} | {r['wall']:.0f} |" for r in runs]
        lines += ["", _bench(args, out), ""]
    if args.scaling_minutes > 0:
        one, two = (run_rllib(args, None, n, args.scaling_minutes) for n in (1, 2))
        lines += ["| scaling run | decisions | decisions/s |", "|---|---|---|"]
        lines += [f"| {r['name']} | {r['steps']:,} | {r['dps']:.1f} |" for r in (one, two)]
        lines += ["", f"2 runners / 1 runner: {two['dps'] / one['dps']:.2f}x decisions/s"]
    (out / "results.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


def _bench(args: argparse.Namespace, out: Path) -> str:
    """Reward and exact KL of both checkpoints (and always-accept) on the same held-out prompts and seeds."""
    from agents.eval.bench import BenchConfig, run_bench

    cfg = BenchConfig(
        model=args.model,
        checkpoints=(str(out / "sb3_ppo"), str(out / "rllib_ppo")),
        num_prompts=args.eval_prompts,
        n=(2, 4),
        bon_reference=4,
        max_new_tokens=args.max_new_tokens,
        proxy_actions=("sample",),
        seed=args.seed,
        out=str(out / "bench"),
    )
    res = run_bench(cfg)
    rows = ["| agent | reward (mean) | KL from the LLM (nats, mean) | KL method |", "|---|---|---|---|"]
    for agent in res.agents:
        rows.append(f"| {agent.name} | {agent.rewards.mean():+.3f} | {agent.kl.mean():.3f} | {agent.kl_method} |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
