"""The online pairwise reward (proxy_env/rewards/pairwise.py): a judge compares each response with the unsteered
LLM's (1 win, 0.5 tie, 0 loss), the sampled reference is seeded, and reward="pairwise" builds it in the env.
"""

from __future__ import annotations

import numpy as np
import pytest

from proxy_env.config import EnvConfig
from proxy_env.errors import ConfigError
from proxy_env.rewards import resolve_reward
from proxy_env.rewards.judge import LLMJudge
from proxy_env.rewards.pairwise import PairwiseJudgeReward


def _run(venv, steps=40):
    venv.reset(seed=0)
    out = []
    for _ in range(steps):
        _, reward, term, trunc, info = venv.step(np.ones(4, dtype=np.int64))
        if (term | trunc).any():
            out.append((reward, term | trunc, info["final_info"]))
    return out


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
