"""The LLM judge (proxy_env/rewards/judge.py): probabilities from logits, replies parsed whatever the tokenizer,
parse failures counted, the order randomised against position bias, the template checked.
"""

from __future__ import annotations

import pytest

from proxy_env.errors import ConfigError
from proxy_env.rewards.judge import LLMJudge, check_template
from tests.conftest import PROMPTS, ScriptedLM


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


def test_template_is_validated():
    with pytest.raises(ConfigError, match="must contain exactly"):
        check_template("Which is better? {response_1} or {response_2}")
    with pytest.raises(ConfigError, match="must contain exactly"):
        check_template("{prompt} {response_1} {response_2} {extra}")
