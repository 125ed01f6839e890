"""The KL-regularised objective (agents/kl_control.py): the controller, and SB3 training that pays the KL."""

import numpy as np
import pytest

from agents.kl_control import KLController
from agents.train import SB3Config, train
from proxy_env.errors import ConfigError
from tests.conftest import PROMPTS, train_config


def test_adaptive_controller_moves_beta_to_its_target():
    # toy task: the KL per response falls as 1/β, so the target 2 nats is reached at β = 0.5
    controller = KLController(0.05, target=2.0, horizon=100)
    errors = []
    for _ in range(200):
        beta = controller.update(kl=1.0 / controller.beta, steps=50)
        errors.append(abs(np.log(beta / 0.5)))
    assert errors[-1] < 0.05 < errors[0]
    fixed = KLController(0.3)
    assert fixed.update(kl=10.0, steps=1000) == 0.3
    with pytest.raises(ConfigError, match="kl_target"):
        KLController(0.0, target=1.0)


def _cfg(**kwargs) -> SB3Config:
    base = dict(
        model="tiny",
        prompts=PROMPTS,
        max_new_tokens=6,
        num_envs=4,
        total_timesteps=128,
        n_steps=16,
        batch_size=32,
        seed=0,
        policy_device="cpu",
        eval_freq=0,
        observation="prefix",
        top_k=6,
        top_p=1.0,
        init_accept_prob=0.5,
    )
    return train_config(**{**base, **kwargs})


def test_ppo_pays_the_kl_and_the_controller_raises_beta(tiny):
    # a coin-flip proxy over 6-token pools spends far more than 0.01 nats per response: β must grow
    cfg = _cfg(kl_coef=0.05, kl_target=0.01, kl_horizon=64)
    result = train(cfg, model=tiny, reward=lambda p, r: [0.0] * len(r))
    assert result.model.get_env().unwrapped.kl_coef > 0.05  # the env was charging the adapted β
    history = result.kl_history  # per rollout: β after it, mean Σ log π/q per response
    assert len(history) >= 2 and all(r.kl > 0.01 and r.per == "response" for r in history)
    assert [r.beta for r in history] == sorted(r.beta for r in history)


def test_kl_flags_are_validated_before_loading():
    with pytest.raises(ConfigError, match="needs observation='prefix'"):
        _cfg(observation="candidate", kl_coef=0.1).validate()
    with pytest.raises(ConfigError, match="kl_target"):
        _cfg(kl_coef=0.1, kl_target=-1.0).validate()
