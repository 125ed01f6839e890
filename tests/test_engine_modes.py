"""The engine's cost and the KL penalty: forwards per step by mode, and the KL the env charges vs agents/eval/kl.py."""

import numpy as np
import pytest
import torch

from agents.eval.kl import trajectory
from proxy_env import Action
from proxy_env.errors import ConfigError, StateError
from proxy_env.wrappers import RejectCost


def _count_steps(venv):
    """Wrap the cache's step so each call (one batched forward) is counted."""
    cache = venv.unwrapped.decoder.cache
    calls = []
    step = cache.step
    cache.step = lambda *a, **k: calls.append(1) or step(*a, **k)
    return calls


def test_prefix_rejection_needs_no_forward(make_venv):
    venv = make_venv(4, observation="prefix", top_k=50, top_p=1.0, max_new_tokens=8)  # wide pools: nothing forced
    venv.reset(seed=0)
    cache = venv.unwrapped.decoder.cache
    before = (cache.forwards, cache.row_forwards)
    _, _, _, _, info = venv.step(np.zeros(4, dtype=np.int64))
    assert (cache.forwards, cache.row_forwards) == before and list(info["rejections"]) == [1] * 4
    venv.step(np.ones(4, dtype=np.int64))
    assert (cache.forwards - before[0], cache.row_forwards - before[1]) == (1, 4)  # one forward of the accepted tokens


def test_candidate_rejection_costs_a_forward(make_venv):
    venv = make_venv(4, top_k=50, top_p=1.0, max_new_tokens=8)
    venv.reset(seed=0)
    cache = venv.unwrapped.decoder.cache
    before = cache.row_forwards
    venv.step(np.zeros(4, dtype=np.int64))
    assert cache.row_forwards - before == 4  # the next candidate of every row goes through the LLM


@pytest.mark.parametrize("observation", ["candidate", "prefix"])
def test_forced_steps_make_every_step_one_forward(make_venv, observation):
    # the tiny model's pools often hold one token: chains of forced commits in the default bookkeeping
    chained = make_venv(8, max_new_tokens=8, observation=observation)
    stepped = make_venv(8, max_new_tokens=8, observation=observation, forced_steps=True)
    counts = {}
    for name, venv in (("chained", chained), ("stepped", stepped)):
        venv.reset(seed=1)
        calls = _count_steps(venv)
        per_step, forced = [], 0
        rng = np.random.default_rng(0)
        for _ in range(40):
            calls.clear()
            _, _, _, _, info = venv.step((rng.random(8) < 0.7).astype(np.int64))
            per_step.append(len(calls))
            forced += int(info["forced"].sum())
        counts[name] = (max(per_step), forced)
    assert counts["stepped"][0] == 1 and counts["stepped"][1] > 0  # forced candidates were offered as steps
    assert counts["chained"][0] > 1  # the default bookkeeping needed extra forwards in some step


def test_forced_step_ignores_the_action(make_env):
    env = make_env(max_new_tokens=6, top_k=3, top_p=1.0, max_rejections=1, forced_steps=True)
    _, info = env.reset(seed=0)
    while not info["forced"]:
        _, _, term, trunc, info = env.step(Action.REJECT)
        assert not (term or trunc)
    position, token = info["position"], info["token_id"]
    _, _, term, trunc, info = env.step(Action.REJECT)  # the cap was reached: this candidate is committed anyway
    if not (term or trunc):
        assert info["position"] == position + 1
    assert env.unwrapped.vector_env.state.response[0, position] == token


def _linear_accept(dim: int, seed: int = 0):
    w = np.random.default_rng(seed).normal(size=dim) / np.sqrt(dim)
    return lambda obs: 1.0 / (1.0 + np.exp(-(np.asarray(obs, dtype=np.float64) @ w + 1.0)))


def test_kl_paid_is_the_exact_kl_of_agents_kl(make_venv, tiny):
    n = 16
    venv = make_venv(
        n,
        observation="prefix",
        kl_coef=0.5,
        max_new_tokens=6,
        top_k=8,
        top_p=0.95,
        reward=lambda p, r: [1.0] * len(r),
        info_text=True,
    )
    accept = _linear_accept(venv.unwrapped.single_observation_space.shape[0])
    venv.unwrapped.set_accept_fn(accept)
    obs, _ = venv.reset(seed=4)
    rng = np.random.default_rng(0)
    returns = np.zeros(n)
    checked = 0
    for _ in range(60):
        obs, reward, term, trunc, info = venv.step((rng.random(n) < accept(obs)).astype(np.int64))
        returns += reward
        for i in np.flatnonzero(term | trunc):
            final = info["final_info"]
            ref = trajectory(
                tiny,
                tiny.encode_prompt(final["prompt"][i]),
                list(final["response_ids"][i]),
                accept,
                top_k=8,
                top_p=0.95,
                temperature=1.0,
                observation="prefix",
            )
            assert final["kl_exact_paid"][i] == pytest.approx(ref.kl, abs=1e-6, rel=1e-5)
            assert returns[i] == pytest.approx(1.0 - 0.5 * final["kl_paid"][i], abs=1e-6)  # reward - β Σ log π/q
            returns[i] = 0.0
            checked += 1
    assert checked >= 20


def test_kl_logratio_is_unbiased_for_the_exact_kl(make_venv):
    # actions sampled from the accept function the env is told about: mean Σ log π/q = mean Σ KL(π_t || q_t)
    n = 64
    venv = make_venv(n, observation="prefix", kl_coef=1.0, max_new_tokens=4, top_k=6, top_p=1.0)
    accept = _linear_accept(venv.unwrapped.single_observation_space.shape[0], seed=3)
    venv.unwrapped.set_accept_fn(accept)
    obs, _ = venv.reset(seed=7)
    rng = np.random.default_rng(1)
    logratio, exact = [], []
    while len(logratio) < 600:
        obs, _, term, trunc, info = venv.step((rng.random(n) < accept(obs)).astype(np.int64))
        for i in np.flatnonzero(term | trunc):
            logratio.append(info["final_info"]["kl_paid"][i])
            exact.append(info["final_info"]["kl_exact_paid"][i])
    logratio, exact = np.array(logratio), np.array(exact)
    assert exact.mean() > 0.05  # the proxy steers: there is a KL to estimate
    se = np.std(logratio - exact, ddof=1) / np.sqrt(len(logratio))
    assert abs(logratio.mean() - exact.mean()) < 4 * se + 1e-9


def test_kl_coef_zero_is_todays_objective(make_venv):
    runs = []
    for kwargs in ({}, {"kl_coef": 0.0}):
        venv = make_venv(4, observation="prefix", reward=lambda p, r: [len(x) for x in r], **kwargs)
        venv.reset(seed=2)
        runs.append([venv.step(np.array([1, 0, 1, 1]))[1] for _ in range(12)])
    np.testing.assert_array_equal(np.array(runs[0]), np.array(runs[1]))


def test_kl_penalty_errors(make_venv):
    with pytest.raises(ConfigError, match="kl_coef=0.1 needs observation='prefix'"):
        make_venv(2, kl_coef=0.1)
    venv = make_venv(2, observation="prefix", kl_coef=0.1)
    venv.reset(seed=0)
    with pytest.raises(StateError, match="set_accept_fn"):
        venv.step(np.ones(2, dtype=np.int64))
    with pytest.raises(ConfigError, match="pool_observations\\(\\) needs observation='prefix'"):
        make_venv(2).unwrapped.pool_observations()


def test_pool_observations_hold_the_observation_on_offer(make_venv):
    venv = make_venv(4, observation="prefix")
    obs, _ = venv.reset(seed=0)
    for _ in range(5):
        view = venv.unwrapped.pool_observations()
        offer = venv.unwrapped.state.offer
        np.testing.assert_allclose(view.obs[torch.arange(4), offer].numpy(), obs, rtol=0, atol=0)
        torch.testing.assert_close(view.q.sum(-1), torch.ones(4, dtype=torch.float64))
        obs, *_ = venv.step(np.array([0, 1, 0, 1]))


@pytest.mark.parametrize("observation", ["candidate", "prefix"])
def test_reward_shaping_keeps_each_episode_return(make_venv, observation):
    # Φ = number of characters so far: shaped steps pay the growth, the last one pays the rest
    reward = lambda p, r: [float(len(x)) for x in r]  # noqa: E731
    venv = RejectCost(
        make_venv(4, observation=observation, max_new_tokens=6, reward=reward, reward_shaping=True, info_text=True),
        0.01,
    )
    venv.reset(seed=3)
    returns, paid_before_end, done = np.zeros(4), np.zeros(4), 0
    rng = np.random.default_rng(0)
    while done < 12:
        _, r, term, trunc, info = venv.step((rng.random(4) < 0.7).astype(np.int64))
        returns += r
        for i in range(4):
            if term[i] or trunc[i]:
                final = info["final_info"]
                assert returns[i] == pytest.approx(
                    len(final["response"][i]) - 0.01 * final["num_rejections"][i], abs=1e-6
                )
                paid_before_end[i] += abs(returns[i] - r[i]) > 0
                returns[i] = 0.0
                done += 1
    assert paid_before_end.sum() > 0  # reward arrived before the episode ended
