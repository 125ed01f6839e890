"""Perplexity under the target LLM (batched = one at a time) and the perplexity filter."""

from __future__ import annotations

import math

import pytest
import torch

from feedback.perplexity import filter_by_perplexity, perplexities
from feedback.records import PreferencePair
from proxy_env.errors import ConfigError


def _reference(lm, prompt, response):
    p = lm.encode_prompt(prompt)
    r = lm.tokenizer(response, add_special_tokens=False)["input_ids"]
    logits = lm.forward_full(p + r).logits  # (T, V)
    nll = torch.nn.functional.cross_entropy(logits[len(p) - 1 : -1], torch.tensor(r))
    return math.exp(float(nll))


def test_batched_matches_reference(tiny):
    prompts = ["Hello!", "How are you today my friend?", "Hi"]
    responses = ["I am fine, thanks.", "Good", "What a lovely day it is today, truly."]
    got = perplexities(tiny, prompts, responses, batch_size=3)
    for value, p, r in zip(got, prompts, responses):
        assert value == pytest.approx(_reference(tiny, p, r), rel=1e-4)


def test_empty_response_is_nan(tiny):
    values = perplexities(tiny, ["Hi", "Hi"], ["", "ok"])
    assert math.isnan(values[0]) and values[1] > 1.0


def _pairs(ppls):
    return [PreferencePair("p", f"c{i}", f"r{i}", "s", 1.0, a, b) for i, (a, b) in enumerate(ppls)]


def test_filter_quantile_and_threshold():
    pairs = _pairs([(2.0, 3.0), (5.0, 50.0), (4.0, None), (1.0, 6.0)])
    kept = filter_by_perplexity(pairs, max_ppl=6.0)
    assert [p.chosen for p in kept.pairs] == ["c0", "c3"] and kept.dropped == 2 and kept.threshold == 6.0
    q = filter_by_perplexity(pairs, quantile=0.5)  # median of [2, 3, 5, 50, 4, 1, 6] = 4
    assert q.threshold == 4.0 and [p.chosen for p in q.pairs] == ["c0"]
    assert filter_by_perplexity(pairs).pairs == pairs  # no cut: everything kept, even a missing ppl
    assert filter_by_perplexity(pairs, quantile=0.5, max_ppl=2.5).threshold == 2.5


def test_filter_errors():
    with pytest.raises(ConfigError, match="quantile"):
        filter_by_perplexity(_pairs([(1.0, 2.0)]), quantile=1.5)
    with pytest.raises(ConfigError, match="no pair has perplexities"):
        filter_by_perplexity(_pairs([(None, None)]), max_ppl=3.0)
