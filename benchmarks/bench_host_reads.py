"""Device-to-host reads per env step (what a GPU would wait for), per engine mode: counted, not timed.

    OMP_NUM_THREADS=1 python benchmarks/bench_host_reads.py --models default tiny --num-envs 8 32 --steps 50
    OMP_NUM_THREADS=1 python benchmarks/bench_host_reads.py --models tiny --static   # the GPU's static batch

Counts every ``bool(t)``, ``int(t)``, ``.item()``, ``.tolist()``, ``.cpu()``, ``.numpy()``, ``nonzero`` and
boolean-mask indexing made inside ``venv.step`` (:class:`proxy_env.engine.host_reads.HostReads`), with a random
proxy rejecting 30%, after a warm-up of 10 steps. On the CPU these cost nothing, so the count is the figure.
"""

from __future__ import annotations

import argparse
import os

import gymnasium as gym
import numpy as np
import torch

import proxy_env
from proxy_env.engine.host_reads import HostReads

MODES = {
    "candidate": {},
    "candidate+forced_steps": {"forced_steps": True},
    "prefix": {"observation": "prefix"},
    "prefix+forced_steps": {"observation": "prefix", "forced_steps": True},
}


def count(lm, num_envs: int, mode: str, steps: int) -> tuple[float, dict[str, float]]:
    venv = gym.make_vec(
        proxy_env.ENV_ID,
        num_envs=num_envs,
        vectorization_mode="vector_entry_point",
        model=lm,
        prompts="default-eval",
        max_new_tokens=64,
        reward=lambda p, r: [0.0] * len(r),
        **MODES[mode],
    )
    rng = np.random.default_rng(0)
    venv.reset(seed=0)
    for _ in range(10):
        venv.step((rng.random(num_envs) > 0.3).astype(np.int64))
    with HostReads() as reads:
        for _ in range(steps):
            venv.step((rng.random(num_envs) > 0.3).astype(np.int64))
    venv.close()
    return reads.total / steps, {k: v / steps for k, v in reads.by_name.most_common(4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["default", "tiny"])
    parser.add_argument("--num-envs", nargs="+", type=int, default=[8, 32])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument(
        "--static",
        action="store_true",
        help="the GPU's static batch (lm.static_batch) on this device: every row fed every step",
    )
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from agents.training import resolve_lm

    print("| model | num_envs | mode | host reads / step | the most frequent (per step) |")
    print("|---|---|---|---|---|")
    for name in args.models:
        lm = resolve_lm(name, "cpu")
        lm.static_batch = True if args.static else None
        for n in args.num_envs:
            for mode in MODES:
                total, top = count(lm, n, mode, args.steps)
                print(
                    f"| {name} | {n} | {mode} | {total:.1f} | "
                    + ", ".join(f"{k} {v:.1f}" for k, v in top.items())
                    + " |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
