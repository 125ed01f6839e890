"""Metrics of the benchmark: diversity, perplexity, best-of-N KL, and sampling token ids from an LM.

>>> distinct_n([[1, 2, 3], [1, 2, 4]], 1), distinct_n([[1, 2, 3], [1, 2, 4]], 2)
(0.6666666666666666, 0.75)
>>> round(bon_kl_bound(4), 4)
0.6363
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch

from proxy_env.engine.lm import FrozenLM


def distinct_n(responses: Sequence[Sequence[int]], n: int) -> float:
    """Unique n-grams / total n-grams over all ``responses`` (token ids), pooled; 0 when there are none.

    Pooled over the agent's responses, so it has no per-response spread and the table gives it no CI.
    """
    grams = [tuple(r[i : i + n]) for r in responses for i in range(len(r) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def bon_kl_bound(n: int) -> float:
    """``log N - (N-1)/N``: the KL of best-of-N from its sampler for a continuous reward (an upper bound in general)."""
    return math.log(n) - (n - 1) / n


def bon_kl_empirical(best: np.ndarray, reference: np.ndarray, n: int) -> np.ndarray:
    """Per-prompt estimates of best-of-N's KL from its sampler, ``log (π/q)(y*)`` at its own outputs ``y*``.

    With reward CDF ``F`` under the sampler and ``F⁻`` its left limit, best-of-N (ties broken
    uniformly, which is what taking the first maximum of i.i.d. samples amounts to) has density
    ``π(y) = q(y) (F^N - F⁻^N) / (F - F⁻)`` at ``r = r(y)``. Where no reference reward ties ``r(y*)``
    the reward is treated as continuous there: ``log N + (N-1) log F̂`` with ``F̂`` the rank of
    ``r(y*)`` among ``{r(y*)} ∪`` the ``R`` reference rewards over ``R + 1`` (so ``F̂ ∈ (0, 1]``; a
    response above every reference scores ``log N``). Where some tie (VADER scores many neutral
    texts exactly 0), the tie formula is used with ``F̂ = (#≤ + 1) / (R + 1)`` and
    ``F̂⁻ = #< / (R + 1)``; a prompt whose samples all tie gets ``π = q``, KL 0. Every estimate is
    finite; the mean over prompts is a plug-in estimate (a finite ``R`` biases it), not a bound.

    Args:
        best: (P,) the reward of the selected response per prompt.
        reference: (P, R) rewards of independent reference samples of the same prompts.
        n: N.
    """
    best = np.asarray(best, dtype=np.float64)[:, None]
    reference = np.asarray(reference, dtype=np.float64)
    r1 = reference.shape[1] + 1
    below, ties = (reference < best).sum(1), (reference == best).sum(1)  # (P,)
    continuous = math.log(n) + (n - 1) * np.log((below + 1) / r1)
    lo, hi = below / r1, (below + ties + 1) / r1  # F̂⁻, F̂
    tied = np.log((hi**n - lo**n) / (hi - lo))
    return np.where(ties > 0, tied, continuous)


class Samples(NamedTuple):
    """``n`` sampled responses per prompt and what the LLM said about them while sampling."""

    ids: list[list[list[int]]]  # [prompt][sample] token ids, cut after the first EOS (kept)
    nll: np.ndarray  # (P, n) summed NLL of each response at temperature 1, untruncated (as response_nll)
    log_ratio: (
        np.ndarray
    )  # (P, n) Σ_t log q_t/p_t at the sampled tokens: pool against tempered LLM (as truncation_log_ratio)


def sample_ids(
    lm: FrozenLM,
    prompts: Sequence[str],
    n: int,
    *,
    max_new_tokens: int,
    top_k: int,
    top_p: float,
    temperature: float,
    seed: int,
    batch_size: int,
) -> list[list[list[int]]]:
    """``n`` sampled responses (token ids, cut after the first EOS, which is kept) per prompt: :func:`sample` without its statistics."""
    return sample(
        lm,
        prompts,
        n,
        max_new_tokens=max_new_tokens,
        top_k=top_k,
        top_p=top_p,
        temperature=temperature,
        seed=seed,
        batch_size=batch_size,
    ).ids


@torch.no_grad()
def sample(
    lm: FrozenLM,
    prompts: Sequence[str],
    n: int,
    *,
    max_new_tokens: int,
    top_k: int,
    top_p: float,
    temperature: float,
    seed: int,
    batch_size: int,
    on_step: Callable[..., None] | None = None,
    hidden_layer: int = -1,
    prefixes: Sequence[Sequence[int]] | None = None,
) -> Samples:
    """``n`` responses per prompt from the environment's sampler: the tempered LLM truncated to its pool.

    Each token is drawn from :func:`proxy_env.engine.candidates.truncate`'s pool (the support of
    Hugging Face's temperature/top-k/top-p warpers, ties included) with the pool's renormalised
    probabilities, the distribution HF's ``generate(do_sample=True)`` draws from, seeded with ``seed``
    inside a forked RNG. Cheaper than ``generate``: each prompt is prefilled once and its cache
    repeated ``n`` times, and the draw is over the pool's few columns, not the whole vocabulary. The
    logits of the sampled tokens also give each response's NLL and ``Σ log q/p``, so no second forward
    is needed for them. ``batch_size`` prompts (``batch_size * n`` rows) per call.

    ``on_step(start, t, hidden, pool, col)``, if given, sees every draw as it happens: ``start`` the first prompt of
    the call, ``t`` the step, ``hidden`` (R, H) the state each row drew from (layer ``hidden_layer`` of the cached
    forward that gave the logits: what the env's ``prefix`` observation holds), ``pool`` the truncated pool, ``col``
    (R, 1) the column drawn (rows are prompt-major; a row past its EOS keeps drawing and is cut afterwards).
    ``prefixes`` (one token list per prompt) continue responses already begun: each prompt's rows start after it.
    """
    from transformers import DynamicCache

    from proxy_env.engine.candidates import truncate

    eos_set = set(lm.eos_token_ids)
    eos = torch.tensor(sorted(eos_set), device=lm.device)
    ids_out: list[list[list[int]]] = []
    nll = np.zeros((len(prompts), n))
    log_ratio = np.zeros((len(prompts), n))
    with torch.random.fork_rng(devices=[lm.device.index or 0] if lm.device.type == "cuda" else []):
        torch.manual_seed(seed)
        for start in range(0, len(prompts), batch_size):
            chunk = list(prompts[start : start + batch_size])
            begun = prefixes[start : start + batch_size] if prefixes is not None else [()] * len(chunk)
            ids, mask = lm.left_pad([lm.encode_prompt(p) + list(b) for p, b in zip(chunk, begun)])  # (b, W)
            cache = DynamicCache()
            kwargs = lm.cache_kwargs(cache)
            out = lm.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                use_cache=True,
                output_hidden_states=on_step is not None,
                **kwargs,
            )
            if on_step is not None:
                hidden = out.hidden_states[hidden_layer][:, -1].repeat_interleave(n, 0)
            cache.batch_repeat_interleave(n)  # (b * n) rows, prompt-major: one prefill per prompt
            logits = out.logits[:, -1].float().repeat_interleave(n, 0)  # (R, V)
            mask = mask.repeat_interleave(n, 0)
            position = mask.sum(-1, keepdim=True)  # (R, 1) the next token's position id
            alive = torch.ones(len(logits), dtype=torch.bool, device=lm.device)
            sums = torch.zeros(2, len(logits), dtype=torch.float64, device=lm.device)  # nll, log q/p
            tokens = []
            for t in range(max_new_tokens):
                pool = truncate(logits, top_k, top_p, temperature)
                col = torch.multinomial(pool.logq.exp(), 1)  # (R, 1)
                token = pool.tokens.gather(1, col)  # (R, 1)
                if on_step is not None:
                    on_step(start, t, hidden, pool, col)
                step_nll = torch.logsumexp(logits, -1) - logits.gather(1, token).squeeze(1)
                step_ratio = (pool.logq.gather(1, col) - pool.logprob.gather(1, col)).squeeze(1)
                sums += torch.stack([step_nll, step_ratio]).double() * alive
                tokens.append(token)
                alive &= ~torch.isin(token.squeeze(1), eos)
                if t == max_new_tokens - 1 or not bool(alive.any()):
                    break
                mask = torch.cat([mask, torch.ones_like(token)], 1)
                out = lm.model(
                    input_ids=token,
                    attention_mask=mask,
                    position_ids=position,
                    use_cache=True,
                    output_hidden_states=on_step is not None,
                    **kwargs,
                )
                logits, position = out.logits[:, -1].float(), position + 1
                if on_step is not None:
                    hidden = out.hidden_states[hidden_layer][:, -1]
            rows = torch.cat(tokens, 1).tolist()
            totals = sums.cpu().numpy().reshape(2, len(chunk), n)
            nll[start : start + len(chunk)], log_ratio[start : start + len(chunk)] = totals
            for i in range(len(chunk)):
                ids_out.append([_cut(row, eos_set) for row in rows[i * n : (i + 1) * n]])
    return Samples(ids_out, nll, log_ratio)


def _cut(row: list[int], eos: set[int]) -> list[int]:
    for i, token in enumerate(row):
        if token in eos:
            return row[: i + 1]
    return row


@torch.no_grad()
def response_nll(
    lm: FrozenLM, prompts: Sequence[str], responses: Sequence[Sequence[int]], *, batch_size: int = 16
) -> np.ndarray:
    """Summed negative log-likelihood (P,) of each response's tokens under ``lm`` at temperature 1, untruncated.

    ``exp(nll / len)`` is the response's perplexity under the frozen LLM.
    """
    out = np.zeros(len(responses))
    for start in range(0, len(responses), batch_size):
        idx = range(start, min(start + batch_size, len(responses)))
        prompt_ids = [lm.encode_prompt(prompts[i]) for i in idx]
        seqs = [p + list(responses[i]) for p, i in zip(prompt_ids, idx)]
        fwd = lm.forward_padded(seqs)  # logits (b, W, V) float32, ids (b, W)
        logp = torch.log_softmax(fwd.logits[:, :-1], -1).gather(-1, fwd.ids[:, 1:, None]).squeeze(-1)  # (b, W-1)
        for row, i in enumerate(idx):
            t = len(responses[i])
            out[i] = -float(logp[row, logp.shape[1] - t :].sum()) if t else 0.0
    return out


@torch.no_grad()
def truncation_log_ratio(
    lm: FrozenLM,
    prompts: Sequence[str],
    responses: Sequence[Sequence[int]],
    *,
    top_k: int,
    top_p: float,
    temperature: float,
    batch_size: int = 16,
) -> np.ndarray:
    """``Σ_t log q_t(y_t) / p_t(y_t)`` (P,) along each response: the truncated pool ``q`` against the tempered, untruncated LLM ``p``.

    For a sampler that only draws inside the pool (best-of-N), ``KL(π || p) = KL(π || q) + E_π[log q/p]``,
    so adding this at the sampled response to a per-prompt estimate of ``KL(π || q)`` estimates the
    KL from the untruncated LLM that fine-tuned models are measured with. A token outside its pool
    gives ``inf``.
    """
    from proxy_env.engine import candidates

    out = np.zeros(len(responses))
    for start in range(0, len(responses), batch_size):
        idx = range(start, min(start + batch_size, len(responses)))
        seqs = [lm.encode_prompt(prompts[i]) + list(responses[i]) for i in idx]
        fwd = lm.forward_padded(seqs)  # logits (b, W, V), ids (b, W), left-padded: responses end at the right
        width = fwd.ids.shape[1]
        for row, i in enumerate(idx):
            t = len(responses[i])
            if t == 0:
                continue
            pool = candidates.truncate(fwd.logits[row, width - t - 1 : width - 1], top_k, top_p, temperature)  # (t, K)
            match = pool.tokens == fwd.ids[row, width - t :, None]  # (t, K): the response token's pool column
            ratio = torch.where(match, pool.logq - pool.logprob, torch.zeros_like(pool.logprob)).sum(-1)  # (t,)
            out[i] = float(ratio.double().sum()) if bool(match.any(-1).all()) else math.inf
    return out
