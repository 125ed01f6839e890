"""What the engine's forwards return (shared by :mod:`~proxy_env.engine.lm` and :mod:`~proxy_env.engine.row_cache`)."""

from __future__ import annotations

from typing import NamedTuple

import torch


class StepOutput(NamedTuple):
    """Outputs of one batched forward."""

    hidden: torch.Tensor  # (B, H) hidden state of the chosen layer at the fed token
    logits: torch.Tensor  # (B, V) next-token logits after the fed token (float32)


class PaddedOutput(NamedTuple):
    """Outputs of :meth:`FrozenLM.forward_padded` over a left-padded batch of ``B`` rows of width ``W``."""

    logits: torch.Tensor  # (B, W, V) float32 next-token logits; (B, 1, V), the last position only, with last_only
    hidden: torch.Tensor | None  # (B, W, H) float32 hidden states of the chosen layer, or None when not asked for
    mask: torch.Tensor  # (B, W) attention mask: 0 on each row's left padding, 1 on its tokens
    ids: torch.Tensor  # (B, W) the left-padded token ids (pad id on the padding)
