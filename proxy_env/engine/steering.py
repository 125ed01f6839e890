"""The steered next-token distribution of a proxy and its KL from the unsteered sampler (pure tensor math).

The derivation is in :mod:`agents.eval.kl`, which re-exports these functions. They live in the env package
because the env itself charges the KL penalty during training (``kl_coef``): the accept
probabilities of a whole pool go in, the steered distribution ``π`` over the pool comes out.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from proxy_env.errors import check_choice


def pool_embedding(
    lm: Any, tokens: torch.Tensor, logq: torch.Tensor, *, emb: torch.Tensor | None = None
) -> torch.Tensor:
    """``ē`` (B, H): the input embedding of the pool ``tokens`` (B, K) averaged under the pool's ``q``.

    What the LLM would say here on average, independent of which candidate is on offer or what was
    rejected, so an accept probability built on it still depends on (position, candidate) only and
    the steered distribution keeps its closed form. Padding (``logq = -inf``) weighs 0.
    """
    if emb is None:  # ``emb``: the embeddings of ``tokens``, when the caller has them already
        emb = lm.model.get_input_embeddings()(tokens).float()  # (B, K, H)
    q = logq.float().exp()  # exp(-inf) = 0 on padding
    q = q / q.sum(-1, keepdim=True).clamp_min(1e-30)
    return torch.einsum("bk,bkh->bh", q, emb)


def prefix_observation(
    lm: Any,
    hidden: torch.Tensor,
    tokens: torch.Tensor,
    logprob: torch.Tensor,
    logq: torch.Tensor,
    *,
    pool_mean: torch.Tensor | None = None,
) -> torch.Tensor:
    """``observation="prefix"`` of candidates ``tokens`` (B, K): (B, K, 3H + 2) float32.

    Built from what the LLM already computed at the position: ``hidden`` (B, H), the prefix's hidden
    state (the last committed token's), then the candidate's input embedding ``e``, the pool's mean
    embedding ``ē`` (:func:`pool_embedding`; computed from ``tokens`` and ``logq`` when
    ``pool_mean`` is None, i.e. when they are the whole pool), the candidate's tempered
    log-probability and its log-probability in the pool (clamped at -1e4 so padding stays finite).
    ``e`` beside ``ē`` lets a linear read-out score a candidate against the alternatives it would
    give up (a rejection is worth it when the rest of the pool is better).
    """
    emb = lm.model.get_input_embeddings()(tokens).float()  # (B, K, H)
    if pool_mean is None:
        pool_mean = pool_embedding(lm, tokens, logq, emb=emb)
    stats = torch.stack([logprob, logq], dim=-1).float().clamp(min=-1e4)  # (B, K, 2)
    k = tokens.shape[1]
    return torch.cat(
        [hidden.float()[:, None, :].expand(-1, k, -1), emb, pool_mean.float()[:, None, :].expand(-1, k, -1), stats],
        dim=-1,
    )


_V_LO = -30.0  # log x below which the integrands contribute < q_t e^-30 (≈ 1e-13 q_t)
_TAIL = 60.0  # q_min x at the upper end: every integrand carries e^{-q_t x} < e^-60


def _prod_excl(f: torch.Tensor) -> torch.Tensor:
    """``out[..., t] = ∏_{s≠t} f[..., s]`` without division (prefix × suffix products)."""
    ones = torch.ones_like(f[..., :1])
    prefix = torch.cat([ones, f[..., :-1]], dim=-1).cumprod(-1)
    suffix = torch.cat([f[..., 1:], ones], dim=-1).flip(-1).cumprod(-1).flip(-1)
    return prefix * suffix


def _grid(q: torch.Tensor, step: float) -> tuple[torch.Tensor, float]:
    """Nodes ``x`` (N,) of the trapezoid rule in ``v = log x`` covering every positive ``q``."""
    q_min = float(q[q > 0].min()) if bool((q > 0).any()) else 1.0
    v_hi = math.log(_TAIL / q_min)
    v = torch.arange(_V_LO, v_hi + step, step, dtype=torch.float64, device=q.device)
    return v.exp(), step


def _check(q: torch.Tensor, accept: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    q = q.double().clamp_min(0.0)
    q = q / q.sum(-1, keepdim=True)  # float32 pools sum to 1 only within ~1e-7
    accept = accept.double().clamp(0.0, 1.0)
    assert q.shape == accept.shape and q.dim() == 2, "q and accept must both be (B, K)"
    return q, accept


def steered_probs(
    q: torch.Tensor,
    accept: torch.Tensor,
    max_rejections: int | None = None,
    *,
    order: str = "sample",
    step: float = 0.2,
) -> torch.Tensor:
    """The steered next-token distribution ``π`` (B, K) over each pool.

    Args:
        q: (B, K) the unsteered (truncated, tempered) probabilities of each pool; 0 on padding.
            For ``order="greedy"`` the columns must be in offer order (descending probability).
        accept: (B, K) the proxy's probability of accepting each candidate (rank-independent).
        max_rejections: the env's rejection cap (None: the last candidate is the only forced one).
        order: ``"sample"`` (Gumbel-top-k) or ``"greedy"``.
        step: trapezoid step in ``log x`` (``order="sample"`` only).
    """
    check_choice("order", order, ("sample", "greedy"))
    q, accept = _check(q, accept)
    valid = q > 0
    size = valid.sum(-1)  # (B,)
    m_eff = size - 1 if max_rejections is None else (size - 1).clamp(max=max_rejections)  # (B,)
    if order == "greedy":
        return _greedy(accept, valid, m_eff)
    if max_rejections is None or bool((m_eff >= size - 1).all()):
        bracket = lambda p, e: _bracket_uncapped(p, accept, valid)  # noqa: E731
    else:
        bracket = lambda p, e: _bracket_capped(p, e, accept, m_eff)  # noqa: E731
    x, h = _grid(q, step)
    out = torch.zeros_like(q)
    for chunk in x.split(64):  # (n,) nodes at a time bound the memory of the capped case
        qx = q[:, None, :] * chunk[None, :, None]  # (B, n, K)
        e = torch.exp(-qx)
        p = -torch.expm1(-qx)
        f = bracket(p, e)  # (B, n, K)
        out += h * (chunk[None, :, None] * q[:, None, :] * e * f).sum(1)
    return out.masked_fill(~valid, 0.0)


def _bracket_uncapped(p: torch.Tensor, accept: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    a = accept[:, None, :]  # (B, 1, K)
    arrive_rejected = torch.where(valid[:, None, :], p * (1 - a), torch.ones_like(p))  # padding never arrives
    return a * _prod_excl(1 - a * p) + (1 - a) * _prod_excl(arrive_rejected)


def _bracket_capped(p: torch.Tensor, e: torch.Tensor, accept: torch.Tensor, m_eff: torch.Tensor) -> torch.Tensor:
    b, n, k = p.shape
    degree = int(m_eff.max())
    poly = p.new_zeros(b, n, k, degree + 1)  # (B, n, K_t, J): C_j for each t
    poly[..., 0] = 1.0
    rejected = p * (1 - accept[:, None, :])  # (B, n, K)
    eye = torch.eye(k, dtype=torch.bool, device=p.device)
    for s in range(k):  # multiply by (e_s + z p_s (1 - a_s)) for every t != s
        es, rs = e[..., s, None], rejected[..., s, None]  # (B, n, 1)
        shifted = torch.cat([poly.new_zeros(b, n, k, 1), poly[..., :-1]], dim=-1)
        new = poly * es[..., None] + shifted * rs[..., None]
        poly = torch.where(eye[s][None, None, :, None], poly, new)
    j = torch.arange(degree + 1, device=p.device)
    weight = torch.where(j[None, :] < m_eff[:, None], 1.0, 0.0).double()[:, None, None, :]  # (B, 1, 1, J)
    forced = (j[None, :] == m_eff[:, None]).double()[:, None, None, :]
    return accept[:, None, :] * (poly * weight).sum(-1) + (poly * forced).sum(-1)


def _greedy(accept: torch.Tensor, valid: torch.Tensor, m_eff: torch.Tensor) -> torch.Tensor:
    rank = torch.arange(accept.shape[1], device=accept.device)[None, :]  # (1, K)
    take = torch.where(rank == m_eff[:, None], 1.0, accept).double()
    reach = torch.cat([torch.ones_like(accept[:, :1]), (1 - accept[:, :-1]).cumprod(-1)], dim=-1)
    return (reach * take).masked_fill((rank > m_eff[:, None]) | ~valid, 0.0)


def kl_divergence(pi: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``KL(π || q)`` per row (B,), over the support of ``q`` (``π`` = 0 terms are 0); ``q`` is renormalised."""
    pi, q = pi.double(), q.double()
    q = q / q.sum(-1, keepdim=True)
    terms = torch.where(pi > 0, pi * (pi.clamp_min(1e-300).log() - q.clamp_min(1e-300).log()), torch.zeros_like(pi))
    return terms.sum(-1)
