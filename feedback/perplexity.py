"""Perplexity of responses under the target LLM, and the filter that keeps in-distribution pairs.

The perplexity of a response is ``exp(mean token NLL)`` of its tokens given the chat-formatted
prompt, under the untruncated, untempered LLM. One batched forward per chunk over left-padded
``prompt + response`` sequences (:meth:`~proxy_env.engine.lm.FrozenLM.forward_padded`).

EOS convention (feedback): the end-of-sequence token is *not* counted. A response here is its text,
re-encoded without special tokens, so it holds no EOS; the perplexities recorded while sampling
(:func:`feedback.pairs.sample_responses`) likewise stop before the EOS that ended a
response. The two agree, and a pair's perplexity measures only the words the judge or reward sees.
(The benchmark's ``agents.eval.metrics.response_nll`` differs: it counts the EOS of a finished response.) Pairs whose responses the LLM finds unlikely (high perplexity) are
off the distribution of the model being aligned; :func:`filter_by_perplexity` drops them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from feedback.records import PreferencePair
from proxy_env.errors import ConfigError


@torch.no_grad()
def perplexities(lm: Any, prompts: Sequence[str], responses: Sequence[str], *, batch_size: int = 8) -> list[float]:
    """Perplexity of each response given its prompt under ``lm`` (a FrozenLM); NaN for an empty response."""
    if len(prompts) != len(responses):
        raise ConfigError(f"got {len(prompts)} prompts for {len(responses)} responses; pass one prompt per response.")
    out: list[float] = []
    for start in range(0, len(responses), batch_size):
        chunk_p, chunk_r = prompts[start : start + batch_size], responses[start : start + batch_size]
        prompt_ids = [lm.encode_prompt(p) for p in chunk_p]
        response_ids = [list(lm.tokenizer(r, add_special_tokens=False)["input_ids"]) for r in chunk_r]
        out.extend(_chunk(lm, prompt_ids, response_ids))
    return out


def _chunk(lm: Any, prompt_ids: list[list[int]], response_ids: list[list[int]]) -> list[float]:
    out = lm.forward_padded([p + r for p, r in zip(prompt_ids, response_ids)])
    logits, ids = out.logits, out.ids  # (n, W, V) float32, (n, W)
    width = ids.shape[1]
    result = []
    for row, response in enumerate(response_ids):
        n = len(response)
        if n == 0:
            result.append(float("nan"))
            continue
        # the logits at position t predict token t + 1: the response tokens are the last n of the row
        pred = logits[row, width - n - 1 : width - 1]  # (n, V)
        nll = F.cross_entropy(pred, ids[row, width - n :], reduction="mean")
        result.append(float(math.exp(min(float(nll), 80.0))))
    return result


class PerplexityFilter(NamedTuple):
    """What :func:`filter_by_perplexity` kept and why."""

    pairs: list[PreferencePair]
    threshold: float  # the perplexity cut used (inf: none)
    dropped: int


def filter_by_perplexity(
    pairs: Sequence[PreferencePair], *, quantile: float | None = None, max_ppl: float | None = None
) -> PerplexityFilter:
    """Keep pairs whose two responses both have perplexity <= the cut.

    Args:
        pairs: records with ``ppl_chosen`` and ``ppl_rejected`` set.
        quantile: the cut is this quantile (in (0, 1]) of all responses' perplexities.
        max_ppl: an absolute cut; with ``quantile`` too, the lower of the two is used.

    Pairs with a missing perplexity (an empty response) are dropped whenever a cut is set.
    """
    if quantile is not None and not 0.0 < quantile <= 1.0:
        raise ConfigError(f"quantile={quantile!r} must be in (0, 1] (e.g. 0.9 keeps pairs below the 90th percentile).")
    if max_ppl is not None and not max_ppl > 0:
        raise ConfigError(f"max_ppl={max_ppl!r} must be > 0.")
    if (quantile is None and max_ppl is None) or not pairs:
        return PerplexityFilter(list(pairs), math.inf, 0)
    values = np.array([v for p in pairs for v in (p.ppl_chosen, p.ppl_rejected) if v is not None and math.isfinite(v)])
    if len(values) == 0:
        raise ConfigError(
            "no pair has perplexities recorded; build the pairs with an LLM (ppl_chosen/ppl_rejected) first."
        )
    cut = math.inf if max_ppl is None else float(max_ppl)
    if quantile is not None:
        cut = min(cut, float(np.quantile(values, quantile)))

    def ok(value: float | None) -> bool:
        return value is not None and math.isfinite(value) and value <= cut

    kept = [p for p in pairs if ok(p.ppl_chosen) and ok(p.ppl_rejected)]
    return PerplexityFilter(kept, cut, len(pairs) - len(kept))
