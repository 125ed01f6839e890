"""Vector wrappers (proxy_env/wrappers.py): RejectCost charges each rejection, in both autoreset modes."""

import numpy as np
import pytest

from proxy_env.errors import ConfigError
from proxy_env.wrappers import RejectCost


@pytest.mark.parametrize("mode", ["same_step", "next_step"])
def test_reject_cost_wrapper_charges_each_rejection(make_venv, mode):
    venv = RejectCost(make_venv(2, max_new_tokens=2, reward=lambda p, r: [1.0] * len(r), autoreset_mode=mode), 0.1)
    venv.reset(seed=0)
    total, ended, rejected = np.zeros(2), 0, 0
    for _ in range(30):
        _, reward, term, trunc, info = venv.step(np.array([0, 1]))  # env 0 always rejects, env 1 always accepts
        total += reward
        # each step pays the terminal reward (1) if its episode ended, minus 0.1 if its action rejected
        np.testing.assert_allclose(reward, np.where(term | trunc, 1.0, 0.0) - 0.1 * info["rejected"])
        assert not info["rejected"][1]  # env 1 accepts; env 0 rejects except on NEXT_STEP's reset steps
        rejected += int(info["rejected"][0])
        for i in np.flatnonzero(term | trunc):
            end = info["final_info"] if mode == "same_step" else info
            assert end["reward_raw"][i] == 1.0 and end["reward_baseline"][i] == 0.0
            assert end["reject_cost"][i] == pytest.approx(0.1 * end["num_rejections"][i])
            assert (end["num_rejections"][i] > 0) == (i == 0)
            ended += 1
    assert ended >= 4 and rejected >= 10 and total[1] > 0 and total[0] < total[1]
    with pytest.raises(ConfigError, match="cost=-1.0 must be a finite float >= 0"):
        RejectCost(venv.env, -1.0)
