"""Training a Bradley–Terry reward model: the config, the loss, the splits (the model itself: :mod:`proxy_env.rewards.learned`).

``P(chosen > rejected) = σ(r(chosen) − r(rejected))``; the loss is ``−log σ(r_c − r_r)`` (:func:`bt_loss`).
Pairs are split by prompt (train / validation for early stopping / test for the reported figures:
:func:`split_by_prompt`) and can be balanced by length (:func:`balance_by_length`). The training loop
is :func:`feedback.bt.train_reward_model`; the trained model and its folder format are
:mod:`proxy_env.rewards.learned` (re-exported here for the loop).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from feedback.records import PreferencePair
from proxy_env.errors import ConfigError
from proxy_env.rewards.learned import (
    BTRewardModel,
    Standardize,
    TokenMeanHead,
    head_outputs,
    is_reward_model_dir,
    load_reward_model,
    make_head,
    read_config,
)


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
    margin_threshold: float = field(
        default=0.3, metadata=_help("also report test accuracy on pairs with margin >= this")
    )
    normalize: bool = field(default=True, metadata=_help("standardise rewards by the training responses' mean and std"))
    balance_length: bool = field(
        default=False, metadata=_help("balance pairs whose chosen response is longer/shorter, per length bucket")
    )
    length_bucket_words: int = field(
        default=4, metadata=_help("width in words of a length-difference bucket (balance_length)")
    )
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
        if not (
            0 <= self.val_fraction < 1 and 0 <= self.test_fraction < 1 and self.val_fraction + self.test_fraction < 1
        ):
            raise ConfigError(
                f"val_fraction={self.val_fraction}, test_fraction={self.test_fraction} must be in [0, 1) with a sum < 1."
            )


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and bool(np.isfinite(value))


def fit_input_stats(head: nn.Module, x: torch.Tensor) -> None:
    """Set a head's input standardisation from training embeddings (n, dim), or from the real tokens of (n, T, dim + 1)."""
    if isinstance(head, TokenMeanHead):
        _standardize(head.token).fit(x[..., :-1][x[..., -1] > 0])
    else:
        _standardize(head).fit(x)


def _standardize(head: nn.Module) -> Standardize:
    """The :class:`Standardize` layer that every :func:`make_head` head starts with."""
    first = head[0] if isinstance(head, nn.Sequential) else None
    assert isinstance(first, Standardize), f"not a make_head head: {type(head).__name__}"
    return first


def bt_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """Bradley–Terry negative log-likelihood ``mean(−log σ(r_c − r_r))``."""
    return -F.logsigmoid(r_chosen - r_rejected).mean()


def split_by_prompt(
    pairs: Sequence[PreferencePair], test_fraction: float, val_fraction: float, seed: int
) -> tuple[list[int], list[int], list[int]]:
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


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation; NaN when either side is constant or has fewer than 2 values."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


__all__ = [
    "BTRewardModel",
    "RMTrainConfig",
    "TokenMeanHead",
    "balance_by_length",
    "bt_loss",
    "fit_input_stats",
    "head_outputs",
    "is_reward_model_dir",
    "load_reward_model",
    "make_head",
    "pearson",
    "read_config",
    "split_by_prompt",
]
