"""Feedback sources (feedback/sources.py): reward differences as labels, and a judge's agreement with the source
that labelled the pairs.
"""

from __future__ import annotations

from feedback import RewardFeedback
from feedback.records import PreferencePair
from feedback.sources import judge_agreement
from proxy_env.rewards.judge import LLMJudge
from tests.conftest import ScriptedLM, length_reward


def test_reward_feedback_margin_and_ties():
    labels = RewardFeedback(length_reward).label(["q"] * 3, ["aaa", "a", "ab"], ["a", "aaaa", "cd"])
    assert [(lab.first_wins, lab.margin) for lab in labels] == [(True, 2.0), (False, 3.0), (None, 0.0)]
    assert [
        lab.first_wins
        for lab in RewardFeedback(length_reward, tie_tolerance=2.5).label(["q"] * 2, ["aaa", "a"], ["a", "aaaa"])
    ] == [None, False]


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
