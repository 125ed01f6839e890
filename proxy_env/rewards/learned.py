"""A trained Bradley–Terry reward model as the env loads it: the head, the folder format, the loader.

Training lives in :mod:`feedback.bt` (``proxy-rlhf rm train``); this module is what ``reward="path/to/folder"``
needs, so the environment never imports the training code. A model is a plain reward callable
``(prompts, responses) -> list[float]`` over a frozen encoder (:mod:`proxy_env.rewards.encoders`); its
folder holds ``model.safetensors`` (the head) + ``reward_model.json`` (encoder, head, normalisation,
metrics, format version).
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import torch
from torch import nn

from proxy_env.errors import ConfigError, DataError
from proxy_env.folders import replace_dir
from proxy_env.rewards.encoders import Encoder, encoder_from_spec

CONFIG_NAME = "reward_model.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT, FORMAT_VERSION = "proxy-rlhf-bt-reward-model", 3  # 2: the head standardises its inputs; 3: per-token heads
READ_VERSIONS = (2, 3)  # pooled heads are still written as version 2, so older readers load them


class Standardize(nn.Module):
    """``(x - mean) / std`` per feature, with the statistics of the training embeddings as buffers (saved with the head)."""

    mean: torch.Tensor
    std: torch.Tensor

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
    return (
        torch.cat([head(part.to(device)).squeeze(-1).float().cpu() for part in x.split(chunk)])
        if len(x)
        else torch.zeros(0)
    )


class BTRewardModel:
    """A trained head over a frozen encoder: a reward callable ``(prompts, responses) -> list[float]``."""

    def __init__(
        self,
        encoder: Encoder,
        head: nn.Module,
        *,
        hidden: int,
        mean: float = 0.0,
        std: float = 1.0,
        metrics: dict[str, Any] | None = None,
        train_config: dict[str, Any] | None = None,
        name: str | None = None,
    ) -> None:
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
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION if tokens else 2,
            "name": self.name,
            "encoder": self.encoder.spec(),
            "head": {"in_dim": self.encoder.dim, "hidden": self.hidden, "per_token": tokens},
            "normalization": {"mean": self.mean, "std": self.std},
            "metrics": self.metrics,
            "train_config": self.train_config,
        }

    def save(self, path: str | Path) -> Path:
        """Write the folder atomically (a temporary folder renamed into place); an existing RM folder is replaced.

        The old folder is kept until the new one is in place (:func:`proxy_env.folders.replace_dir`), so a
        failed save leaves the previous model intact.
        """
        from safetensors.torch import save_file

        target = Path(path).expanduser()
        if target.exists() and (
            not target.is_dir() or (any(target.iterdir()) and not (target / CONFIG_NAME).is_file())
        ):
            raise ConfigError(f"{target} exists and is not a reward-model folder; pass a new or empty folder.")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        try:
            tmp.mkdir()
            save_file(
                {k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}, str(tmp / WEIGHTS_NAME)
            )
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
        raise ConfigError(
            f"{folder} holds no {CONFIG_NAME}; pass a folder written by `proxy-rlhf rm train` (or BTRewardModel.save)."
        )
    try:
        config = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{file}: not valid JSON ({exc.msg}, line {exc.lineno}).") from exc
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise DataError(
            f"{file}: not a Bradley–Terry reward-model config (format={config.get('format') if isinstance(config, dict) else None!r}, "
            f"expected {FORMAT!r})."
        )
    if config.get("version") not in READ_VERSIONS:
        raise DataError(
            f"{file}: format version {config.get('version')!r}; this proxy-rlhf reads versions {list(READ_VERSIONS)}. "
            "Retrain or upgrade."
        )
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
        raise DataError(
            f"{path}: head per_token={tokens} does not match the encoder "
            f"(pooling={config['encoder'].get('pooling')!r}); the config was edited or is corrupt."
        )
    encoder = encoder_from_spec(config["encoder"], lm=lm, device=device)
    if head_cfg.get("in_dim") != encoder.dim:
        raise DataError(f"{path}: head input width {head_cfg.get('in_dim')} != encoder width {encoder.dim}.")
    head = make_head(int(head_cfg["in_dim"]), int(head_cfg.get("hidden", 0)), tokens=tokens)
    from safetensors import SafetensorError

    weights = Path(path).expanduser() / WEIGHTS_NAME
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise DataError(
            f"{weights}: damaged or truncated ({exc}); retrain the reward model (proxy-rlhf rm train) or copy it again."
        ) from exc
    try:
        head.load_state_dict(tensors)
    except (RuntimeError, KeyError) as exc:
        raise DataError(f"{path}: {WEIGHTS_NAME} does not match the head in {CONFIG_NAME}: {exc}") from exc
    norm = config["normalization"]
    return BTRewardModel(
        encoder,
        head,
        hidden=int(head_cfg.get("hidden", 0)),
        mean=float(norm.get("mean", 0.0)),
        std=float(norm.get("std", 1.0)),
        metrics=config.get("metrics"),
        train_config=config.get("train_config"),
        name=config.get("name"),
    )


__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "BTRewardModel",
    "TokenMeanHead",
    "head_outputs",
    "is_reward_model_dir",
    "load_reward_model",
    "make_head",
    "read_config",
]
