"""Reward shaping in the env (running normalisation) and the online pairwise reward."""

from __future__ import annotations

import numpy as np
import pytest

from feedback import LLMJudge, PairwiseJudgeReward
from proxy_env.config import EnvConfig
from proxy_env.errors import ConfigError, ConfigTypeError
from proxy_env.rewards import RunningMeanStd, resolve_reward

PROMPTS = ["Hello!", "How are you today?", "Tell me about the weather.", "What is your favourite book?"]


def test_running_mean_std_matches_numpy():
    values = np.random.default_rng(0).normal(3.0, 2.0, 257)
    stats = RunningMeanStd()
    assert stats.std == 1.0  # nothing to scale by yet
    for chunk in np.array_split(values, 7):
        stats.update(chunk)
    assert (
        stats.count == 257
        and stats.mean == pytest.approx(values.mean())
        and stats.std == pytest.approx(values.std(ddof=1))
    )


def test_reward_normalize_validated():
    with pytest.raises(ConfigTypeError, match="reward_normalize"):
        EnvConfig(reward_normalize="yes")


def _run(venv, steps=40):
    venv.reset(seed=0)
    out = []
    for _ in range(steps):
        _, reward, term, trunc, info = venv.step(np.ones(4, dtype=np.int64))
        if (term | trunc).any():
            out.append((reward, term | trunc, info["final_info"]))
    return out


def test_reward_normalize_standardises_terminal_rewards(make_venv):
    length = lambda prompts, responses: [float(len(r)) for r in responses]  # noqa: E731
    raw_env, norm_env = make_venv(reward=length), make_venv(reward=length, reward_normalize=True)
    raw, norm = _run(raw_env), _run(norm_env)
    stats = RunningMeanStd()
    for (r_raw, ended, _), (r_norm, _, info) in zip(raw, norm):
        stats.update(r_raw[ended])
        expected = (r_raw[ended] - stats.mean) / stats.std
        assert r_norm[ended] == pytest.approx(expected) and info["reward_normalized"][ended] == pytest.approx(expected)
    assert norm_env.unwrapped.reward_stats.count == stats.count > 4
    assert "reward_normalized" not in raw[0][2]


class FixedJudge(LLMJudge):
    """Prefers the longer reply, whatever the order (a judge with no position bias)."""

    def __init__(self, lm):
        super().__init__(lm, mode="logits")

    def prob_first(self, prompts, first, second):
        return [0.9 if len(a) > len(b) else 0.1 if len(a) < len(b) else 0.5 for a, b in zip(first, second)]


def test_pairwise_reward_win_tie_loss(tiny):
    reward = PairwiseJudgeReward(tiny, FixedJudge(tiny), max_new_tokens=6)
    reference = reward.references(["Hello!"])[0]
    values = reward(["Hello!"] * 3, [reference + " and more words", reference, ""])
    assert values == [1.0, 0.5, 0.0 if reference else 0.5]
    assert reward.cache == {"Hello!": reference}  # greedy reference generated once


def test_pairwise_sampled_reference_is_seeded(tiny):
    import torch

    def refs(seed):
        reward = PairwiseJudgeReward(tiny, FixedJudge(tiny), reference="sample", max_new_tokens=8, seed=seed)
        return [reward.references(["Hello!", "Hi"]) for _ in range(3)]

    torch.manual_seed(7)
    expected = torch.rand(2)
    torch.manual_seed(7)
    first = refs(0)
    assert torch.equal(torch.rand(2), expected)  # the caller's global RNG is untouched
    assert refs(0) == first and refs(1) != first  # reproducible for a seed, different across seeds
    assert len({tuple(r) for r in first}) > 1  # successive calls draw fresh samples


def test_pairwise_env_mode(make_venv, tiny):
    fn = resolve_reward("pairwise", lm=tiny, config=EnvConfig(max_new_tokens=6))
    assert isinstance(fn, PairwiseJudgeReward) and fn.sampling["max_new_tokens"] == 6
    with pytest.raises(ConfigError, match="needs the frozen LLM"):
        resolve_reward("pairwise")
    episodes = _run(make_venv(reward="pairwise", max_new_tokens=6), steps=30)
    values = np.concatenate([r[e] for r, e, _ in episodes])
    assert len(values) > 0 and set(values.tolist()) <= {0.0, 0.5, 1.0}
