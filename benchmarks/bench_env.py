"""Env throughput against the physical limit: a bare Hugging Face forward over a plain ``DynamicCache``.

    python benchmarks/bench_env.py                                  # tiny + default model, 1 / 8 / 32 envs
    python benchmarks/bench_env.py --models default --num-envs 8 32 --threads 1
    python benchmarks/bench_env.py --models tiny --memory-steps 20000 --num-envs 8

For each model and batch size, in one process and one run, side by side:

* **bare**: ``model(input_ids=(B, 1), past_key_values=DynamicCache)`` with hidden states, the
  one-token forward a decision needs, over a plain Hugging Face cache holding the env's current mean
  context (cropped back after each forward, so the context stays fixed). Its decisions/s is
  ``B / seconds per forward``: one token per row per forward, nothing else.
* **side by side**: the timed env steps and the bare forwards alternate in ``--rounds`` blocks
  (env block, then as many bare forwards at the env's mean context of that block), and each side's
  time is summed over its blocks, so drift of the shared machine's speed lands on both sides.
* **env**, in each engine mode, with a random proxy that rejects 30% of the candidates it is asked
  about: decisions/s counts real decisions only (a forced candidate offered with ``forced_steps`` is
  a step, not a decision), ``forwards/step`` the batched LLM calls per env step (prefills included),
  ``row-fwd/decision`` the rows fed through the LLM per decision.

The row-scaling table times the bare forward over fewer rows of the largest batch: it bounds what a
mode in which a rejection needs no forward can reach (a step forwards only the rows that accepted).
For each ``prefix`` mode at the largest batch, the MDP's ceiling follows from the rows that mode
actually fed per step (accepted and forced candidates, and new episodes' prefills, each counted as one
row): a step that cost no more than a bare forward of that many rows.

The memory run steps one env for ``--memory-steps`` steps and reports the resident set size at step
2,000 and at the end.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import proxy_env
from proxy_env.engine.lm import FrozenLM
from proxy_env.engine.tiny import tiny_lm

MODES: dict[str, dict[str, Any]] = {
    "candidate": {},
    "candidate+forced_steps": {"forced_steps": True},
    "prefix": {"observation": "prefix"},
    "prefix+forced_steps": {"observation": "prefix", "forced_steps": True},
}


@dataclass
class Args:
    models: list[str] = field(default_factory=lambda: ["tiny", "default"])  # which LLMs
    num_envs: list[int] = field(default_factory=lambda: [1, 8, 32])  # batch sizes
    modes: list[str] = field(default_factory=lambda: list(MODES))  # engine modes
    steps: int = 60  # timed env steps per configuration (as many bare forwards)
    rounds: int = 4  # blocks the env steps and the bare forwards alternate in
    warmup: int = 10  # untimed env steps first
    max_new_tokens: int = 64  # response budget (the 64-token responses)
    reject: float = 0.3  # the random proxy's rejection probability
    memory_steps: int = 20000  # steps of the memory run; 0 skips it
    memory_model: str = "tiny"  # LLM of the memory run
    threads: int = 1  # torch CPU threads


def _rss_mb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _sync(lm: FrozenLM) -> None:
    if lm.device.type == "cuda":
        torch.cuda.synchronize()


def _venv(lm: FrozenLM, num_envs: int, max_new_tokens: int, **kwargs: Any) -> Any:
    return gym.make_vec(
        proxy_env.ENV_ID,
        num_envs=num_envs,
        vectorization_mode="vector_entry_point",
        model=lm,
        prompts="default-eval",
        max_new_tokens=max_new_tokens,
        reward=lambda p, r: [0.0] * len(r),
        **kwargs,
    )


class Bare:
    """One-token forwards over a plain ``DynamicCache``; each block sets the context (columns per row) it runs at."""

    @torch.no_grad()
    def __init__(self, lm: FrozenLM, num_envs: int, max_context: int):
        from transformers import DynamicCache

        self.lm, self.num_envs = lm, num_envs
        ids = torch.randint(100, 10_000, (num_envs, max_context), generator=torch.Generator().manual_seed(0)).to(
            lm.device
        )
        self.cache = DynamicCache()
        self.kwargs = lm.cache_kwargs(self.cache)
        lm.model(input_ids=ids, use_cache=True, **{k: v for k, v in self.kwargs.items() if k != "logits_to_keep"})
        self.full = [(layer.keys, layer.values) for layer in self.cache.layers]
        self.token = torch.full((num_envs, 1), 42, device=lm.device)

    def _crop(
        self, context: int
    ) -> None:  # views of the prefilled columns: the next update concatenates, as generate's does
        for layer, (keys, values) in zip(self.cache.layers, self.full):
            layer.keys, layer.values = keys[:, :, :context], values[:, :, :context]

    @torch.no_grad()
    def seconds(self, context: int, forwards: int) -> float:
        """Wall time of ``forwards`` one-token forwards at ``context`` columns (after one untimed forward)."""
        context = max(1, min(context, self.full[0][0].shape[2]))
        mask = torch.ones(self.num_envs, context + 1, dtype=torch.long, device=self.lm.device)
        position = torch.full((self.num_envs, 1), context, device=self.lm.device)
        for i in range(forwards + 1):
            if i == 1:
                _sync(self.lm)
                start = time.perf_counter()
            self._crop(context)
            self.lm.model(
                input_ids=self.token,
                attention_mask=mask,
                position_ids=position,
                use_cache=True,
                output_hidden_states=True,
                **self.kwargs,
            )
        _sync(self.lm)
        return time.perf_counter() - start


def side_by_side(lm: FrozenLM, num_envs: int, mode: str, args: Args) -> dict[str, float]:
    """The env in ``mode`` and the bare forward, alternating in ``args.rounds`` blocks of ``args.steps / rounds`` steps."""
    venv = _venv(lm, num_envs, args.max_new_tokens, **MODES[mode])
    env = venv.unwrapped
    _, info = venv.reset(seed=0)
    rng = np.random.default_rng(0)
    act = lambda: (rng.random(num_envs) >= args.reject).astype(np.int64)  # noqa: E731
    for _ in range(args.warmup):
        _, _, _, _, info = venv.step(act())
    cache = env.decoder.cache
    bare = Bare(lm, num_envs, max(cache.mask.shape[1], 8) + args.max_new_tokens)
    forwards, rows = cache.forwards, cache.row_forwards
    decisions, context, env_s, bare_s, bare_forwards = 0, [], 0.0, 0.0, 0
    block = max(1, args.steps // args.rounds)
    for _ in range(args.rounds):
        block_context = []
        _sync(lm)
        start = time.perf_counter()
        for _ in range(block):
            decisions += int((~np.asarray(info["forced"])).sum())  # this step's candidates that are real decisions
            _, _, _, _, info = venv.step(act())
            block_context.append(float(cache.mask.sum(1).float().mean()))
        _sync(lm)
        env_s += time.perf_counter() - start
        context += block_context
        bare_s += bare.seconds(round(np.mean(block_context)), block)
        bare_forwards += block
    steps = block * args.rounds
    out = {
        "decisions/s": decisions / env_s,
        "bare decisions/s": num_envs * bare_forwards / bare_s,
        "steps/s": num_envs * steps / env_s,
        "forwards/step": (cache.forwards - forwards) / steps,
        "row-fwd/decision": (cache.row_forwards - rows) / decisions,
        "context": float(np.mean(context)),
    }
    venv.close()
    return out


ROW_SCALING_CONTEXT = 60  # columns per row in the row-scaling table (the env's mean context at 64-token responses)


def _accepting(num_envs: int, reject: float) -> int:
    """Rows of ``num_envs`` that accept at rejection rate ``reject`` (at least one)."""
    return max(1, round((1 - reject) * num_envs))


def row_scaling(
    lm: FrozenLM, num_envs: int, reject: float, context: int = ROW_SCALING_CONTEXT, forwards: int = 10
) -> list[tuple[int, float]]:
    """Seconds per bare one-token forward of n of ``num_envs`` rows (n = 1, B/4, B/2, the accepting share, B).

    The ceiling of a mode in which a rejection costs no forward: a step forwards only the rows that
    accepted, so at best it makes ``B`` decisions in the time of a forward of ``(1 - reject)·B`` rows.
    """
    sizes = sorted({1, max(1, num_envs // 4), max(1, num_envs // 2), _accepting(num_envs, reject), num_envs})
    return [(n, Bare(lm, n, context + 1).seconds(context, forwards) / forwards) for n in sizes]


def mdp_ceiling(
    lm: FrozenLM,
    r: dict[str, float],
    num_envs: int,
    full: float,
    context: int = ROW_SCALING_CONTEXT,
    forwards: int = 10,
) -> tuple[float, float, float]:
    """(decisions per step, rows fed per step, ceiling) of a measured run ``r`` of ``side_by_side``.

    The ceiling is the env/bare ratio of a step that costs exactly a bare one-token forward of the
    rows it fed (``full``: seconds of the bare forward of all ``num_envs`` rows; more rows than
    ``num_envs``, from chained forwards, are charged ``full`` pro rata): forced steps are steps
    without a decision and prefills are rows the bare forward never feeds, so they lower it.
    """
    decisions = r["decisions/s"] / r["steps/s"] * num_envs
    rows = r["row-fwd/decision"] * decisions
    if rows > num_envs:  # chained forwards: charged pro rata, which a forward of fewer rows never beats on a CPU
        seconds = full * rows / num_envs
    else:
        seconds = Bare(lm, max(1, round(rows)), context + 1).seconds(context, forwards) / forwards
    return decisions, rows, decisions / num_envs * full / seconds


def memory_run(lm: FrozenLM, steps: int) -> tuple[float, float, int, int]:
    venv = _venv(lm, 8, 32, top_p=1.0)
    venv.reset(seed=0)
    rng = np.random.default_rng(0)
    rss_2k = len_2k = 0.0
    for t in range(1, steps + 1):
        venv.step((rng.random(8) > 0.3).astype(np.int64))
        if t == 2000:
            rss_2k, len_2k = _rss_mb(), venv.unwrapped.decoder.cache.length
    return rss_2k, _rss_mb(), int(len_2k), venv.unwrapped.decoder.cache.length


def _load(name: str, device: str) -> FrozenLM:
    return tiny_lm(device=device) if name == "tiny" else FrozenLM(name, device=device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=Args().models, help="LLMs: 'tiny', 'default', hub ids or paths")
    parser.add_argument(
        "--num-envs", nargs="+", type=int, default=Args().num_envs, help="batch sizes, e.g. --num-envs 1 8 32"
    )
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=Args().modes, help="engine modes")
    for name in ("steps", "rounds", "warmup", "max_new_tokens", "memory_steps", "threads"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(Args, name))
    parser.add_argument("--reject", type=float, default=Args.reject, help="the random proxy's rejection probability")
    parser.add_argument("--memory-model", default=Args.memory_model)
    args = Args(**vars(parser.parse_args()))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(
        f"device: {torch.cuda.get_device_name() if device == 'cuda' else f'CPU, {args.threads} torch threads'}; "
        f"torch {torch.__version__}; {args.max_new_tokens}-token responses; random proxy rejecting {args.reject:.0%}"
    )
    print(
        "| model | num_envs | mode | env decisions/s | bare decisions/s | env / bare | env steps/s | forwards/step "
        "| row-fwd/decision | mean context |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    loaded: dict[str, FrozenLM] = {}
    runs: dict[tuple[str, int, str], dict[str, float]] = {}
    for name in args.models:
        lm = loaded[name] = _load(name, device)
        for n in args.num_envs:
            for mode in args.modes:
                r = runs[name, n, mode] = side_by_side(lm, n, mode, args)
                bare = r["bare decisions/s"]
                print(
                    f"| {name} | {n} | {mode} | {r['decisions/s']:,.1f} | {bare:,.1f} | {r['decisions/s'] / bare:.2f} | "
                    f"{r['steps/s']:,.1f} | {r['forwards/step']:.2f} | {r['row-fwd/decision']:.2f} | {r['context']:.0f} |",
                    flush=True,
                )
    for name, lm in loaded.items():
        big = max(args.num_envs)
        times = row_scaling(lm, big, args.reject)
        full = dict(times)[big]
        print(
            f"\n{name} model, bare one-token forward of n of {big} rows at {ROW_SCALING_CONTEXT} columns of context:\n"
        )
        print("| rows | ms / forward | rows/s | time vs the full batch |\n|---|---|---|---|")
        for n, t in times:
            print(f"| {n} | {t * 1e3:.1f} | {n / t:,.1f} | {t / full:.2f} |")
        accepting = _accepting(big, args.reject)
        print(
            f"\nceiling of a step that forwards only the {accepting} accepting rows of {big} (no prefills, no forced "
            f"steps): {full / dict(times)[accepting]:.2f}x the bare forward's decisions/s",
            flush=True,
        )
        for mode in (m for m in args.modes if m.startswith("prefix")):
            r = runs[name, big, mode]
            decisions, rows, ceiling = mdp_ceiling(lm, r, big, full)
            print(
                f"{mode} at {big} envs fed {rows:.1f} rows per step for {decisions:.1f} decisions: a step costing a bare "
                f"forward of those rows would reach {ceiling:.2f}x (measured: "
                f"{r['decisions/s'] / r['bare decisions/s']:.2f}x)",
                flush=True,
            )
    if args.memory_steps:
        memory_lm = loaded.get(args.memory_model) or _load(args.memory_model, device)
        rss_2k, rss_end, len_2k, len_end = memory_run(memory_lm, args.memory_steps)
        print(
            f"\nmemory ({args.memory_model} model, 8 envs, top_p=1.0): RSS at step 2,000 = {rss_2k:.0f} MB, at step "
            f"{args.memory_steps:,} = {rss_end:.0f} MB ({(rss_end / rss_2k - 1) * 100:+.1f}%); cache columns {len_2k} -> {len_end}"
        )


if __name__ == "__main__":
    main()
