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
TIE_MARGIN = 8  # extra top-k columns that catch ties with the k-th score (HF keeps every tied token)


class Pool(NamedTuple):
    """Candidate pools of a batch; columns past ``size`` are padding."""

    tokens: torch.Tensor  # (B, K) long, in offer order
    logprob: torch.Tensor  # (B, K) log-prob under the tempered, untruncated LLM distribution
    logq: torch.Tensor  # (B, K) log-prob under the truncated (pool) distribution; -inf on padding
    size: torch.Tensor  # (B,) long, number of valid candidates (>= 1)


def truncate(logits: torch.Tensor, top_k: int, top_p: float, temperature: float) -> Pool:
    """The pool ``top-k ∩ top-p`` of each row of ``logits`` (B, V), sorted by descending probability.

    Decided exactly as Hugging Face's ``TemperatureLogitsWarper``, ``TopKLogitsWarper`` and
    ``TopPLogitsWarper`` decide, so the pool is the support of HF's sampler with the same settings:

    * top-k keeps every token whose tempered score is ``>=`` the k-th largest (ties with the k-th
      score are all kept, so a pool may hold more than ``top_k`` tokens);
    * top-p is skipped for ``top_p >= 1`` (HF's ``generate`` does not apply the warper then);
      otherwise a token is dropped when the mass of the kept tokens *at or below it* in ascending
      order, summed in float32 from the smallest up, is ``<= 1 - top_p``, and the most probable
      token always stays. Summing the tail from the small end keeps that mass exact to float32
      rounding of the tail itself, which a descending cumulative sum (``1 - tail``, saturating at
      ``1.0``) does not.
    * Where the top-p boundary cuts a group of equal scores, which of them stay is decided by
      running HF's own ``TopPLogitsWarper`` computation on that row (its ``torch.sort`` is not
      stable, so nothing else reproduces it). Everywhere else equal scores are in ascending token
      id, as ``argmax`` orders them, so ``order="greedy"`` with always-accept is greedy decoding.

    Columns past ``size`` are padding (``logq = -inf``); the pool width is
    ``min(V, top_k + TIE_MARGIN)``, or wider when more tokens tie with the k-th score.
    """
    scores = logits.float() / temperature  # (B, V), as TemperatureLogitsWarper
    vocab = scores.shape[-1]
    k = min(top_k, vocab)
    width = min(vocab, k + TIE_MARGIN)
    values, tokens = _sorted_top(scores, width)
    while width < vocab and bool((values[:, -1] >= values[:, k - 1]).any()):  # ties run past the margin
        width = min(vocab, 2 * width)
        values, tokens = _sorted_top(scores, width)
    keep = values >= values[:, k - 1 : k]  # (B, W) top-k with its ties, a prefix
    if top_p < 1.0:
        in_k = keep
        probs = values.masked_fill(~in_k, float("-inf")).softmax(-1)  # as HF: softmax over the top-k-masked scores
        tail = probs.flip(-1).cumsum(-1).flip(-1)  # (B, W) mass at or below each token, summed from the smallest up
        keep = in_k & (tail > (1 - top_p))
        keep[:, 0] = True
        size = keep.sum(-1, keepdim=True)  # (B, 1)
        split = in_k.gather(1, size.clamp(max=width - 1)) & (
            values.gather(1, size.clamp(max=width - 1)) == values.gather(1, size - 1)
        )
        split &= size < width  # the boundary cuts a group of equal scores: HF's own sort decides which stay
        if bool(split.any()):
            values, tokens, keep = _hf_tie_order(scores, values, tokens, in_k, keep, split.squeeze(1), top_p)
    logprob = values - torch.logsumexp(scores, -1, keepdim=True)  # (B, W) tempered, untruncated
    logq = torch.log_softmax(values.masked_fill(~keep, float("-inf")), dim=-1)
    return Pool(tokens, logprob, logq, keep.sum(-1))


def _sorted_top(scores: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``width`` largest scores (B, W) and their ids, by descending score then ascending id."""
    values, tokens = scores.topk(width, dim=-1)
    by_id = tokens.argsort(dim=-1, stable=True)
    values, tokens = values.gather(1, by_id), tokens.gather(1, by_id)
    by_value = values.argsort(dim=-1, descending=True, stable=True)
    return values.gather(1, by_value), tokens.gather(1, by_value)


def _hf_tie_order(
    scores: torch.Tensor,
    values: torch.Tensor,
    tokens: torch.Tensor,
    in_k: torch.Tensor,
    keep: torch.Tensor,
    rows: torch.Tensor,
    top_p: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-p of ``rows`` (B,) decided by ``TopPLogitsWarper``'s own computation over the whole vocabulary.

    Its ``torch.sort`` is not stable, so which of several equal scores at the boundary survive is
    whatever that sort does on this device; running the same operations on the same row is the only
    way to get the same answer. Kept tokens are moved to the front, each group keeping its order.
    """
    index = rows.nonzero().squeeze(1)
    kth = values[index].masked_fill(~in_k[index], float("inf")).min(-1, keepdim=True).values  # (n, 1)
    full = scores[index].masked_fill(scores[index] < kth, float("-inf"))  # (n, V) as after TopKLogitsWarper
    sorted_scores, sorted_ids = torch.sort(full, descending=False)
    remove = sorted_scores.softmax(-1).cumsum(-1) <= (1 - top_p)
    remove[:, -1] = False
    removed = remove.scatter(1, sorted_ids, remove)  # (n, V) in vocabulary order
    keep = keep.clone()
    keep[index] = in_k[index] & ~removed.gather(1, tokens[index])
    front = (~keep).to(torch.int8).argsort(dim=-1, stable=True)  # kept first: the pool stays a prefix
    return values.gather(1, front), tokens.gather(1, front), keep.gather(1, front)


def pad(pool: Pool, width: int) -> Pool:
    """``pool`` widened to ``width`` columns of padding (token 0, log-probabilities ``-inf``)."""
    extra = width - pool.tokens.shape[1]
    if extra <= 0:
        return pool
    fill = lambda x, value: torch.nn.functional.pad(x, (0, extra), value=value)  # noqa: E731
    return Pool(fill(pool.tokens, 0), fill(pool.logprob, float("-inf")), fill(pool.logq, float("-inf")), pool.size)


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

    With Gumbel ``noise`` (B, K), sorting ``logq + noise`` samples the pool without
    replacement from the truncated distribution (Gumbel-top-k); with ``None`` the pool keeps its
    descending-probability order (greedy).
    """
    if noise is None:
        return pool
    keys = (pool.logq.double() + noise).masked_fill(torch.isinf(pool.logq), float("-inf"))
    idx = keys.argsort(dim=-1, descending=True, stable=True)
    return Pool(pool.tokens.gather(1, idx), pool.logprob.gather(1, idx), pool.logq.gather(1, idx), pool.size)


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
