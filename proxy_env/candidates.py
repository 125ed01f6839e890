"""SKAM, the stable knowledge-aware module, as pure tensor functions.

At each response position the LLM's next-token distribution (temperature ``T``) is truncated to
the pool ``top-k ∩ top-p``, exactly as Hugging Face's samplers do (temperature, then top-k, then
top-p on the renormalised top-k distribution). The pool is offered one candidate at a time, in an
order drawn by sampling without replacement (Gumbel-top-k) or by descending probability.

Randomness is counter-based: the Gumbel noise of a token is a hash of (row seed, episode, position,
token id). A row's draws therefore do not depend on which other rows share its batch, which is what
makes a batched env reproduce a single env exactly.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

_MASK32 = 0xFFFFFFFF


class Pool(NamedTuple):
    """Candidate pools of a batch; columns past ``size`` are padding."""

    tokens: torch.Tensor  # (B, K) long, in offer order
    logprob: torch.Tensor  # (B, K) log-prob under the tempered, untruncated LLM distribution
    logprob_trunc: torch.Tensor  # (B, K) log-prob under the truncated (pool) distribution; -inf on padding
    size: torch.Tensor  # (B,) long, number of valid candidates (>= 1)


def truncate(logits: torch.Tensor, top_k: int, top_p: float, temperature: float) -> Pool:
    """The pool ``top-k ∩ top-p`` of each row of ``logits`` (B, V), sorted by descending probability."""
    logprob = torch.log_softmax(logits.float() / temperature, dim=-1)  # (B, V)
    k = min(top_k, logprob.shape[-1])
    values, tokens = logprob.topk(k, dim=-1)  # (B, K), descending
    within_k = torch.log_softmax(values, dim=-1)  # renormalised over the top-k, as HF's top-p sees it
    probs = within_k.exp()
    # keep the smallest prefix whose mass reaches top_p: a token stays if the mass before it is < top_p
    keep = (probs.cumsum(-1) - probs) < top_p
    keep[:, 0] = True
    masked = values.masked_fill(~keep, float("-inf"))
    logprob_trunc = torch.log_softmax(masked, dim=-1)
    return Pool(tokens, values, logprob_trunc, keep.sum(-1))


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (lowbias32) on int64 tensors holding values in [0, 2**32)."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _MASK32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _MASK32
    return x ^ (x >> 16)


def hash_uniform(*keys: torch.Tensor) -> torch.Tensor:
    """Uniform floats in (0, 1) (float64), a deterministic hash of broadcast int64 ``keys``."""
    h = torch.zeros((), dtype=torch.long, device=keys[0].device)
    for key in keys:
        key = key.long()
        h = _mix32(h ^ (key & _MASK32))
        h = _mix32(h ^ ((key >> 32) & _MASK32) ^ 0x5BD1E995)
    return (h.double() + 0.5) / 2.0**32


def gumbel(seed: torch.Tensor, episode: torch.Tensor, position: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Gumbel(0, 1) noise (B, K) for ``tokens`` (B, K) of rows with ``seed``, ``episode``, ``position`` (B,)."""
    u = hash_uniform(seed[:, None], episode[:, None], position[:, None], tokens)
    return -torch.log(-torch.log(u))


def order(pool: Pool, noise: torch.Tensor | None) -> Pool:
    """Put each row's pool in offer order.

    With Gumbel ``noise`` (B, K), sorting ``logprob_trunc + noise`` samples the pool without
    replacement from the truncated distribution (Gumbel-top-k); with ``None`` the pool keeps its
    descending-probability order (greedy).
    """
    if noise is None:
        return pool
    keys = (pool.logprob_trunc.double() + noise).masked_fill(torch.isinf(pool.logprob_trunc), float("-inf"))
    idx = keys.argsort(dim=-1, descending=True, stable=True)
    return Pool(pool.tokens.gather(1, idx), pool.logprob.gather(1, idx), pool.logprob_trunc.gather(1, idx), pool.size)


def must_commit(offer_index: torch.Tensor, size: torch.Tensor, max_rejections: int | None) -> torch.Tensor:
    """Rows (B,) whose candidate on offer is committed without asking: the last one, or the cap is hit.

    ``offer_index`` (B,) is also the number of rejections so far at this position.
    """
    forced = offer_index >= size - 1
    if max_rejections is not None:
        forced |= offer_index >= max_rejections
    return forced


def select(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``values[b, index[b]]`` for (B, K) values and (B,) index."""
    return values.gather(1, index[:, None]).squeeze(1)
