"""Feedback sources: reward differences, the LLM judge (logits, parsed replies, order), the pair builder."""

from __future__ import annotations

import pytest

from feedback import LLMJudge, RewardFeedback, build_preferences
from feedback.records import PreferencePair
from feedback.sources import judge_agreement
from proxy_env.errors import ConfigError
from proxy_env.rewards.judge import check_template

PROMPTS = ["Hello!", "How are you today?", "Tell me about the weather.", "What is your favourite book?"]


def length_reward(prompts, responses):
    return [float(len(r)) for r in responses]


class ScriptedLM:
    """A judge LM stand-in: the real tokenizer, canned replies in ``generate``."""

    name = "scripted"

    def __init__(self, tokenizer, replies):
        self.tokenizer, self.replies, self.seen = tokenizer, list(replies), []

    def generate(self, prompts, *, max_new_tokens, **kwargs):
        self.seen.extend(prompts)
        return [self.replies[(len(self.seen) - len(prompts) + i) % len(self.replies)] for i in range(len(prompts))]


def test_reward_feedback_margin_and_ties():
    labels = RewardFeedback(length_reward).label(["q"] * 3, ["aaa", "a", "ab"], ["a", "aaaa", "cd"])
    assert [(lab.first_wins, lab.margin) for lab in labels] == [(True, 2.0), (False, 3.0), (None, 0.0)]
    assert [
        lab.first_wins
        for lab in RewardFeedback(length_reward, tie_tolerance=2.5).label(["q"] * 2, ["aaa", "a"], ["a", "aaaa"])
    ] == [None, False]


def test_judge_logits_mode_probabilities(tiny):
    judge = LLMJudge(tiny, seed=0)
    probs = judge.prob_first(PROMPTS, ["yes", "great", "ok", "fine"], ["no", "bad", "meh", "sure"])
    assert all(0.0 < p < 1.0 for p in probs)
    # batched equals one at a time
    assert probs[1] == pytest.approx(judge.prob_first(PROMPTS[1:2], ["great"], ["bad"])[0], abs=1e-5)
    labels = judge.label(PROMPTS, ["yes", "great", "ok", "fine"], ["no", "bad", "meh", "sure"])
    assert all(lab.margin is not None and 0.0 <= lab.margin <= 1.0 and not lab.failed for lab in labels)
    assert judge.stats.judgments == 4 and judge.stats.parse_failures == 0


class SplitDigits:
    """A tokenizer that encodes every text as two tokens (as some tokenizers encode digits)."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [7, 8]}


def test_generate_mode_accepts_any_tokenizer():
    judge = LLMJudge(ScriptedLM(SplitDigits(), ["2"]), mode="generate", randomize_order=False)
    assert [lab.first_wins for lab in judge.label(["q"], ["a"], ["b"])] == [False]
    with pytest.raises(ConfigError, match="mode='logits' needs one"):
        LLMJudge(ScriptedLM(SplitDigits(), ["2"]), mode="logits")


@pytest.mark.parametrize(
    "reply, first_wins",
    [
        ("Answer: 2.", False),
        ("2", False),
        ("1", True),
        ("(1) is better", True),
        ("10/10 for reply 2", False),
        ("10/10", None),
        ("12 points", None),
        ("Reply 21", None),
    ],
    ids=["answer-2-dot", "bare-2", "bare-1", "paren-1", "score-then-2", "score-only", "twelve", "twenty-one"],
)
def test_generate_mode_parses_lone_digits(tiny, reply, first_wins):
    judge = LLMJudge(ScriptedLM(tiny.tokenizer, [reply]), mode="generate", randomize_order=False)
    label = judge.label(["q"], ["a"], ["b"])[0]
    assert label.first_wins == first_wins and label.failed == (first_wins is None)


def test_judge_parse_failures_are_counted(tiny):
    lm = ScriptedLM(tiny.tokenizer, ["1", "I pick 2.", "neither"])
    judge = LLMJudge(lm, mode="generate", randomize_order=False)
    labels = judge.label(["q"] * 3, ["a", "b", "c"], ["x", "y", "z"])
    assert [(lab.first_wins, lab.failed) for lab in labels] == [(True, False), (False, False), (None, True)]
    assert judge.stats.parse_failure_rate == pytest.approx(1 / 3)
    assert "Reply 1: a" in lm.seen[0] and "Reply 2: x" in lm.seen[0]


def test_random_order_cancels_position_bias(tiny):
    lm = ScriptedLM(tiny.tokenizer, ["1"])  # always picks the response shown first
    judge = LLMJudge(lm, mode="generate", seed=3)
    labels = judge.label(["q"] * 200, ["a"] * 200, ["b"] * 200)
    wins = sum(lab.first_wins for lab in labels)
    assert 70 < wins < 130  # the bias is spread over both responses, not given to ``first``
    assert judge.stats.position1_rate == 1.0
    shown_first_is_a = ["Reply 1: a" in text for text in lm.seen]
    assert [lab.first_wins for lab in labels] == shown_first_is_a  # mapped back to the original order


def test_judge_agreement_with_the_labelling_source(tiny):
    pairs = [
        PreferencePair("q", f"great {i}", f"awful {i}", "reward:vader", 0.1 if i % 4 == 0 else 0.5) for i in range(100)
    ]

    class Lexical(ScriptedLM):  # answers with the reply that says "great"
        def generate(self, prompts, *, max_new_tokens, **kwargs):
            return ["1" if "Reply 1: great" in text else "2" for text in prompts]

    good = judge_agreement(LLMJudge(Lexical(tiny.tokenizer, []), mode="generate", seed=0), pairs)
    assert (
        good["agreement"] == good["agreement_margin"] == 1.0 and good["decided"] == 100 and good["pairs_margin"] == 75
    )
    assert 0.35 < good["position1_rate"] < 0.65  # the order was randomised
    biased = judge_agreement(LLMJudge(ScriptedLM(tiny.tokenizer, ["1"]), mode="generate", seed=0), pairs)
    assert biased["position1_rate"] == 1.0 and 0.35 < biased["agreement"] < 0.65  # shown-first bias is chance agreement
    contrary = judge_agreement(
        LLMJudge(ScriptedLM(tiny.tokenizer, ["2", "??"]), mode="generate", randomize_order=False), pairs
    )
    assert contrary["agreement"] == 0.0 and contrary["decided"] == 50 and contrary["parse_failure_rate"] == 0.5


def test_template_is_validated():
    with pytest.raises(ConfigError, match="must contain exactly"):
        check_template("Which is better? {response_1} or {response_2}")
    with pytest.raises(ConfigError, match="must contain exactly"):
        check_template("{prompt} {response_1} {response_2} {extra}")


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
