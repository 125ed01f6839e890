"""``reward_workers`` (proxy_env/rewards/parallel.py): the reward scored by worker processes, the same scores."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest

from proxy_env.errors import ConfigError
from proxy_env.rewards import resolve_reward, score
from proxy_env.rewards.parallel import ProcessPoolReward


def test_workers_score_a_batch_as_the_source_does_in_order():
    texts = [f"I {'love' if i % 3 else 'hate'} this {i} times, {'great' if i % 2 else 'awful'}." for i in range(100)]
    prompts = ["hi"] * len(texts)
    pooled = ProcessPoolReward("vader", workers=2)
    try:
        got = pooled(prompts, texts)
        small = pooled(prompts[:3], texts[:3])  # below two chunks: scored in this process
    finally:
        pooled.close()
    expected = score(resolve_reward("vader"), prompts, texts)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(small, expected[:3])
    assert len(set(np.round(got, 3))) > 4  # not a constant


def _counted(pool_map, chunks, fn, parts):
    chunks.append(len(parts))
    return pool_map(fn, parts)


def test_the_env_pays_the_same_rewards_with_workers(make_venv):
    """32 envs accepting every token end together every 3 steps: each batch of 32 responses goes to the workers
    (the instruction checkers: rewards that vary on the tiny model's text)."""
    totals, chunks = [], []
    for workers in (0, 2):
        venv = make_venv(32, prompts="instructions", reward="instructions", reward_workers=workers, max_new_tokens=3)
        reward_fn = venv.unwrapped.reward_fn
        if workers:
            assert isinstance(reward_fn, ProcessPoolReward)
            reward_fn.pool.map = partial(_counted, reward_fn.pool.map, chunks)
        venv.reset(seed=3)
        paid = []
        for _ in range(9):
            _, _reward, term, _, info = venv.step(np.ones(32, dtype=np.int64))
            paid.append(np.where(term, info["final_info"]["reward_raw"] if term.any() else 0.0, 0.0))
        venv.close()
        totals.append(np.array(paid))
    np.testing.assert_array_equal(totals[0], totals[1])
    assert chunks and all(c == 2 for c in chunks)
    assert (totals[0] != 0).any()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"reward_workers": -1}, "reward_workers=-1 must be >= 0"),
        (
            {"reward_workers": 2, "reward": lambda p, r: [0.0] * len(r)},
            "reward_workers=2 needs a reward scored on the CPU",
        ),
        ({"reward_workers": 2, "reward": "pairwise"}, "reward_workers=2 needs a reward scored on the CPU"),
        ({"reward_workers": 2, "reward": "distilbert-sst2"}, "a model reward runs there"),
    ],
)
def test_bad_reward_workers_are_refused(make_venv, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        make_venv(2, **kwargs)
