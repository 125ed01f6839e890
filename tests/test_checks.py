import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv

from proxy_env.vector.checks import VectorEnvCheckError, check_vector_env


class ToyVectorEnv(VectorEnv):
    """Counts to 3 then ends; ``bug`` breaks one part of the contract."""

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, num_envs=3, bug=None):
        self.num_envs, self.bug = num_envs, bug
        self.single_observation_space = spaces.Box(-10, 10, (2,), np.float32)
        self.single_action_space = spaces.Discrete(2)
        self.observation_space = spaces.Box(-10, 10, (num_envs, 2), np.float32)
        self.action_space = spaces.MultiDiscrete([2] * num_envs)
        self.t = np.zeros(num_envs, int)
        self.noise = np.random.default_rng()

    def _obs(self):
        obs = np.stack([self.t, -self.t], 1).astype(np.float32)
        return obs + self.noise.random(obs.shape).astype(np.float32) if self.bug == "nondeterministic" else obs

    def reset(self, *, seed=None, options=None):
        self.t[:] = 0
        return self._obs(), {}

    def step(self, actions):
        actions = np.asarray(actions)
        if self.bug != "accepts_bad_actions" and not np.isin(actions, [0, 1]).all():
            raise ValueError("bad action")
        self.t += 1
        done = self.t >= 3
        info = {}
        final = self._obs()
        if done.any() and self.bug != "no_final_obs":
            if self.bug == "final_obs_2d":  # every env ends on the same step: this makes an (N, D) object array
                final_obs = np.array([final[i] if d else None for i, d in enumerate(done)], dtype=object)
            else:
                final_obs = np.full(self.num_envs, None, dtype=object)
                for i in np.flatnonzero(done):
                    final_obs[i] = final[i]
            info = {"final_obs": final_obs, "_final_obs": done.copy()}
        self.t[done] = 0
        reward = actions.astype(np.float64)
        if self.bug == "reward_shape":
            reward = reward[:1]
        return self._obs(), reward, done, np.zeros(self.num_envs, bool), info


def test_toy_env_passes():
    check_vector_env(ToyVectorEnv())


@pytest.mark.parametrize(
    "bug, match",
    [
        ("no_final_obs", "_final_obs"),
        ("final_obs_2d", r"final_obs'\] must be a \(3,\) object array"),
        ("reward_shape", "rewards must be an array of shape"),
        ("nondeterministic", "not deterministic"),
        ("accepts_bad_actions", "accepted actions outside"),
    ],
    ids=["no-final-obs", "final-obs-2d", "reward-shape", "nondeterministic", "accepts-bad-actions"],
)
def test_broken_toy_env_fails(bug, match):
    with pytest.raises(VectorEnvCheckError, match=match):
        check_vector_env(ToyVectorEnv(bug=bug))


def test_our_vector_env_passes(make_venv):
    check_vector_env(make_venv(4, max_new_tokens=4), steps=40)
