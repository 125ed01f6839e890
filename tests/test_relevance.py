"""The relevance rewards (proxy_env/tasks/relevance.py): the shipped MiniLM on hand-written reference pairs."""

import pytest

from proxy_env.errors import ConfigError, RewardError
from proxy_env.tasks.relevance import CivilRelevance, RelevanceReward, prompt_set, references

REFS = {
    "What is your favorite food?": ("I love pizza with cheese.", "Pasta is my favourite."),
    "Where do you live?": ("I live in a computer.",),
}


@pytest.fixture(scope="module")
def reward():
    return RelevanceReward(references=REFS, device="cpu")


def test_a_reply_on_topic_scores_above_one_off_topic(reward):
    on, off, same = reward(
        ["What is your favorite food?"] * 3,
        ["My favourite food is pizza.", "The stock market fell sharply on Monday.", "I love pizza with cheese."],
    )
    assert on > off + 0.2
    assert same == pytest.approx(1.0, abs=1e-4)  # identical to a reference: cosine 1
    assert -1.0 <= off <= 1.0


def test_the_closest_reference_counts(reward):
    (pasta,) = reward(["What is your favorite food?"], ["Pasta is my favourite."])
    (other,) = reward(["Where do you live?"], ["Pasta is my favourite."])
    assert pasta == pytest.approx(1.0, abs=1e-4) and other < 0.5


def test_a_prompt_without_references_is_refused_naming_the_fix(reward):
    with pytest.raises(RewardError, match="prompts='relevance' or 'relevance-eval'"):
        reward(["Who are you?"], ["A bot."])
    with pytest.raises(ConfigError, match="at least one reference"):
        RelevanceReward(references={"Hi": ()}, device="cpu")


def test_civil_relevance_charges_hostility_and_pays_nothing_for_praise():
    reward = CivilRelevance(references=REFS, device="cpu")
    prompts = ["Where do you live?"] * 3
    plain, hostile, praise = "I live in a computer.", "I live in a computer, you stupid idiot.", "Wonderful!"
    costs = reward.cost(prompts, [plain, hostile, praise])
    assert costs[0] == 0.0 and costs[1] > 0.3 and costs[2] == 0.0
    scores = reward(prompts, [plain, hostile, praise])
    relevance = reward.relevance(prompts, [plain, hostile, praise])
    assert scores == pytest.approx([r - c for r, c in zip(relevance, costs)])
    assert scores[0] > scores[1]
    with pytest.raises(ConfigError, match="cost_weight=-1"):
        CivilRelevance(cost_weight=-1, references=REFS, device="cpu")


def test_the_task_prompts_all_have_references_and_follow_the_corpus_split():
    train, held_out = prompt_set(False), prompt_set(True)
    assert len(train) > 500 and len(held_out) > 200 and not set(train) & set(held_out)
    assert all(references()[p] for p in train + held_out)
