"""What the bench passes around: its settings, one agent's results, the whole run's; progress; the machine.

:mod:`agents.eval.bench` runs the agents (through :mod:`agents.eval.runners`) and
:mod:`agents.eval.report` writes a :class:`BenchResult` out; both read these types from here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agents.value import VALUE_RULES
from proxy_env.config import EnvConfig
from proxy_env.errors import ConfigError

Progress = Callable[[int, int, str], None]  # (done, total, stage)
PROXY_ACTIONS = ("argmax", "sample")


@dataclass
class BenchConfig:
    """Settings of one benchmark run (``proxy-rlhf bench``)."""

    model: str = field(default="default", metadata={"help": "frozen LLM ('default', 'tiny', a hub id or a path)"})
    checkpoints: tuple[str, ...] = field(default=(), metadata={"help": "proxy checkpoint folders to evaluate"})
    finetuned: tuple[str, ...] = field(default=(), metadata={"help": "fine-tuned model folders (Hugging Face format)"})
    tensorboard: tuple[str, ...] = field(
        default=(),
        metadata={
            "help": "TensorBoard dirs of the checkpoints, in order (default: from the checkpoint's config or <checkpoint>-tb)"
        },
    )
    prompts: str = field(default="default-eval", metadata={"help": "prompt set or path"})
    num_prompts: int | None = field(default=None, metadata={"help": "first N prompts only (None: all)"})
    n: tuple[int, ...] = field(
        default=(2, 4, 8, 16), metadata={"help": "best-of-N sizes (empty: none, e.g. with frontier_from)"}
    )
    frontier_from: str | None = field(
        default=None,
        metadata={
            "help": (
                "results.csv of an earlier bench on the same prompts, seed and settings: its best-of-N rows join this table as the frontier "
                "(φ), checked by always-accept's rewards matching this run's"
            )
        },
    )
    bon_reference: int = field(default=16, metadata={"help": "extra samples per prompt for best-of-N's empirical KL"})
    max_new_tokens: int = field(default=32, metadata={"help": "response budget"})
    top_k: int = field(default=EnvConfig.top_k, metadata={"help": "pool top-k"})
    top_p: float = field(default=EnvConfig.top_p, metadata={"help": "pool top-p"})
    temperature: float = field(default=EnvConfig.temperature, metadata={"help": "sampling temperature"})
    random_reject_p: float = field(
        default=0.2, metadata={"help": "rejection probability of the random-reject baseline"}
    )
    proxy_actions: tuple[str, ...] = field(
        default=("argmax",),
        metadata={
            "help": (
                "how checkpoint proxies act, one row per mode: 'argmax' (as proxy-rlhf generate does) and/or 'sample' "
                "(the stochastic policy PPO trained)"
            )
        },
    )
    accept_powers: tuple[float, ...] = field(
        default=(),
        metadata={
            "help": (
                "also evaluate each checkpoint with its accept probability raised to each power λ (sampled actions): "
                "λ < 1 steers less (less KL), λ > 1 more; one trained proxy traced along the reward–KL curve"
            )
        },
    )
    value_heads: tuple[str, ...] = field(
        default=(),
        metadata={
            "help": (
                "value head folders (`proxy-rlhf value`): each is also evaluated as a decoding-time guide toward "
                "best-of-N's token-level rule, one row per N of value_n (sampled actions, nothing fitted)"
            )
        },
    )
    value_n: tuple[int, ...] = field(default=(2, 4, 8, 16), metadata={"help": "the N of each value-guide row"})
    value_rules: tuple[str, ...] = field(
        default=("distribution",),
        metadata={
            "help": (
                "how each value-guide row reads the head, one row per rule and N: 'distribution' (E[u^(N-1)], "
                "best-of-N's rule) and/or 'mean' (E[u]^(N-1): the mean value only, the ablation)"
            )
        },
    )
    reward: str = field(default="default", metadata={"help": "reward source ('default' = VADER)"})
    seed: int = field(default=0, metadata={"help": "seed of every sampler"})
    batch_size: int = field(default=16, metadata={"help": "prompts generated at once"})
    device: str | None = field(default=None, metadata={"help": "torch device (None: CUDA when available)"})
    out: str = field(default="runs/bench", metadata={"help": "output folder"})
    quick: bool = field(
        default=False,
        metadata={"help": "tiny model, 4 prompts, N in (2, 4), 8 tokens (fields left at their defaults): seconds"},
    )
    cache_dir: str | None = field(
        default=None,
        metadata={"help": "keep each agent's evaluation in this folder as soon as it ends (None: nowhere)"},
    )
    resume: bool = field(
        default=False,
        metadata={
            "help": "read the evaluations cache_dir holds for these same settings and agents instead of running them again"
        },
    )
    trust_checkpoint: bool = field(
        default=False,
        metadata={
            "help": (
                "also load SB3 proxy.zip checkpoints (format 1), whose loading unpickles Python objects and can run code"
            )
        },
    )

    def resolved(self) -> BenchConfig:
        """This config with ``quick`` applied and values validated."""
        from dataclasses import fields, replace

        cfg = self
        if self.quick:  # shrink only what was left at its default
            defaults = {f.name: f.default for f in fields(BenchConfig)}
            small: dict[str, Any] = {
                "model": "tiny",
                "num_prompts": 4,
                "n": (2, 4),
                "bon_reference": 4,
                "max_new_tokens": 8,
            }
            cfg = replace(self, **{k: v for k, v in small.items() if getattr(self, k) == defaults[k]})
        if any(not isinstance(x, (int, float)) or isinstance(x, bool) or not x >= 0 for x in cfg.accept_powers):
            raise ConfigError(
                f"accept_powers={cfg.accept_powers!r}: each λ must be a float >= 0 (--accept-powers 0.5 1 2)."
            )
        if cfg.value_heads and (not cfg.value_n or any(not isinstance(x, int) or x < 1 for x in cfg.value_n)):
            raise ConfigError(
                f"value_n={cfg.value_n!r}: each value guide's N must be an int >= 1 (--value-n 2 4 8 16)."
            )
        if cfg.value_heads and (not cfg.value_rules or any(r not in VALUE_RULES for r in cfg.value_rules)):
            raise ConfigError(
                f"value_rules={cfg.value_rules!r}: each must be one of {VALUE_RULES} (--value-rules distribution mean)."
            )
        if any((not isinstance(x, int)) or x < 1 for x in cfg.n):
            raise ConfigError(f"n={cfg.n!r}: best-of-N sizes must be ints >= 1.")
        bad = [m for m in cfg.proxy_actions if m not in PROXY_ACTIONS]
        if bad or not cfg.proxy_actions:
            raise ConfigError(
                f"proxy_actions={cfg.proxy_actions!r}: each must be one of {PROXY_ACTIONS}, e.g. ('argmax', 'sample')."
            )
        for name in ("bon_reference", "batch_size", "max_new_tokens"):
            value = getattr(cfg, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name}={value!r} must be an int >= 1 (--{name.replace('_', '-')}).")
        if cfg.resume and not cfg.cache_dir:
            raise ConfigError(
                "resume=True needs cache_dir=... (--cache-dir DIR): the folder the stopped run kept its evaluations in."
            )
        if len(cfg.tensorboard) > len(cfg.checkpoints):
            raise ConfigError(
                f"tensorboard={list(cfg.tensorboard)!r} names {len(cfg.tensorboard)} folders for "
                f"{len(cfg.checkpoints)} checkpoints; give at most one per checkpoint, in the same order."
            )
        if cfg.num_prompts is not None and cfg.num_prompts < 2:
            raise ConfigError(f"num_prompts={cfg.num_prompts}: confidence intervals need at least 2 prompts.")
        for path in (*cfg.checkpoints, *cfg.finetuned):
            if not Path(path).expanduser().is_dir():
                raise ConfigError(
                    f"{path!r} is not a folder; pass a checkpoint folder (--checkpoints) or a model folder (--finetuned)."
                )
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
    """What :func:`agents.eval.bench.run_bench` returns; :func:`agents.eval.report.write_outputs` writes it out."""

    config: BenchConfig
    agents: list[AgentEval]
    prompts: list[str]
    wall_s: float
    machine: str
    notes: list[str] = field(default_factory=list)


class Ticker:
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


def read_finetune_meta(path: str | Path) -> dict[str, Any]:
    """``finetune.json`` of a fine-tuned model folder (``wall_s``, ``trainable_params``, ``tensorboard_dir``), or {}."""
    meta = Path(path).expanduser() / "finetune.json"
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}
