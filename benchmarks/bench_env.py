"""Env throughput vs the bare batched forward and a naive re-encoding reference; memory over long runs.

    python benchmarks/bench_env.py                      # tiny + default model, num_envs 1, 8, 32
    python benchmarks/bench_env.py --models tiny --memory-steps 20000

Decisions per second of the env (random proxy, 30% rejections) beside (a) the bare rate of the
batched one-token forward the step needs, at the same batch and context length, and (b) a naive
reference that re-encodes the whole sequence (prompt + response so far) at every decision.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch

import proxy_env
from proxy_env.lm import FrozenLM
from proxy_env.tiny import tiny_lm


@dataclass
class Args:
    models: list[str] = field(default_factory=lambda: ["tiny", "default"])  # which LLMs
    num_envs: list[int] = field(default_factory=lambda: [1, 8, 32])  # batch sizes
    steps: int = 60  # timed env steps per configuration
    max_new_tokens: int = 64  # response budget (the 64-token responses)
    memory_steps: int = 20000  # steps of the memory run (tiny model, 8 envs); 0 skips it
    threads: int = 2  # torch CPU threads


def _rss_mb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _sync(lm: FrozenLM) -> None:
    if lm.device.type == "cuda":
        torch.cuda.synchronize()


def env_rate(lm: FrozenLM, num_envs: int, args: Args) -> tuple[float, float, float]:
    venv = gym.make_vec(proxy_env.ENV_ID, num_envs=num_envs, vectorization_mode="vector_entry_point", model=lm,
                        prompts="default-eval", max_new_tokens=args.max_new_tokens, reward=lambda p, r: [0.0] * len(r))
    venv.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(10):
        venv.step((rng.random(num_envs) > 0.3).astype(np.int64))
    context, forwards = [], 0
    step_fn = venv.unwrapped.cache.step

    def counting(*a, **k):
        nonlocal forwards
        forwards += 1
        return step_fn(*a, **k)

    venv.unwrapped.cache.step = counting
    _sync(lm)
    start = time.perf_counter()
    for _ in range(args.steps):
        venv.step((rng.random(num_envs) > 0.3).astype(np.int64))
        context.append(int(venv.unwrapped.cache.mask.sum(1).float().mean()))
    _sync(lm)
    elapsed = time.perf_counter() - start
    venv.close()
    return num_envs * args.steps / elapsed, float(np.mean(context)), forwards / args.steps


def bare_rate(lm: FrozenLM, num_envs: int, context: int, steps: int) -> float:
    """Batched one-token forwards over a cache of ``context`` live tokens, nothing else."""
    cache = lm.new_cache(num_envs)
    prompt = list(range(100, 100 + context))
    cache.reset_rows(torch.ones(num_envs, dtype=torch.bool), [prompt] * num_envs)
    active = torch.ones(num_envs, dtype=torch.bool, device=lm.device)
    token = torch.full((num_envs,), 42, device=lm.device)
    for i in range(steps + 5):
        if i == 5:
            _sync(lm)
            start = time.perf_counter()
        cache.step(token, active)
        cache.discard(active)  # keep the context length fixed
    _sync(lm)
    return num_envs * steps / (time.perf_counter() - start)


@torch.no_grad()
def naive_rate(lm: FrozenLM, num_envs: int, context: int, steps: int) -> float:
    """Re-encode the whole (B, context) sequence at every decision, as a cache-less env would."""
    ids = torch.full((num_envs, context), 42, device=lm.device)
    steps = max(3, steps // 4)
    _sync(lm)
    start = time.perf_counter()
    for _ in range(steps):
        lm.model(input_ids=ids, output_hidden_states=True, use_cache=False)
    _sync(lm)
    return num_envs * steps / (time.perf_counter() - start)


def memory_run(lm: FrozenLM, steps: int) -> tuple[float, float, int, int]:
    venv = gym.make_vec(proxy_env.ENV_ID, num_envs=8, vectorization_mode="vector_entry_point", model=lm,
                        prompts="default-eval", max_new_tokens=32, top_p=1.0, reward="default")
    venv.reset(seed=0)
    rng = np.random.default_rng(0)
    rss_2k = len_2k = 0.0
    for t in range(1, steps + 1):
        venv.step((rng.random(8) > 0.3).astype(np.int64))
        if t == 2000:
            rss_2k, len_2k = _rss_mb(), venv.unwrapped.cache.length
    return rss_2k, _rss_mb(), int(len_2k), venv.unwrapped.cache.length


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="tiny,default")
    parser.add_argument("--num-envs", default="1,8,32")
    parser.add_argument("--steps", type=int, default=Args.steps)
    parser.add_argument("--max-new-tokens", type=int, default=Args.max_new_tokens)
    parser.add_argument("--memory-steps", type=int, default=Args.memory_steps)
    parser.add_argument("--threads", type=int, default=Args.threads)
    ns = parser.parse_args()
    args = Args([m for m in ns.models.split(",") if m], [int(n) for n in ns.num_envs.split(",")], ns.steps,
                ns.max_new_tokens, ns.memory_steps, ns.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"device: {torch.cuda.get_device_name() if device == 'cuda' else f'CPU, {args.threads} threads'}; torch {torch.__version__}")
    print("| model | num_envs | env decisions/s | bare forward tok/s | env / bare | naive re-encode dec/s | env / naive | mean context | forwards/step |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.models:
        lm = tiny_lm(device=device) if name == "tiny" else FrozenLM(name, device=device)
        for n in args.num_envs:
            rate, context, forwards = env_rate(lm, n, args)
            bare = bare_rate(lm, n, int(context), args.steps)
            naive = naive_rate(lm, n, int(context), args.steps)
            print(f"| {name} | {n} | {rate:,.0f} | {bare:,.0f} | {rate / bare:.2f} | {naive:,.0f} | {rate / naive:.1f} | {context:.0f} | {forwards:.2f} |", flush=True)
    if args.memory_steps:
        rss_2k, rss_end, len_2k, len_end = memory_run(tiny_lm(device=device), args.memory_steps)
        print(f"\nmemory (tiny model, 8 envs, top_p=1.0, VADER reward): RSS at step 2,000 = {rss_2k:.0f} MB, at step {args.memory_steps:,} = "
              f"{rss_end:.0f} MB ({(rss_end / rss_2k - 1) * 100:+.1f}%); cache columns {len_2k} -> {len_end}")


if __name__ == "__main__":
    main()
