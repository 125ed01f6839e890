"""Guidance by the distributional value: each candidate's tilt ``W(s + y)``, through the tilt recipe's fit.

Best-of-N's output distribution is the sequence-level tilt ``q(y)·N·F_x(R(y))^{N−1}``; a token-level sampler
implements it exactly when each candidate is weighted by ``W(s + y) / W(s)`` with ``W(s) = E_q[u^{N−1} | s]``.
The tilt recipe's fit (:func:`agents.tilt.fit.fit`) makes the proxy's steered distribution ``π ∝ q·exp(Δ/β)``;
with ``Δ = β·log W(s + y)`` (centred under ``q``: a per-position constant does not move the tilt) its optimum is
``π ∝ q·W(s + y)``, best-of-N's own token-level rule. ``W(s)`` is the same for every candidate of the position, so
it drops out.
"""

from __future__ import annotations

from typing import Any

import torch

from agents.tilt.data import Positions
from agents.value.head import ValueHead, expected_power


@torch.no_grad()
def value_deltas(head: ValueHead, lm: Any, data: Positions, *, n: int, beta: float, chunk: int = 1024) -> torch.Tensor:
    """(P, K) ``β·log E[u^{N−1} | s + y]`` of every candidate of every position, centred under ``q`` (0 on padding)."""
    out = []
    for s in range(0, len(data), chunk):
        part = data.take(slice(s, s + chunk))
        probs = head.probs(part.observations(lm).cpu())  # (p, K, bins)
        log_w = expected_power(probs, float(n - 1)).clamp_min(1e-300).log()  # (p, K)
        q = part.q()
        log_w = log_w.masked_fill(q == 0, 0.0)
        out.append((beta * (log_w - (q * log_w).sum(-1, keepdim=True)) * (q > 0)).float())
    return torch.cat(out)
