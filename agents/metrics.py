"""Metrics of the benchmark: diversity, perplexity, best-of-N KL, and sampling token ids from an LM.

>>> distinct_n([[1, 2, 3], [1, 2, 4]], 1), distinct_n([[1, 2, 3], [1, 2, 4]], 2)
(0.6666666666666666, 0.75)
>>> round(bon_kl_bound(4), 4)
0.6363
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from proxy_env.lm import FrozenLM


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
    """Per-prompt estimates ``log N + (N-1) log F̂(r(y*))`` of best-of-N's KL from its sampler.

    For a continuous reward best-of-N has density ``N F(r(y))^{N-1} q(y)``, so its KL is the mean of
    ``log N + (N-1) log F(r(y*))`` over its own outputs ``y*``. ``F̂`` is the mid-rank of ``r(y*)``
    among ``{r(y*)} ∪`` the ``R`` independent reference rewards of the same prompt, divided by
    ``R + 1`` (ties count half), so ``F̂ ∈ (0, 1]`` and every estimate is finite. Limitations: with
    ties in the reward (VADER scores many neutral texts exactly 0) the true KL is below the
    continuous formula, and a finite ``R`` biases ``log F̂``; the mean over prompts is an estimate,
    not a bound.

    Args:
        best: (P,) the reward of the selected response per prompt.
        reference: (P, R) rewards of independent reference samples of the same prompts.
        n: N.
    """
    best = np.asarray(best, dtype=np.float64)[:, None]
    reference = np.asarray(reference, dtype=np.float64)
    rank = 1.0 + (reference < best).sum(1) + 0.5 * (reference == best).sum(1)  # (P,) 1-based mid-rank
    f_hat = rank / (reference.shape[1] + 1)
    return math.log(n) + (n - 1) * np.log(f_hat)


@torch.no_grad()
def sample_ids(lm: FrozenLM, prompts: Sequence[str], n: int, *, max_new_tokens: int, top_k: int, top_p: float,
               temperature: float, seed: int, batch_size: int) -> list[list[list[int]]]:
    """``n`` sampled responses (token ids, cut after the first EOS, which is kept) per prompt.

    Hugging Face's sampler with the environment's truncation (temperature, top-k, top-p), seeded
    with ``seed`` inside a forked RNG, ``batch_size`` prompts (``batch_size * n`` rows) per call.
    """
    eos = set(lm.eos_token_ids)
    out: list[list[list[int]]] = []
    with torch.random.fork_rng(devices=[lm.device.index or 0] if lm.device.type == "cuda" else []):
        torch.manual_seed(seed)
        for start in range(0, len(prompts), batch_size):
            chunk = list(prompts[start : start + batch_size])
            ids, mask = lm.left_pad([lm.encode_prompt(p) for p in chunk])
            rows = lm.model.generate(
                input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=True, top_k=top_k,
                top_p=top_p, temperature=temperature, num_return_sequences=n, eos_token_id=lm.eos_token_ids,
                pad_token_id=int(lm.tokenizer.pad_token_id),
            )[:, ids.shape[1] :].tolist()  # (len(chunk) * n, T), prompt-major
            for i in range(len(chunk)):
                out.append([_cut(row, eos) for row in rows[i * n : (i + 1) * n]])
    return out


def _cut(row: list[int], eos: set[int]) -> list[int]:
    for i, token in enumerate(row):
        if token in eos:
            return row[: i + 1]
    return row


@torch.no_grad()
def response_nll(lm: FrozenLM, prompts: Sequence[str], responses: Sequence[Sequence[int]], *,
                 batch_size: int = 16) -> np.ndarray:
    """Summed negative log-likelihood (P,) of each response's tokens under ``lm`` at temperature 1, untruncated.

    ``exp(nll / len)`` is the response's perplexity under the frozen LLM.
    """
    out = np.zeros(len(responses))
    for start in range(0, len(responses), batch_size):
        idx = range(start, min(start + batch_size, len(responses)))
        prompt_ids = [lm.encode_prompt(prompts[i]) for i in idx]
        seqs = [p + list(responses[i]) for p, i in zip(prompt_ids, idx)]
        ids, mask = lm.left_pad(seqs)  # (b, W)
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = lm.model(input_ids=ids, attention_mask=mask, position_ids=position_ids, use_cache=False).logits
        logp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, ids[:, 1:, None]).squeeze(-1)  # (b, W-1)
        for row, i in enumerate(idx):
            t = len(responses[i])
            out[i] = -float(logp[row, logp.shape[1] - t :].sum()) if t else 0.0
    return out
