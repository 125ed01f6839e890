"""A Bradley–Terry reward model: a small head over a frozen encoder, trained on preference pairs.

``P(chosen > rejected) = σ(r(chosen) − r(rejected))``; the loss is ``−log σ(r_c − r_r)``. The encoder
(:mod:`proxy_env.feedback.encoders`) embeds every distinct text once; only the head trains, on a
split by prompt (train / validation for early stopping / test for the reported figures).

A trained model is a plain reward callable ``(prompts, responses) -> list[float]`` and saves as a
folder: ``model.safetensors`` (the head) + ``reward_model.json`` (encoder, head, normalisation,
metrics, format version). ``reward="path/to/folder"`` in the env loads it.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from proxy_env.assets import replace_dir
from proxy_env.errors import ConfigError, DataError
from proxy_env.feedback.encoders import Encoder, encoder_from_spec
from proxy_env.feedback.records import PreferencePair

CONFIG_NAME = "reward_model.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT, FORMAT_VERSION = "proxy-rlhf-bt-reward-model", 3  # 2: the head standardises its inputs; 3: per-token heads
READ_VERSIONS = (2, 3)  # pooled heads are still written as version 2, so older readers load them


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class RMTrainConfig:
    """How the Bradley–Terry head trains; each field is a ``proxy-rlhf rm train`` flag."""

    hidden: int = field(default=128, metadata=_help("width of the head's hidden layer (0: a linear head)"))
    learning_rate: float = field(default=1e-3, metadata=_help("AdamW learning rate"))
    weight_decay: float = field(default=1e-2, metadata=_help("AdamW weight decay"))
    epochs: int = field(default=300, metadata=_help("maximum passes over the training pairs"))
    batch_size: int = field(default=256, metadata=_help("pairs per optimiser step"))
    patience: int = field(default=20, metadata=_help("stop after this many epochs without a better validation loss"))
    test_fraction: float = field(default=0.2, metadata=_help("share of prompts held out for the reported figures"))
    val_fraction: float = field(default=0.1, metadata=_help("share of prompts held out for early stopping"))
    margin_threshold: float = field(default=0.3, metadata=_help("also report test accuracy on pairs with margin >= this"))
    normalize: bool = field(default=True, metadata=_help("standardise rewards by the training responses' mean and std"))
    balance_length: bool = field(default=False, metadata=_help("balance pairs whose chosen response is longer/shorter, per length bucket"))
    length_bucket_words: int = field(default=4, metadata=_help("width in words of a length-difference bucket (balance_length)"))
    seed: int = field(default=0, metadata=_help("seed of the split, the init and the batches"))

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first invalid field and its value."""
        for name in ("epochs", "batch_size", "patience", "length_bucket_words"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name}={value!r} must be an int >= 1.")
        if isinstance(self.hidden, bool) or not isinstance(self.hidden, int) or self.hidden < 0:
            raise ConfigError(f"hidden={self.hidden!r} must be an int >= 0 (0: a linear head).")
        if not _number(self.learning_rate) or not self.learning_rate > 0:
            raise ConfigError(f"learning_rate={self.learning_rate!r} must be a finite number > 0 (e.g. 1e-3).")
        if not _number(self.weight_decay) or not self.weight_decay >= 0:
            raise ConfigError(f"weight_decay={self.weight_decay!r} must be a finite number >= 0 (0: no decay).")
        if not (0 <= self.val_fraction < 1 and 0 <= self.test_fraction < 1 and self.val_fraction + self.test_fraction < 1):
            raise ConfigError(f"val_fraction={self.val_fraction}, test_fraction={self.test_fraction} must be in [0, 1) with a sum < 1.")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and bool(np.isfinite(value))


class Standardize(nn.Module):
    """``(x - mean) / std`` per feature, with the statistics of the training embeddings as buffers (saved with the head)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def fit(self, x: torch.Tensor) -> None:
        """Set the statistics from embeddings (n, dim)."""
        self.mean.copy_(x.mean(0))
        self.std.copy_(x.std(0).clamp(min=1e-6) if len(x) > 1 else torch.ones_like(self.std))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def make_head(in_dim: int, hidden: int, tokens: bool = False) -> nn.Module:
    """Standardised inputs, then a linear head (``hidden=0``) or a one-hidden-layer MLP: (n, in_dim) -> (n, 1).

    ``tokens=True`` wraps it in a :class:`TokenMeanHead`: (n, T, in_dim + 1) masked token states -> (n, 1).
    """
    if tokens:
        return TokenMeanHead(in_dim, hidden)
    if hidden == 0:
        return nn.Sequential(Standardize(in_dim), nn.Linear(in_dim, 1))
    return nn.Sequential(Standardize(in_dim), nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, 1))


class TokenMeanHead(nn.Module):
    """Score every token with one small head, average the scores over the real tokens: (n, T, dim + 1) -> (n, 1).

    The input's last channel is the token mask (1: a token, 0: padding), as a ``per_token`` encoder
    returns it. The reward is a mean of per-token scores — a lexicon learned from preferences, with
    each token's score read from its contextual states (so negation and intensifiers can count).
    """

    def __init__(self, in_dim: int, hidden: int) -> None:
        super().__init__()
        self.token = make_head(in_dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = x[..., -1]  # (n, T)
        scores = self.token(x[..., :-1]).squeeze(-1) * mask  # (n, T)
        return (scores.sum(-1) / mask.sum(-1).clamp(min=1.0)).unsqueeze(-1)  # (n, 1)


@torch.no_grad()
def head_outputs(head: nn.Module, x: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """``head(x)`` as (n,) float32 on the CPU, ``chunk`` rows per call (token states are large)."""
    device = next(head.parameters()).device
    return torch.cat([head(part.to(device)).squeeze(-1).float().cpu() for part in x.split(chunk)]) if len(x) else torch.zeros(0)


def fit_input_stats(head: nn.Module, x: torch.Tensor) -> None:
    """Set a head's input standardisation from training embeddings (n, dim), or from the real tokens of (n, T, dim + 1)."""
    if isinstance(head, TokenMeanHead):
        head.token[0].fit(x[..., :-1][x[..., -1] > 0])
    else:
        head[0].fit(x)


def bt_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """Bradley–Terry negative log-likelihood ``mean(−log σ(r_c − r_r))``."""
    return -F.logsigmoid(r_chosen - r_rejected).mean()


def split_by_prompt(pairs: Sequence[PreferencePair], test_fraction: float, val_fraction: float, seed: int) -> tuple[list[int], list[int], list[int]]:
    """Indices of (train, val, test) pairs; all pairs of one prompt land in the same part."""
    prompts = sorted({p.prompt for p in pairs})
    rng = np.random.default_rng(seed)
    rng.shuffle(prompts)
    n_test, n_val = round(len(prompts) * test_fraction), round(len(prompts) * val_fraction)
    part = {p: 2 if i < n_test else 1 if i < n_test + n_val else 0 for i, p in enumerate(prompts)}
    groups: tuple[list[int], list[int], list[int]] = ([], [], [])
    for i, pair in enumerate(pairs):
        groups[part[pair.prompt]].append(i)
    return groups


def balance_by_length(pairs: Sequence[PreferencePair], bucket_words: int = 4, seed: int = 0) -> list[PreferencePair]:
    """Subsample so that, per bucket of |length difference|, as many chosen responses are longer as shorter.

    Length is in words; pairs of equal length are all kept. A reward model trained on the result
    cannot lower its loss by preferring long (or short) responses.
    """
    buckets: dict[tuple[int, int], list[int]] = {}
    for i, p in enumerate(pairs):
        diff = len(p.chosen.split()) - len(p.rejected.split())
        buckets.setdefault((int(np.sign(diff)), abs(diff) // bucket_words), []).append(i)
    rng = np.random.default_rng(seed)
    keep = list(buckets.get((0, 0), []))
    for (sign, k), items in buckets.items():
        if sign != 1:
            continue
        other = buckets.get((-1, k), [])
        n = min(len(items), len(other))
        keep += list(rng.choice(items, n, replace=False)) + list(rng.choice(other, n, replace=False))
    return [pairs[i] for i in sorted(int(i) for i in keep)]


class BTRewardModel:
    """A trained head over a frozen encoder: a reward callable ``(prompts, responses) -> list[float]``."""

    def __init__(self, encoder: Encoder, head: nn.Module, *, hidden: int, mean: float = 0.0, std: float = 1.0,
                 metrics: dict[str, Any] | None = None, train_config: dict[str, Any] | None = None, name: str | None = None) -> None:
        self.encoder, self.head = encoder, head.eval().requires_grad_(False)
        self.hidden, self.mean, self.std = hidden, float(mean), float(std)
        self.metrics, self.train_config = dict(metrics or {}), dict(train_config or {})
        self.name = name or f"bt-rm({encoder.name})"

    @torch.no_grad()
    def raw(self, embeddings: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
        """Head outputs (n,) for embeddings (n, dim) or token states (n, T, dim + 1), unnormalised, ``chunk`` rows at a time."""
        return head_outputs(self.head, embeddings, chunk)

    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        values = (self.raw(self.encoder.embed(prompts, responses)) - self.mean) / self.std
        return values.tolist()

    def config(self) -> dict[str, Any]:
        tokens = isinstance(self.head, TokenMeanHead)
        return {"format": FORMAT, "version": FORMAT_VERSION if tokens else 2, "name": self.name, "encoder": self.encoder.spec(),
                "head": {"in_dim": self.encoder.dim, "hidden": self.hidden, "per_token": tokens},
                "normalization": {"mean": self.mean, "std": self.std}, "metrics": self.metrics, "train_config": self.train_config}

    def save(self, path: str | Path) -> Path:
        """Write the folder atomically (a temporary folder renamed into place); an existing RM folder is replaced.

        The old folder is kept until the new one is in place (:func:`proxy_env.assets.replace_dir`), so a
        failed save leaves the previous model intact.
        """
        from safetensors.torch import save_file

        target = Path(path).expanduser()
        if target.exists() and (not target.is_dir() or (any(target.iterdir()) and not (target / CONFIG_NAME).is_file())):
            raise ConfigError(f"{target} exists and is not a reward-model folder; pass a new or empty folder.")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        try:
            tmp.mkdir()
            save_file({k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}, str(tmp / WEIGHTS_NAME))
            (tmp / CONFIG_NAME).write_text(json.dumps(self.config(), indent=2, allow_nan=False))
            replace_dir(tmp, target, markers=(CONFIG_NAME,))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return target

    def __repr__(self) -> str:
        return f"BTRewardModel({self.name!r})"


def is_reward_model_dir(path: str | Path) -> bool:
    """True when ``path`` is a folder holding a saved :class:`BTRewardModel` config."""
    return (Path(path).expanduser() / CONFIG_NAME).is_file()


def read_config(path: str | Path) -> dict[str, Any]:
    """The validated ``reward_model.json`` of a folder (DataError/ConfigError saying what is wrong)."""
    folder = Path(path).expanduser()
    file = folder / CONFIG_NAME
    if not file.is_file():
        raise ConfigError(f"{folder} holds no {CONFIG_NAME}; pass a folder written by `proxy-rlhf rm train` (or BTRewardModel.save).")
    try:
        config = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{file}: not valid JSON ({exc.msg}, line {exc.lineno}).") from exc
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise DataError(f"{file}: not a Bradley–Terry reward-model config (format={config.get('format') if isinstance(config, dict) else None!r}, "
                        f"expected {FORMAT!r}).")
    if config.get("version") not in READ_VERSIONS:
        raise DataError(f"{file}: format version {config.get('version')!r}; this proxy-rlhf reads versions {list(READ_VERSIONS)}. "
                        "Retrain or upgrade.")
    for key in ("encoder", "head", "normalization"):
        if not isinstance(config.get(key), dict):
            raise DataError(f"{file}: the {key!r} section is missing or not an object.")
    if not (folder / WEIGHTS_NAME).is_file():
        raise DataError(f"{folder} holds no {WEIGHTS_NAME}; the reward model folder is incomplete.")
    return config


def load_reward_model(path: str | Path, *, lm: Any = None, device: str | torch.device | None = None) -> BTRewardModel:
    """Load a saved reward model; an LLM-hidden-state encoder reuses ``lm`` when given."""
    from safetensors.torch import load_file

    config = read_config(path)
    head_cfg = config["head"]
    tokens = bool(head_cfg.get("per_token", False))
    if tokens != (config["encoder"].get("pooling") == "tokens"):  # checked before the encoder loads
        raise DataError(f"{path}: head per_token={tokens} does not match the encoder "
                        f"(pooling={config['encoder'].get('pooling')!r}); the config was edited or is corrupt.")
    encoder = encoder_from_spec(config["encoder"], lm=lm, device=device)
    if head_cfg.get("in_dim") != encoder.dim:
        raise DataError(f"{path}: head input width {head_cfg.get('in_dim')} != encoder width {encoder.dim}.")
    head = make_head(int(head_cfg["in_dim"]), int(head_cfg.get("hidden", 0)), tokens=tokens)
    from safetensors import SafetensorError

    weights = Path(path).expanduser() / WEIGHTS_NAME
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise DataError(f"{weights}: damaged or truncated ({exc}); retrain the reward model (proxy-rlhf rm train) or copy it again.") from exc
    try:
        head.load_state_dict(tensors)
    except (RuntimeError, KeyError) as exc:
        raise DataError(f"{path}: {WEIGHTS_NAME} does not match the head in {CONFIG_NAME}: {exc}") from exc
    norm = config["normalization"]
    return BTRewardModel(encoder, head, hidden=int(head_cfg.get("hidden", 0)), mean=float(norm.get("mean", 0.0)),
                         std=float(norm.get("std", 1.0)), metrics=config.get("metrics"), train_config=config.get("train_config"),
                         name=config.get("name"))


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation; NaN when either side is constant or has fewer than 2 values."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


__all__ = ["BTRewardModel", "RMTrainConfig", "TokenMeanHead", "balance_by_length", "bt_loss", "fit_input_stats", "head_outputs", "is_reward_model_dir",
           "load_reward_model", "make_head", "pearson", "read_config", "split_by_prompt"]
