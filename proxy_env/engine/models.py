"""A :class:`~proxy_env.engine.lm.FrozenLM` from what a user passes: a loaded one, ``"tiny"``, or a name or path."""

from __future__ import annotations

from typing import Any

from proxy_env.engine.lm import FrozenLM


def as_frozen_lm(model: Any, *, device: Any = None, dtype: Any = None) -> FrozenLM:
    """A :class:`FrozenLM` as is; ``"tiny"``: :func:`proxy_env.engine.tiny.tiny_lm` (random, for tests); anything else: ``FrozenLM(model)``."""
    if isinstance(model, FrozenLM):
        return model
    if model == "tiny":
        from proxy_env.engine.tiny import tiny_lm

        lm = tiny_lm(device=device or "cpu")
        lm.name = "tiny"  # so a checkpoint records a name that loads it again
        return lm
    return FrozenLM(model, device=device, dtype=dtype)
