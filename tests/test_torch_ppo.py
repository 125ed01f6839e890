"""``--backend torch`` (agents/torch_ppo.py): the device-resident PPO loop over the env's torch-native API."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from gymnasium import spaces

from agents.cli import main
from agents.policies import fresh_ppo_proxy
from agents.torch_ppo import TorchPPOConfig, _Rollout, _update, train_torch_ppo
from proxy_env.config import EnvConfig
from proxy_env.errors import ConfigError
from tests.conftest import PROMPTS, length_reward


def _cfg(tmp_path, **kw):
    env = EnvConfig(model="tiny", prompts=PROMPTS, max_new_tokens=4, observation="prefix", forced_steps=True)
    base = dict(
        num_envs=4,
        total_timesteps=64,
        n_steps=8,
        batch_size=16,
        learning_rate=1e-2,
        policy_device="cpu",
        tensorboard_log=str(tmp_path / "tb"),
        save_dir=str(tmp_path / "proxy"),
    )
    return TorchPPOConfig(env=env, **{**base, **kw})


def test_gae_cuts_at_episode_ends_and_bootstraps_only_truncations():
    buf = _Rollout(3, 1, 1, torch.device("cpu"))
    buf.rewards[:, 0] = torch.tensor([1.0, 2.0, 4.0])
    buf.values[:, 0] = torch.tensor([0.5, 0.25, 0.125])
    buf.next_values[:, 0] = torch.tensor([0.25, 8.0, 16.0])
    buf.terminal[:, 0] = torch.tensor([0.0, 0.0, 1.0])  # step 2 ends its episode: V(next) does not count
    buf.dones[:, 0] = torch.tensor([0.0, 1.0, 1.0])  # step 1 is truncated: V(final obs) = 8 counts, GAE stops there
    adv, returns = buf.advantages(gamma=1.0, lam=1.0)
    np.testing.assert_allclose(adv[:, 0].numpy(), [1 + 2 + 8 - 0.5, 2 + 8 - 0.25, 4 - 0.125])
    np.testing.assert_allclose(returns[:, 0].numpy(), [11.0, 10.0, 4.0])


@pytest.mark.parametrize("paid_for", [1, 0], ids=["accept-pays", "reject-pays"])
def test_an_update_moves_the_policy_toward_the_action_that_paid(paid_for):
    """One-step episodes paying 1 for one action and 0 for the other: P(that action) rises on average."""
    torch.manual_seed(0)
    d, n = 8, 256
    cfg = SimpleNamespace(features_dim=16, hidden=(16,), policy_device="cpu", gamma=1.0, init_accept_prob=0.5)
    policy = fresh_ppo_proxy(spaces.Box(-np.inf, np.inf, (d,), np.float32), cfg, learning_rate=1e-2, n_epochs=4).policy
    buf = _Rollout(n, 1, d, torch.device("cpu"))
    buf.obs[:, 0] = torch.randn(n, d)
    with torch.no_grad():
        dist = policy.get_distribution(buf.obs[:, 0])
        buf.actions[:, 0] = dist.distribution.sample()
        buf.logp[:, 0] = dist.log_prob(buf.actions[:, 0])
        before = dist.distribution.probs[:, paid_for].clone()
    buf.rewards[:, 0] = (buf.actions[:, 0] == paid_for).float()
    buf.terminal[:] = buf.dones[:] = 1.0
    ppo = TorchPPOConfig(n_epochs=4, batch_size=64)
    losses = _update(ppo, policy, buf)
    with torch.no_grad():
        after = policy.get_distribution(buf.obs[:, 0]).distribution.probs[:, paid_for]
    assert float(after.mean()) > float(before.mean()) + 0.03  # PPO's clip caps the move near 0.5 * (1 + 0.2)
    assert all(np.isfinite(losses))


def test_train_changes_the_proxy_and_saves_an_sb3_checkpoint(tmp_path, tiny):
    from agents.accept import accept_model
    from agents.saving.checkpoint import load_checkpoint

    seen = []

    def hook(agent, stats):
        seen.append((stats, {k: v.detach().clone() for k, v in agent.policy.state_dict().items()}))

    initial = None

    def first(agent, stats):
        nonlocal initial
        if initial is None:
            initial = {k: v.detach().clone() for k, v in agent.policy.state_dict().items()}
        hook(agent, stats)

    result = train_torch_ppo(_cfg(tmp_path), model=tiny, reward=length_reward, on_update=first)
    assert [s.decisions for s, _ in seen] == [32, 64] and result.model.num_timesteps == 64
    assert result.interrupted is None and result.params.proxy == sum(
        p.numel() for p in result.model.policy.parameters()
    )
    assert sum(s.episodes for s, _ in seen) >= 8 and all(np.isfinite(s.reward_mean) for s, _ in seen)
    changed = [k for k in initial if not torch.equal(initial[k], seen[-1][1][k])]
    assert any(k.startswith("action_net") for k in changed) and any(k.startswith("features_extractor") for k in changed)
    runs = list((tmp_path / "tb").iterdir())
    assert [p.name for p in runs] == ["torch_ppo_1"] and any(p.name.startswith("events.") for p in runs[0].iterdir())
    saved = json.loads((tmp_path / "proxy" / "proxy_config.json").read_text())
    assert saved["config"]["backend"] == "torch" and saved["num_timesteps"] == 64
    checkpoint = load_checkpoint(tmp_path / "proxy", device="cpu")
    obs = np.random.default_rng(0).normal(size=(16, checkpoint.model.observation_space.shape[0])).astype(np.float32)
    with torch.no_grad():
        mine = result.model.policy.get_distribution(torch.as_tensor(obs)).distribution.probs[:, 1].numpy()
    np.testing.assert_allclose(accept_model(checkpoint.model, deterministic=False)(obs), mine, atol=1e-6)


def test_the_cli_trains_with_backend_torch_and_refuses_bad_settings(tmp_path, capsys):
    code = main(
        ["train", "--backend", "torch", "--model", "tiny", "--num-envs", "2", "--total-timesteps", "16"]
        + ["--n-steps", "8", "--max-new-tokens", "3", "--save-dir", str(tmp_path / "p"), "--policy-device", "cpu"]
    )
    assert code == 0 and (tmp_path / "p" / "proxy_config.json").is_file()
    assert "checkpoint:" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="algo_kwargs"):
        _cfg(tmp_path, algo_kwargs={"n_epochs": 2}).validate()
    with pytest.raises(ConfigError, match="clip_range=0"):
        _cfg(tmp_path, clip_range=0).validate()
    with pytest.raises(ConfigError, match="kl_coef"):
        TorchPPOConfig(env=EnvConfig(observation="prefix", kl_coef=0.1)).validate()
