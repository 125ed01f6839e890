"""``proxy-rlhf bench``: every agent on the same held-out prompts and seeds; the reward–KL frontier.

Agents: always-accept (the unsteered LLM), random-reject, best-of-N for each N, trained proxy
checkpoints, and fully fine-tuned LLMs (plain Hugging Face folders, e.g. from ``agents.finetune``).
Each generates one response per prompt with the same pool (top-k, top-p, temperature), budget and
seeds; :func:`run_bench` returns per-agent metrics (:mod:`agents.bench_report` writes them out).

KL definitions (nats per response): proxies and baselines, the exact ``Σ_i KL(π_i || q_i)`` of the
steered sampler from the unsteered one (:mod:`agents.kl`); best-of-N, the estimate
``log N + (N-1) log F̂`` and the bound ``log N - (N-1)/N`` (:mod:`agents.metrics`); fine-tuned
models, ``Σ_i KL(π_ft,i || p_i)`` against the frozen LLM's untruncated distribution (footnoted).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from proxy_env.errors import ConfigError

Progress = Callable[[int, int, str], None]  # (done, total, stage)
PROXY_ACTIONS = ("argmax", "sample")


@dataclass
class BenchConfig:
    """Settings of one benchmark run (``proxy-rlhf bench``)."""

    model: str = field(default="default", metadata={"help": "frozen LLM ('default', 'tiny', a hub id or a path)"})
    checkpoints: tuple[str, ...] = field(default=(), metadata={"help": "proxy checkpoint folders to evaluate"})
    finetuned: tuple[str, ...] = field(default=(), metadata={"help": "fine-tuned model folders (Hugging Face format)"})
    tensorboard: tuple[str, ...] = field(default=(), metadata={"help": "TensorBoard dirs of the checkpoints, in order (default: from the checkpoint's config or <checkpoint>-tb)"})
    prompts: str = field(default="default-eval", metadata={"help": "prompt set or path"})
    num_prompts: int | None = field(default=None, metadata={"help": "first N prompts only (None: all)"})
    n: tuple[int, ...] = field(default=(2, 4, 8, 16), metadata={"help": "best-of-N sizes"})
    bon_reference: int = field(default=16, metadata={"help": "extra samples per prompt for best-of-N's empirical KL"})
    max_new_tokens: int = field(default=32, metadata={"help": "response budget"})
    top_k: int = field(default=50, metadata={"help": "pool top-k"})
    top_p: float = field(default=0.95, metadata={"help": "pool top-p"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature"})
    random_reject_p: float = field(default=0.2, metadata={"help": "rejection probability of the random-reject baseline"})
    proxy_actions: tuple[str, ...] = field(default=("argmax",), metadata={"help": (
        "how checkpoint proxies act, one row per mode: 'argmax' (as proxy-rlhf generate does) and/or 'sample' "
        "(the stochastic policy PPO trained)")})
    accept_powers: tuple[float, ...] = field(default=(), metadata={"help": (
        "also evaluate each checkpoint with its accept probability raised to each power λ (sampled actions): "
        "λ < 1 steers less (less KL), λ > 1 more; one trained proxy traced along the reward–KL curve")})
    reward: str = field(default="default", metadata={"help": "reward source ('default' = VADER)"})
    seed: int = field(default=0, metadata={"help": "seed of every sampler"})
    batch_size: int = field(default=16, metadata={"help": "prompts generated at once"})
    device: str | None = field(default=None, metadata={"help": "torch device (None: CUDA when available)"})
    out: str = field(default="runs/bench", metadata={"help": "output folder"})
    quick: bool = field(default=False, metadata={"help": "tiny model, 4 prompts, N in (2, 4), 8 tokens (fields left at their defaults): seconds"})
    trust_checkpoint: bool = field(default=False, metadata={"help": (
        "also load SB3 proxy.zip checkpoints (format 1), whose loading unpickles Python objects and can run code")})

    def resolved(self) -> BenchConfig:
        """This config with ``quick`` applied and values validated."""
        from dataclasses import fields, replace

        cfg = self
        if self.quick:  # shrink only what was left at its default
            defaults = {f.name: f.default for f in fields(BenchConfig)}
            small = {"model": "tiny", "num_prompts": 4, "n": (2, 4), "bon_reference": 4, "max_new_tokens": 8}
            cfg = replace(self, **{k: v for k, v in small.items() if getattr(self, k) == defaults[k]})
        if any(not isinstance(x, (int, float)) or isinstance(x, bool) or not x >= 0 for x in cfg.accept_powers):
            raise ConfigError(f"accept_powers={cfg.accept_powers!r}: each λ must be a float >= 0 (--accept-powers 0.5 1 2).")
        if any((not isinstance(x, int)) or x < 1 for x in cfg.n):
            raise ConfigError(f"n={cfg.n!r}: best-of-N sizes must be ints >= 1.")
        bad = [m for m in cfg.proxy_actions if m not in PROXY_ACTIONS]
        if bad or not cfg.proxy_actions:
            raise ConfigError(f"proxy_actions={cfg.proxy_actions!r}: each must be one of {PROXY_ACTIONS}, e.g. ('argmax', 'sample').")
        for name in ("bon_reference", "batch_size", "max_new_tokens"):
            value = getattr(cfg, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name}={value!r} must be an int >= 1 (--{name.replace('_', '-')}).")
        if len(cfg.tensorboard) > len(cfg.checkpoints):
            raise ConfigError(f"tensorboard={list(cfg.tensorboard)!r} names {len(cfg.tensorboard)} folders for "
                              f"{len(cfg.checkpoints)} checkpoints; give at most one per checkpoint, in the same order.")
        if cfg.num_prompts is not None and cfg.num_prompts < 2:
            raise ConfigError(f"num_prompts={cfg.num_prompts}: confidence intervals need at least 2 prompts.")
        for path in (*cfg.checkpoints, *cfg.finetuned):
            if not Path(path).expanduser().is_dir():
                raise ConfigError(f"{path!r} is not a folder; pass a checkpoint folder (--checkpoints) or a model folder (--finetuned).")
        return cfg


@dataclass
class AgentEval:
    """One agent's per-prompt results."""

    name: str
    kind: str  # "baseline", "best-of-n", "proxy", "finetune"
    rewards: np.ndarray
    token_ids: list[list[int]]
    rejection_rates: np.ndarray
    nll: np.ndarray
    kl: np.ndarray
    kl_untruncated: np.ndarray
    forwards: np.ndarray
    wall_s: float  # generation + reward, all responses
    trainable_params: int = 0
    kl_method: str = "exact"
    kl_bound: float = float("nan")
    train_wall_s: float = float("nan")
    tensorboard_dir: str | None = None
    texts: list[str] = field(default_factory=list)
    curve: str | None = None  # fine-tuned models: the line the figure draws this point on (e.g. "grpo")
    point: str | None = None  # and its label there (e.g. "β=0.1")


@dataclass
class BenchResult:
    """What :func:`run_bench` returns; :func:`agents.bench_report.write_outputs` writes it out."""

    config: BenchConfig
    agents: list[AgentEval]
    prompts: list[str]
    wall_s: float
    machine: str
    notes: list[str] = field(default_factory=list)


def run_bench(cfg: BenchConfig, *, extra_agents: dict[str, Any] | None = None, lm: Any = None,
              progress: Progress | None = None) -> BenchResult:
    """Evaluate every agent of ``cfg`` (plus ``extra_agents``, objects with ``predict``) on the same prompts.

    Args:
        cfg: the benchmark settings.
        extra_agents: more proxies by name (SB3 models or anything with ``predict``; an
            ``accept_prob(obs)`` method makes their exact KL computable).
        lm: the frozen LLM (a :class:`~proxy_env.lm.FrozenLM`), default: loaded from ``cfg.model``.
        progress: called as ``progress(done, total, stage)`` as prompts are processed.
    """
    from agents.baselines import AlwaysAccept, PowerProxy, RandomReject
    from agents.bench_agents import eval_best_of_n, eval_finetuned, eval_proxy, load_proxy
    from agents.train import resolve_lm
    from proxy_env.prompts import load_prompts
    from proxy_env.rewards import resolve_reward

    cfg = cfg.resolved()
    start = time.perf_counter()
    prompts = load_prompts(cfg.prompts)
    if cfg.num_prompts is not None and cfg.num_prompts > len(prompts):
        raise ConfigError(f"num_prompts={cfg.num_prompts} but prompts={cfg.prompts!r} holds {len(prompts)}; "
                          f"pass --num-prompts {len(prompts)} or fewer (or omit it for all).")
    prompts = prompts[: cfg.num_prompts]
    lm = resolve_lm(cfg.model if lm is None else lm, cfg.device)
    reward_fn = resolve_reward(cfg.reward, device=lm.device)
    notes: list[str] = []
    # (name, agent, its env settings, TensorBoard dir, act by argmax)
    proxies: list[tuple[str, Any, dict[str, Any], str | None, bool]] = [
        ("always-accept", AlwaysAccept(), {}, None, True),
        (f"random-reject p={cfg.random_reject_p:g}", RandomReject(cfg.random_reject_p, seed=cfg.seed), {}, None, True),
    ]
    trained = [load_proxy(path, lm, cfg, cfg.tensorboard[i] if i < len(cfg.tensorboard) else None, notes)
               for i, path in enumerate(cfg.checkpoints)]
    trained += [(name, agent, {}, None) for name, agent in (extra_agents or {}).items()]
    for mode in cfg.proxy_actions:
        suffix = f" [{mode}]" if len(cfg.proxy_actions) > 1 else ""
        proxies += [(name + suffix, agent, env_kw, tb, mode == "argmax") for name, agent, env_kw, tb in trained]
    for power in cfg.accept_powers:
        proxies += [(f"{name} [λ={power:g}]", PowerProxy(agent, power, seed=cfg.seed), env_kw, tb, False)
                    for name, agent, env_kw, tb in trained]
    units = len(prompts) * (2 * len(proxies) + 2 + 2 * len(cfg.finetuned))
    tick = _Ticker(progress, units)
    evals = [eval_proxy(lm, name, agent, env_kw, tb, prompts, reward_fn, cfg, tick, deterministic=argmax)
             for name, agent, env_kw, tb, argmax in proxies]
    for name, *_ in proxies[:2]:
        next(e for e in evals if e.name == name).kind = "baseline"
    evals[2:2] = eval_best_of_n(lm, prompts, reward_fn, cfg, tick)
    for path in cfg.finetuned:
        evals.append(eval_finetuned(lm, path, prompts, reward_fn, cfg, tick))
    return BenchResult(cfg, evals, prompts, time.perf_counter() - start, machine_description(lm), notes)


class _Ticker:
    """Counts processed prompts for the progress callback."""

    def __init__(self, progress: Progress | None, total: int) -> None:
        self.progress, self.total, self.done = progress, total, 0

    def __call__(self, n: int, stage: str) -> None:
        self.done += n
        if self.progress is not None:
            self.progress(min(self.done, self.total), self.total, stage)


def machine_description(lm: Any) -> str:
    """CPU model and cores, or the GPU, and the torch version."""
    import os
    import platform

    import torch

    if lm.device.type == "cuda":
        hw = torch.cuda.get_device_name(lm.device)
    else:
        cpu = platform.processor() or platform.machine()
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        hw = f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    return f"{hw}; torch {torch.__version__}; {lm.device.type}"


# ---------------------------------------------------------------------------- CLI
def _bench(args: Any) -> int:
    import shlex
    import sys

    from tqdm import tqdm

    from agents.bench_report import write_outputs

    cfg = BenchConfig(
        model=args.model, checkpoints=tuple(args.checkpoints), finetuned=tuple(args.finetuned),
        tensorboard=tuple(args.tensorboard), prompts=args.prompts, num_prompts=args.num_prompts, n=tuple(args.n),
        bon_reference=args.bon_reference, max_new_tokens=args.max_new_tokens, seed=args.seed, batch_size=args.batch_size,
        out=args.out, quick=args.quick, proxy_actions=("sample",) if args.sample else tuple(args.proxy_actions),
        random_reject_p=args.random_reject_p, accept_powers=tuple(args.accept_powers),
        trust_checkpoint=args.trust_checkpoint,
        device=args.device,
    )
    bar = tqdm(total=1, unit="prompt", desc="bench")

    def progress(done: int, total: int, stage: str) -> None:
        bar.total = total
        bar.n = done
        bar.set_description(stage)
        bar.refresh()

    try:
        result = run_bench(cfg, progress=progress)
    finally:
        bar.close()
    command = "proxy-rlhf " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else "proxy-rlhf bench"
    files = write_outputs(result, cfg.out, command=command)
    print((Path(files[0]).read_text(encoding="utf-8")))
    print("wrote " + ", ".join(str(f) for f in files))
    return 0


def add_subcommands(sub: Any) -> None:
    """Add ``bench`` to the ``proxy-rlhf`` parser (heavy imports stay in the handler)."""
    d = BenchConfig()
    p = sub.add_parser("bench", help="benchmark agents on held-out prompts: table, CSV, reward-KL plot")
    p.add_argument("--checkpoints", nargs="*", default=[], metavar="DIR", help="proxy checkpoint folders")
    p.add_argument("--finetuned", nargs="*", default=[], metavar="DIR", help="fine-tuned model folders (Hugging Face format)")
    p.add_argument("--tensorboard", nargs="*", default=[], metavar="DIR", help="TensorBoard dirs of the checkpoints, in order")
    p.add_argument("--model", default=d.model, help="frozen LLM ('default', 'tiny', a hub id or a path)")
    p.add_argument("--prompts", default=d.prompts, help="prompt set or path (default: %(default)s)")
    p.add_argument("--num-prompts", type=int, default=None, help="first N prompts only (default: all)")
    p.add_argument("--n", type=int, nargs="+", default=list(d.n), help="best-of-N sizes (default: %(default)s)")
    p.add_argument("--bon-reference", type=int, default=d.bon_reference, help="reference samples per prompt for best-of-N's KL estimate")
    p.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens, help="response budget (default: %(default)s)")
    p.add_argument("--random-reject-p", type=float, default=d.random_reject_p, help="random-reject baseline's rejection probability")
    p.add_argument("--proxy-actions", nargs="+", choices=PROXY_ACTIONS, default=list(d.proxy_actions),
                   help="how checkpoint proxies act, one table row per mode (default: %(default)s)")
    p.add_argument("--sample", action="store_true", help="shorthand for --proxy-actions sample")
    p.add_argument("--accept-powers", type=float, nargs="*", default=[], metavar="LAMBDA",
                   help="also one row per checkpoint and λ with the accept probability raised to λ (sampled actions)")
    p.add_argument("--seed", type=int, default=d.seed, help="seed (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="prompts generated at once (default: %(default)s)")
    p.add_argument("--device", default=None, help="torch device (default: CUDA when available)")
    p.add_argument("--out", default=d.out, help="output folder (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="tiny model, 4 prompts, small N: a smoke run in seconds")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="also load SB3 proxy.zip checkpoints, whose loading unpickles Python objects and can run code")
    p.set_defaults(func=_bench)


def read_finetune_meta(path: str | Path) -> dict[str, Any]:
    """``finetune.json`` of a fine-tuned model folder (``wall_s``, ``trainable_params``, ``tensorboard_dir``), or {}."""
    meta = Path(path).expanduser() / "finetune.json"
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}
