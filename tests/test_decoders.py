"""The observation-mode decoders (proxy_env/vector/decoder.py, candidate.py, prefix.py): the forwards each mode
costs, forced candidates as steps of their own, and the prefix mode's pool observations.
"""

import numpy as np
import pytest
import torch

from proxy_env import Action


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


def test_pool_observations_hold_the_observation_on_offer(make_venv):
    venv = make_venv(4, observation="prefix")
    obs, _ = venv.reset(seed=0)
    for _ in range(5):
        view = venv.unwrapped.pool_observations()
        offer = venv.unwrapped.state.offer
        np.testing.assert_allclose(view.obs[torch.arange(4), offer].numpy(), obs, rtol=0, atol=0)
        torch.testing.assert_close(view.q.sum(-1), torch.ones(4, dtype=torch.float64))
        obs, *_ = venv.step(np.array([0, 1, 0, 1]))


def test_a_tiny_temperature_is_named_when_every_pool_holds_one_candidate(make_venv):
    """With temperature 1e-30 every pool is one token: the error names the temperature, not only top_k and top_p."""
    from proxy_env.errors import StateError

    venv = make_venv(2, temperature=1e-30, max_new_tokens=3)
    with pytest.raises(StateError, match=r"temperature=1e-30\).*or the temperature \(a tiny one"):
        venv.reset(seed=0)
