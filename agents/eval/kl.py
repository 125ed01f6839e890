"""Exact KL divergence of a proxy-steered LLM from the unsteered one.

The unsteered sampler at one response position is ``q``: the LLM's tempered next-token distribution
truncated to the SKAM pool (top-k ∩ top-p), which is exactly what always-accept produces. The
environment offers the pool in Gumbel-top-k order (sampling without replacement from ``q``), the
proxy accepts the candidate on offer ``t`` with probability ``a_t``, and the candidate at offer index
``m_eff = min(max_rejections, size - 1)`` is committed without asking. With ``observation="candidate"``
the observation, hence ``a_t``, depends on the prefix and ``t`` only (not on the rank).

**Derivation.** Sampling without replacement from ``q`` is the same as ordering the pool by
independent exponential arrival times ``E_s ~ Exp(q_s)`` (ascending ``E`` = Plackett–Luce order);
the proxy's answers are independent coins ``c_s ~ Bernoulli(a_s)`` drawn for every candidate up
front (a candidate is asked at most once per position, so this changes nothing). Token ``t`` arriving
at time ``x`` is committed iff every earlier arrival was rejected and either ``t`` is accepted with
rank ``j < m_eff`` or it sits at rank ``j = m_eff`` (forced). Given ``x``, candidate ``s != t`` is
"earlier and rejected" with probability ``p_s (1 - a_s)``, "earlier and accepted" with ``p_s a_s`` and
"later" with ``e_s = 1 - p_s``, where ``p_s = 1 - exp(-q_s x)``. Let ``C_j(x)`` be the probability that
exactly ``j`` candidates arrive before ``x`` and all are rejected: the coefficient of ``z^j`` in
``∏_{s≠t} (e_s + z p_s (1 - a_s))``. Then

    π(t) = ∫_0^∞ q_t e^{-q_t x} [ a_t Σ_{j<m_eff} C_j(x) + C_{m_eff}(x) ] dx.

Without a binding cap (``m_eff = size - 1``) the bracket has a closed form,
``a_t ∏_{s≠t} (1 - a_s p_s) + (1 - a_t) ∏_{s≠t} p_s (1 - a_s)``, which gives

    π(t) = a_t ∫ q_t e^{-q_t x} ∏_{s≠t} (1 - a_s (1 - e^{-q_s x})) dx
         + (1 - a_t) ∫ q_t e^{-q_t x} ∏_{s≠t} (1 - a_s)(1 - e^{-q_s x}) dx.

(``a ≡ 1`` gives ``π = q``.) The 1-D integrals are evaluated with the trapezoid rule in ``v = log x``:
the integrand ``x q_t e^{-q_t x} f(x)`` is analytic in a strip of half-width π/2 around the real
``v`` axis and decays exponentially at both ends, so the rule converges geometrically (error
≈ ``exp(-π²/h)`` for step ``h``; the default 0.2 gives < 1e-12). With a cap the ``C_j`` are computed
by a truncated polynomial product (degree ``m_eff``). ``order="greedy"`` (descending probability)
needs no integral: ``π(t) = ∏_{s before t} (1 - a_s) · (a_t or 1 if forced)``.

**Rank-dependent proxies** (``observation="candidate_stats"``, whose observation holds the offer
rank) break the independence above. :func:`rank_dependent_probs` then estimates ``π`` by averaging,
over sampled Gumbel orders, the exact commit probabilities given the order (a Rao–Blackwellised
Monte Carlo estimate: unbiased for ``π``; the KL computed from it is a plug-in estimate, slightly
biased upward by Jensen's inequality).

The per-sequence KL is ``Σ_i KL(π(·|x, y<i) || q(·|x, y<i))`` along the proxy's own sampled
response: the exact per-position KL summed over the trajectory, whose mean over responses is an
unbiased estimate of the sequence-level KL of the steered sampler from the unsteered one.
"""

from __future__ import annotations

import itertools
from typing import Any, NamedTuple

import torch

from agents.accept import AcceptFn, accept_model  # noqa: F401  (re-exported)
from proxy_env.engine import candidates
from proxy_env.engine.lm import FrozenLM
from proxy_env.engine.steering import kl_divergence, prefix_observation, steered_probs


def rank_dependent_probs(
    q: torch.Tensor,
    accept: torch.Tensor,
    max_rejections: int | None = None,
    *,
    samples: int = 1024,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Monte Carlo ``π`` (B, K) for a proxy whose accept probability depends on the offer rank.

    Args:
        q: (B, K) unsteered pool probabilities, 0 on padding.
        accept: (B, K, R) probability of accepting candidate ``k`` when offered at rank ``r``.
        max_rejections: the env's rejection cap.
        samples: Gumbel orders drawn per pool.
        generator: torch generator of the orders (reproducibility).
    """
    q = q.double() / q.double().sum(-1, keepdim=True)
    b, k = q.shape
    valid = q > 0
    size = valid.sum(-1)
    m_eff = size - 1 if max_rejections is None else (size - 1).clamp(max=max_rejections)
    u = torch.rand(b, samples, k, dtype=torch.float64, generator=generator, device=q.device).clamp_min(1e-300)
    keys = (q.log()[:, None, :] - torch.log(-torch.log(u))).masked_fill(~valid[:, None, :], float("-inf"))
    perm = keys.argsort(-1, descending=True)  # (B, S, K) token at each rank
    rank = torch.arange(k, device=q.device)
    a = accept.double().clamp(0, 1)[torch.arange(b)[:, None, None], perm, rank[None, None, :]]  # (B, S, K) by rank
    take = torch.where(rank[None, None, :] == m_eff[:, None, None], 1.0, a)
    reach = torch.cat([torch.ones_like(a[..., :1]), (1 - a[..., :-1]).cumprod(-1)], dim=-1)
    by_rank = (reach * take).masked_fill(rank[None, None, :] > m_eff[:, None, None], 0.0)
    out = torch.zeros_like(q)
    out.scatter_add_(1, perm.reshape(b, -1), by_rank.reshape(b, -1))
    return out / samples


def brute_force_probs(q: torch.Tensor, accept: torch.Tensor, max_rejections: int | None = None) -> torch.Tensor:
    """``π`` of one pool (K,) by enumerating every offer order (K! of them): the reference for tests.

    ``accept`` is (K,) (rank-independent) or (K, K) indexed by (candidate, rank).
    """
    q, accept = q.double() / q.double().sum(), accept.double()
    tokens = [i for i in range(len(q)) if q[i] > 0]
    m_eff = len(tokens) - 1 if max_rejections is None else min(max_rejections, len(tokens) - 1)
    out = torch.zeros_like(q)
    for perm in itertools.permutations(tokens):
        prob, left = 1.0, 1.0
        for t in perm[:-1]:  # the last factor is q_t / q_t = 1
            prob *= float(q[t]) / left
            left -= float(q[t])
        reach = 1.0
        for r, t in enumerate(perm[: m_eff + 1]):
            a = float(accept[t] if accept.dim() == 1 else accept[t, r])
            take = 1.0 if r == m_eff else a
            out[t] += prob * reach * take
            reach *= 1 - a
    return out


# ---------------------------------------------------------------------------- along a response
class Trajectory(NamedTuple):
    """Per-response quantities of one steered (or sampled) response, summed over its positions."""

    kl: float  # Σ_i KL(π_i || q_i): from the unsteered sampler (truncated pool); nan if not computable
    kl_untruncated: float  # Σ_i KL(π_i || p_i): from the tempered, untruncated LLM
    nll: float  # Σ_i -log p(y_i) under the frozen LLM at temperature 1, untruncated
    length: int


def _pools(logits: torch.Tensor, top_k: int, top_p: float, temperature: float) -> tuple[candidates.Pool, torch.Tensor]:
    """Pools (T, K) of response positions and their unsteered probabilities q (T, K), 0 on padding."""
    pool = candidates.truncate(logits, top_k, top_p, temperature)
    q = pool.logq.double().exp()
    return pool, q / q.sum(-1, keepdim=True)  # renormalised in float64: always-accept's KL is then 0 to ~1e-12


@torch.no_grad()
def trajectory(
    lm: FrozenLM,
    prompt_ids: list[int],
    response_ids: list[int],
    accept: float | AcceptFn | None,
    *,
    top_k: int,
    top_p: float,
    temperature: float,
    max_rejections: int | None = None,
    order: str = "sample",
    observation: str = "candidate",
    hidden_layer: int = -1,
    step: float = 0.2,
    mc_samples: int = 1024,
    seed: int = 0,
) -> Trajectory:
    """KL of a proxy's steered sampler from the unsteered one along its own response, and the response's NLL.

    One forward of prompt + response gives every position's pool (as the env computes it) and the
    NLL; a second forward feeds every pool candidate of every position at once, each attending to its
    own prefix only (a 4-D attention mask over the first forward's KV cache), which gives the
    observation the proxy would see for it. With a constant ``accept`` the second forward is skipped.
    """
    from transformers import DynamicCache

    p_len, t_len = len(prompt_ids), len(response_ids)
    if t_len == 0:
        return Trajectory(0.0, 0.0, 0.0, 0)
    seq = torch.tensor([prompt_ids + list(response_ids)], device=lm.device)  # (1, L)
    cache = DynamicCache()
    kwargs = lm.cache_kwargs(cache)
    kwargs.pop("logits_to_keep", None)
    prefix = observation == "prefix"
    out = lm.model(input_ids=seq, use_cache=True, output_hidden_states=prefix, **kwargs)
    window = slice(p_len - 1, p_len - 1 + t_len)
    logits = out.logits[0, window].float()  # (T, V)
    target = seq[0, p_len:]
    nll = -float(torch.log_softmax(logits, -1).gather(-1, target[:, None]).sum())
    pool, q = _pools(logits, top_k, top_p, temperature)
    log_z = torch.logsumexp(pool.logprob.masked_fill(q == 0, float("-inf")).double(), -1)  # (T,) log pool mass under p
    if accept is None:
        return Trajectory(float("nan"), float("nan"), nll, t_len)
    rank_dependent = observation == "candidate_stats"
    if isinstance(accept, float) and not rank_dependent:
        a = torch.full_like(q, accept)
    elif prefix:  # what the LLM computed at each position: no second forward
        assert not isinstance(accept, float)  # prefix is not rank_dependent: a float took the branch above
        hidden = out.hidden_states[hidden_layer][0, window]  # (T, H) at each position's last prefix token
        obs = prefix_observation(lm, hidden, pool.tokens, pool.logprob, pool.logq)  # (T, K, d)
        a = torch.as_tensor(accept(obs.reshape(-1, obs.shape[-1]).cpu().numpy()), dtype=torch.float64).reshape(q.shape)
    else:
        obs_hidden = _candidate_hidden(lm, cache, pool, p_len, hidden_layer)  # (T, K, H), zeros on padding
        a = _accept_table(accept, obs_hidden, pool, top_k, rank_dependent)
    if rank_dependent and order == "greedy":  # candidate k is offered at rank k: exact, no sampling
        pi = steered_probs(q, a.diagonal(dim1=1, dim2=2).to(q), max_rejections, order="greedy")
    elif rank_dependent:
        gen = torch.Generator(device="cpu").manual_seed(seed)
        pi = rank_dependent_probs(q.cpu(), a.cpu(), max_rejections, samples=mc_samples, generator=gen).to(q.device)
    else:
        pi = steered_probs(q, a, max_rejections, order=order, step=step)
    kl = kl_divergence(pi, q)  # (T,)
    return Trajectory(float(kl.sum()), float((kl - log_z).sum()), nll, t_len)


def _candidate_hidden(lm: FrozenLM, cache: Any, pool: candidates.Pool, p_len: int, hidden_layer: int) -> torch.Tensor:
    """Hidden states (T, K, H) of every pool candidate appended to its own prefix, in one forward."""
    t_len, k = pool.tokens.shape
    valid = torch.arange(k, device=pool.tokens.device)[None, :] < pool.size[:, None]  # (T, K)
    pos_idx, cand_idx = valid.nonzero(as_tuple=True)  # (N,)
    n, length = len(pos_idx), p_len + t_len
    context = (p_len + pos_idx)[:, None]  # (N, 1): candidate at response position i sees p_len + i tokens
    mask = torch.full((1, 1, n, length + n), float("-inf"), device=lm.device, dtype=lm.dtype)
    cols = torch.arange(length + n, device=lm.device)[None, :]
    visible = (cols < context) | (cols == length + torch.arange(n, device=lm.device)[:, None])  # (N, L+N)
    mask[0, 0] = mask[0, 0].masked_fill(visible, 0.0)
    out = lm.model(
        input_ids=pool.tokens[pos_idx, cand_idx][None, :],
        attention_mask=mask,
        position_ids=context.T,
        output_hidden_states=True,
        use_cache=True,
        **lm.cache_kwargs(cache),
    )
    hidden = out.hidden_states[hidden_layer][0].float()  # (N, H)
    full = hidden.new_zeros(t_len, k, hidden.shape[-1])
    full[pos_idx, cand_idx] = hidden
    return full


def _accept_table(
    accept: float | AcceptFn, hidden: torch.Tensor, pool: candidates.Pool, top_k: int, rank_dependent: bool
) -> torch.Tensor:
    """P(accept) (T, K), or (T, K, K) by offer rank for ``candidate_stats`` observations."""
    t_len, k, h = hidden.shape
    if isinstance(accept, float):
        return torch.full((t_len, k, k) if rank_dependent else (t_len, k), accept, dtype=torch.float64)
    if not rank_dependent:
        return torch.as_tensor(accept(hidden.reshape(-1, h).cpu().numpy()), dtype=torch.float64).reshape(t_len, k)
    table = torch.zeros(t_len, k, k, dtype=torch.float64)
    for r in range(k):  # the observation's last entry is the offer rank / top_k
        stats = torch.stack([pool.logprob, pool.logq, torch.full_like(pool.logprob, r / top_k)], -1).clamp(min=-1e4)
        obs = torch.cat([hidden, stats.to(hidden)], -1).reshape(t_len * k, h + 3)
        table[:, :, r] = torch.as_tensor(accept(obs.cpu().numpy()), dtype=torch.float64).reshape(t_len, k)
    return table


@torch.no_grad()
def finetuned_trajectory(
    tuned: FrozenLM,
    frozen: FrozenLM,
    prompt_ids: list[int],
    response_ids: list[int],
    *,
    top_k: int,
    top_p: float,
    temperature: float,
) -> Trajectory:
    """KL of a fine-tuned model's sampler (its own truncated pool) from the frozen LLM, along its response.

    ``KL(π_ft || q)`` is infinite whenever the fine-tuned pool holds a token outside the frozen
    pool, so both ``kl`` and ``kl_untruncated`` are ``Σ_i KL(π_ft,i || p_i)`` against the frozen
    LLM's tempered, untruncated distribution ``p`` (finite: ``p`` has full support), the same
    reference as a proxy's ``kl_untruncated``.
    """
    seq = torch.tensor([prompt_ids + list(response_ids)], device=frozen.device)
    p_len, t_len = len(prompt_ids), len(response_ids)
    window = slice(p_len - 1, p_len - 1 + t_len)
    frozen_logits = frozen.model(input_ids=seq, use_cache=False).logits[0, window].float()  # (T, V)
    tuned_logits = (
        tuned.model(input_ids=seq.to(tuned.device), use_cache=False).logits[0, window].float().to(frozen.device)
    )
    nll = -float(torch.log_softmax(frozen_logits, -1).gather(-1, seq[0, p_len:, None]).sum())
    pool, pi = _pools(tuned_logits, top_k, top_p, temperature)
    log_p = torch.log_softmax(frozen_logits / temperature, -1).gather(-1, pool.tokens).double()  # (T, K)
    terms = torch.where(pi > 0, pi * (pi.clamp_min(1e-300).log() - log_p), torch.zeros_like(pi))
    kl = float(terms.sum())
    return Trajectory(kl, kl, nll, t_len)
