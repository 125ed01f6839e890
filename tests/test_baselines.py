"""Non-learning agents and best-of-N (agents/baselines.py), run through the SB3 adapter."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.baselines import AlwaysAccept, RandomReject, best_of_n
from agents.callbacks import evaluate, run_episodes
from proxy_env.adapters.sb3 import SB3VecEnv
from proxy_env.errors import ConfigError, RewardError
from tests.conftest import PROMPTS


def _length(prompts, responses):
    return [float(len(r)) for r in responses]


@pytest.fixture
def env(make_venv):
    env = SB3VecEnv(make_venv(4, reward=_length, top_k=5, top_p=1.0))
    env.seed(0)
    return env


def test_always_accept_never_rejects(env):
    infos = run_episodes(AlwaysAccept(), env, 8)
    assert len(infos) == 8
    assert all(i["num_rejections"] == 0 and i["rejection_rate"] == 0.0 for i in infos)
    assert all(i["decisions"] == i["response_length"] for i in infos)  # full pools: nothing is forced


@pytest.mark.parametrize("p", [0.0, 0.3, 1.0], ids=["p0", "p0.3", "p1"])
def test_random_reject_rate(env, p):
    infos = run_episodes(RandomReject(p=p, seed=0), env, 16)
    rate = np.sum([i["num_rejections"] for i in infos]) / np.sum([i["decisions"] for i in infos])
    assert rate == pytest.approx(p, abs=0.1)


def test_predict_contract():
    obs = np.zeros((5, 64), dtype=np.float32)
    actions, state = RandomReject(0.5, seed=1).predict(obs, state="s", episode_start=np.ones(5, bool))
    assert actions.shape == (5,) and actions.dtype == np.int64 and set(actions) <= {0, 1} and state == "s"
    np.testing.assert_array_equal(actions, RandomReject(0.5, seed=1).predict(obs)[0])  # seeded
    single, _ = AlwaysAccept().predict(obs[0])
    assert single.shape == () and int(single) == 1


@pytest.mark.parametrize("p", [-0.1, 1.5, True], ids=["negative", "above-one", "bool"])
def test_random_reject_validates_p(p):
    with pytest.raises(ConfigError, match=f"p={p!r} must be a probability in \\[0, 1\\]"):
        RandomReject(p=p)


def test_evaluate_means(env):
    result = evaluate(AlwaysAccept(), env, 8)
    assert result.episodes == 8 and result.rejection_rate == 0.0 and 1 <= result.response_length <= 8
    assert result.mean_reward > 0  # the reward is the response's length in characters


def test_best_of_n_keeps_the_best(tiny):
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    results = best_of_n(tiny, _length, PROMPTS[:3], n=4, max_new_tokens=6, seed=0, batch_size=2)
    assert torch.equal(torch.rand(1), expected_next), "best_of_n must leave the global RNG alone"
    assert [r.prompt for r in results] == PROMPTS[:3]
    for r in results:
        assert len(r.candidates) == len(r.rewards) == 4
        assert r.reward == max(r.rewards) == len(r.text) and r.text in r.candidates
    again = best_of_n(tiny, _length, PROMPTS[:3], n=4, max_new_tokens=6, seed=0, batch_size=2)
    assert [r.candidates for r in again] == [r.candidates for r in results]  # reproducible
    other = best_of_n(tiny, _length, PROMPTS[:3], n=4, max_new_tokens=6, seed=1, batch_size=2)
    assert [r.candidates for r in other] != [r.candidates for r in results]


def test_best_of_n_beats_a_single_sample_on_average(tiny):
    one = best_of_n(tiny, _length, PROMPTS, n=1, max_new_tokens=6, seed=0)
    eight = best_of_n(tiny, _length, PROMPTS, n=8, max_new_tokens=6, seed=0)
    assert np.mean([r.reward for r in eight]) > np.mean([r.reward for r in one])


def test_best_of_n_errors(tiny):
    with pytest.raises(ConfigError, match="n=0 must be an int >= 1"):
        best_of_n(tiny, _length, PROMPTS, n=0)
    with pytest.raises(RewardError, match="returned 1 values for 2 responses"):
        best_of_n(tiny, lambda p, r: [0.0], PROMPTS[:1], n=2, max_new_tokens=2)
