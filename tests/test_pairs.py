"""Building preference pairs (feedback/pairs.py): from a reward or a judge, seeded, with the perplexity of each
sampled response.
"""

from __future__ import annotations

import pytest

from feedback import RewardFeedback, build_preferences
from proxy_env.rewards.judge import LLMJudge
from tests.conftest import PROMPTS, ScriptedLM, length_reward


def test_build_with_reward_source(tiny):
    result = build_preferences(
        tiny, PROMPTS, RewardFeedback(length_reward), pairs_per_prompt=2, max_new_tokens=6, seed=1
    )
    s = result.summary
    assert s.sampled == 8 and s.kept == len(result.pairs) == 8 - s.identical - s.ties
    for p in result.pairs:
        assert (
            len(p.chosen) > len(p.rejected)
            and p.margin == len(p.chosen) - len(p.rejected)
            and p.source == "reward:length_reward"
        )
        assert p.ppl_chosen is None or p.ppl_chosen > 1.0
    again = build_preferences(
        tiny, PROMPTS, RewardFeedback(length_reward), pairs_per_prompt=2, max_new_tokens=6, seed=1
    )
    assert again.pairs == result.pairs  # seeded


def test_build_with_judge_drops_failures(tiny):
    judge = LLMJudge(ScriptedLM(tiny.tokenizer, ["2", "???"]), mode="generate", randomize_order=False)
    result = build_preferences(tiny, PROMPTS, judge, max_new_tokens=6, seed=0)
    s = result.summary
    assert s.parse_failures >= 1 and s.parse_failure_rate == pytest.approx(s.parse_failures / (s.sampled - s.identical))
    assert s.kept == s.sampled - s.identical - s.parse_failures and s.position1_rate == 0.0


def test_sampled_perplexity_matches_a_separate_forward(tiny, monkeypatch):
    import math

    import torch

    from feedback.pairs import sample_responses

    sampled_ids = []  # the exact token ids of each response (decode sees them, EOS excluded)
    real_decode = tiny.decode
    monkeypatch.setattr(tiny, "decode", lambda ids: sampled_ids.append(list(ids)) or real_decode(ids))
    samples = sample_responses(tiny, PROMPTS[:2], n=3, max_new_tokens=6, seed=0)
    got = [v for vs in samples.ppl for v in vs]
    prompts = [p for p in PROMPTS[:2] for _ in range(3)]
    assert len(sampled_ids) == len(got) == 6 and sum(len(ids) > 0 for ids in sampled_ids) >= 3
    for value, prompt, ids in zip(got, prompts, sampled_ids):
        if not ids:  # EOS first: nothing to measure
            assert math.isnan(value)
            continue
        p = tiny.encode_prompt(prompt)
        logits = tiny.forward_full(p + ids).logits  # (T, V): a separate, uncached forward of the same tokens
        nll = torch.nn.functional.cross_entropy(logits[len(p) - 1 : -1], torch.tensor(ids))
        assert value == pytest.approx(math.exp(float(nll)), rel=1e-4)
