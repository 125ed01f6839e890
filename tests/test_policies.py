"""The proxy's policy (agents/policies.py): the default proxy is at most 1% of the LLM, and it starts at a chosen
accept probability.
"""

import gymnasium as gym
import numpy as np
import pytest
import torch

from agents.algos import ALGOS, get_algo
from agents.policies import init_accept_bias, param_report, proxy_policy_kwargs
from tests.conftest import PROMPTS


# ---------------------------------------------------------------------------------- proxy size
class _Stub(gym.Env):
    """A stand-in with the default LLM's observation space (hidden 576), so no LLM is loaded."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (576,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        return np.zeros(576, np.float32), {}

    def step(self, action):
        return np.zeros(576, np.float32), 0.0, True, False, {}


SMOLLM2_PARAMS = 134_515_008  # SmolLM2-135M-Instruct (shared/NOTES.md: 134.5M)


@pytest.mark.parametrize("algo", list(ALGOS), ids=list(ALGOS))
def test_default_proxy_is_at_most_one_percent(algo):
    from stable_baselines3.common.vec_env import DummyVecEnv

    spec = get_algo(algo)
    model = spec.load_class()(spec.policy, DummyVecEnv([_Stub]), policy_kwargs=proxy_policy_kwargs(algo), device="cpu")
    report = param_report(model, SMOLLM2_PARAMS)
    assert 20_000 < report.proxy and report.ratio <= 0.01, str(report)
    assert "% of the LLM's 134,515,008" in str(report)


# ---------------------------------------------------------------------------------- the initial accept probability
def test_accept_bias_init(tiny):
    from stable_baselines3 import PPO

    from agents.policies import proxy_policy_kwargs
    from agents.train import make_sb3_env

    env = make_sb3_env({"model": tiny, "prompts": PROMPTS, "max_new_tokens": 4}, 2, seed=0)
    agent = PPO("MlpPolicy", env, policy_kwargs=proxy_policy_kwargs(), device="cpu")
    assert init_accept_bias(agent, 0.9)
    obs = torch.randn(5, tiny.hidden_size)
    probs = agent.policy.get_distribution(obs).distribution.probs[:, 1]
    torch.testing.assert_close(probs, torch.full((5,), 0.9), atol=0.02, rtol=0)
    with pytest.raises(Exception, match="accept_prob=1.0 must be in"):
        init_accept_bias(agent, 1.0)
