"""Potential-based reward shaping (proxy_env/rewards/shaping.py): each episode's return is the unshaped one, paid
as the response grows.
"""

import numpy as np
import pytest

from proxy_env.wrappers import RejectCost


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
