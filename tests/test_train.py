"""SB3 training (agents/train.py): PPO learns a task with a known optimum; resume; config, seed and memory checks
before any model loads; TensorBoard, evaluation, periodic checkpoints and progress bars.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.baselines import AlwaysAccept, RandomReject
from agents.callbacks import run_episodes
from agents.saving.checkpoint import read_meta
from agents.train import SB3Config, make_sb3_env, train
from proxy_env.errors import ConfigError
from tests.conftest import PROMPTS, _cfg, _no_model, _zero, train_config


def _tiny_cfg(**kwargs) -> SB3Config:
    base = dict(
        model="tiny",
        prompts=PROMPTS,
        max_new_tokens=4,
        num_envs=4,
        total_timesteps=64,
        n_steps=16,
        batch_size=32,
        seed=0,
        policy_device="cpu",
        eval_freq=0,
    )
    return train_config(**{**base, **kwargs})


# ---------------------------------------------------------------------------------- learning
# Synthetic task with a known optimum: the reward is minus the number of times one banned token
# (the tiny LLM's most frequent one, "\n" = 198) occurs in the response, minus 0.05 per rejection.
# With a full pool of 5 candidates at every position (top_k=5, top_p=1) a proxy that rejects
# exactly the banned token scores about -0.1 (it needs a few rejections); always-accept scores about
# -7, always-reject (which also avoids it, by committing the last candidate) -1.6.
BANNED = 198
TASK = dict(prompts=PROMPTS, max_new_tokens=8, top_k=5, top_p=1.0)
REJECT_COST = 0.05
BUDGET = 4096  # proxy decisions: 8 PPO updates of 8 envs x 64 steps, ~10 s on one CPU thread
THRESHOLD = -0.3  # mean episode return the trained proxy must reach


def _banned_reward(tiny):
    text = tiny.tokenizer.decode([BANNED])

    def reward(prompts, responses):
        return [-float(r.count(text)) for r in responses]

    return reward


def _score(agent, env) -> tuple[float, float]:
    """(mean return, mean banned-token count) over 64 held episodes."""
    env.seed(123)
    infos = run_episodes(agent, env, 64)
    return float(np.mean([i["episode"]["r"] for i in infos])), float(
        np.mean([i["response_ids"].count(BANNED) for i in infos])
    )


def test_ppo_learns_to_reject_a_banned_token(tiny):
    reward = _banned_reward(tiny)
    env = make_sb3_env({**TASK, "model": tiny, "reward": reward, "info_text": True}, 8, reject_cost=REJECT_COST)
    accept_return, accept_banned = _score(AlwaysAccept(), env)
    reject_return, _ = _score(RandomReject(p=1.0), env)
    assert accept_return < -5 and accept_banned > 5, "the task must be hard for the frozen LLM alone"
    assert reject_return < -1.5

    cfg = train_config(
        algo="ppo",
        **TASK,
        reject_cost=REJECT_COST,
        num_envs=8,
        total_timesteps=BUDGET,
        n_steps=64,
        batch_size=128,
        learning_rate=3e-3,
        algo_kwargs={"n_epochs": 4},
        seed=0,
        policy_device="cpu",
        eval_freq=0,
    )
    result = train(cfg, model=tiny, reward=reward)
    ppo_return, ppo_banned = _score(result.model, env)
    assert ppo_return > THRESHOLD, (ppo_return, ppo_banned)
    assert ppo_banned < 0.1


# ---------------------------------------------------------------------------------- resuming
def test_resume_continues_training(saved, tmp_path):
    done = read_meta(saved).num_timesteps
    out = tmp_path / "resumed"
    result = train(_tiny_cfg(resume=str(saved), save_dir=str(out), total_timesteps=64), reward=_zero)
    assert result.model.num_timesteps >= done + 64
    assert read_meta(out).num_timesteps == result.model.num_timesteps
    with pytest.raises(ConfigError, match="holds a 'ppo' checkpoint but algo='a2c'.*--algo ppo"):
        train(_tiny_cfg(algo="a2c", resume=str(saved)), reward=_zero)


def _weights(policy) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in policy.state_dict().items()}


def test_init_from_starts_a_new_run_from_the_weights_and_the_warmup_moves_only_the_critic(saved, tmp_path):
    from agents.saving.checkpoint import load_checkpoint
    from tests.conftest import length_reward

    start = _weights(load_checkpoint(saved).model.policy)
    critic = ("value_net.", "mlp_extractor.value_net.")
    warm = train(_cfg(init_from=str(saved), critic_warmup=2, total_timesteps=128), reward=length_reward)
    assert warm.model.num_timesteps == 128  # a new run: no step count carried over
    after = _weights(warm.model.policy)
    moved = {k for k in start if not torch.equal(start[k], after[k])}
    assert moved and all(k.startswith(critic) for k in moved), moved  # two updates, both critic-only
    assert all(p.requires_grad for p in warm.model.policy.parameters())
    # without a warm-up the same run moves the actor from the loaded weights at once
    cold = train(_cfg(init_from=str(saved), total_timesteps=64), reward=length_reward)
    moved = {k for k in start if not torch.equal(start[k], _weights(cold.model.policy)[k])}
    assert any(not k.startswith(critic) for k in moved), moved
    # the fresh agent's own init is replaced, not blended: before any update the policy is the checkpoint's
    copy = train(_cfg(init_from=str(saved), critic_warmup=1, total_timesteps=64, learning_rate=1e-12), reward=_zero)
    for k, v in _weights(copy.model.policy).items():
        torch.testing.assert_close(v, start[k], atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"resume": "SAVED"}, "init_from=.* and resume=.* both given"),
        ({"init_from": "NOWHERE"}, "init_from='.*nowhere' is not a checkpoint folder"),
        ({"features_dim": 16}, "holds a 'ppo' policy that does not fit this run's 'ppo' one.*--features-dim"),
        ({"algo": "dqn", "critic_warmup": 1, "n_steps": None}, "critic_warmup=1 needs an on-policy actor-critic"),
        ({"algo": "trpo", "critic_warmup": 1}, "TRPO moves its actor by its own natural-gradient step"),
    ],
    ids=["with-resume", "missing", "other-width", "off-policy-warmup", "trpo-warmup"],
)
def test_init_from_refuses_what_cannot_start_from_those_weights(saved, tmp_path, kwargs, match):
    fixed = {
        k: str(saved) if v == "SAVED" else str(tmp_path / "nowhere") if v == "NOWHERE" else v for k, v in kwargs.items()
    }
    base = {"init_from": str(saved)} if "init_from" not in fixed and "critic_warmup" not in fixed else {}
    with pytest.raises(ConfigError, match=match):
        train(_cfg(**{**base, **fixed}), reward=_zero)


# ---------------------------------------------------------------------------------- config, logs
def test_unknown_algo_suggests_closest():
    with pytest.raises(ConfigError, match=r"algo='ppo2' is not a known algorithm.*Did you mean 'ppo'\?"):
        train(_tiny_cfg(algo="ppo2"))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_envs": 0}, "num_envs=0 must be an int >= 1"),
        ({"save_freq": 10}, "save_freq=10 needs save_dir"),
        ({"algo": "dqn", "n_steps": 8, "batch_size": None}, "n_steps=8 applies to on-policy algorithms only"),
    ],
    ids=["num-envs", "save-freq", "n-steps-off-policy"],
)
def test_bad_config_raises(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        train(_tiny_cfg(**kwargs), reward=_zero)


def test_train_seed_range_is_checked_first(monkeypatch):
    _no_model(monkeypatch)
    with pytest.raises(ConfigError, match=r"seed=4294967296 must be an int in \[0, 2\*\*32\)"):
        train(_cfg(seed=2**32), reward=_zero)


def test_rollout_buffer_memory_checked(monkeypatch):
    from proxy_env import guards

    real = guards.available_bytes
    monkeypatch.setattr(guards, "available_bytes", lambda device: 1 << 30 if device is None else real(device))
    with pytest.raises(ConfigError, match=r"n_steps=10000000 x num_envs=2 .* lower n_steps or num_envs"):
        train(_cfg(n_steps=10_000_000), reward=_zero)


@pytest.mark.filterwarnings("ignore:rich is experimental")
def test_tensorboard_eval_and_periodic_checkpoints(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = _tiny_cfg(
        tensorboard_log=str(tmp_path / "tb"),
        eval_freq=64,
        eval_episodes=4,
        eval_prompts="default-eval",
        total_timesteps=128,
        save_dir=str(tmp_path / "ck"),
        save_freq=64,
        progress_bar=True,
    )
    result = train(cfg, reward=_zero)
    assert [step for step, _ in result.evaluations] == [64, 128]
    assert result.evaluations[0][1].episodes == 4
    runs = list((tmp_path / "tb").iterdir())
    assert len(runs) == 1
    tags = EventAccumulator(str(runs[0])).Reload().Tags()["scalars"]
    for tag in (
        "rollout/rejection_rate",
        "rollout/response_length",
        "rollout/ep_rew_mean",
        "eval/mean_reward",
        "eval/rejection_rate",
    ):
        assert tag in tags, tags
    assert read_meta(tmp_path / "ck").config["eval_freq"] == 64


def test_tqdm_progress_bar_without_rich(monkeypatch, capsys):
    """Without rich (SB3's bar needs it), a plain tqdm bar over proxy decisions is shown."""
    import agents.train as train_module

    monkeypatch.setattr(train_module, "_installed", lambda module: module != "rich")
    result = train(_tiny_cfg(progress_bar=True), reward=_zero)
    assert result.model.num_timesteps == 64
    err = capsys.readouterr().err
    assert "64/64" in err and "step/s" in err  # TqdmCallback writes to stderr with unit "step"


class _InitialWeights:
    """An SB3 callback (built lazily: SB3 is imported by the module under test anyway) keeping the initial weights."""

    def __new__(cls):
        from stable_baselines3.common.callbacks import BaseCallback

        class Keep(BaseCallback):
            def _on_training_start(self) -> None:
                self.weights = [p.detach().clone() for p in self.model.policy.parameters()]

            def _on_step(self) -> bool:
                return True

        return Keep()


@pytest.mark.gpu
@pytest.mark.parametrize("observation", ["candidate", "prefix"])
def test_ppo_trains_on_cuda_and_changes_its_weights(cuda_lm, observation):
    cfg = train_config(
        model="tiny",
        prompts=PROMPTS,
        max_new_tokens=4,
        observation=observation,
        forced_steps=True,
        num_envs=16,
        total_timesteps=512,
        n_steps=16,
        batch_size=64,
        policy_device="cuda",
        eval_freq=0,
    )
    initial = _InitialWeights()
    result = train(cfg, model=cuda_lm("float32"), reward=lambda p, r: [len(x) / 10 for x in r], callbacks=[initial])
    after = list(result.model.policy.parameters())
    assert result.model.num_timesteps >= 512 and after[0].device.type == "cuda"
    assert any(not torch.equal(a.detach(), b) for a, b in zip(after, initial.weights))


def test_a_bad_eval_prompts_file_is_named_before_training(tmp_path):
    with pytest.raises(ConfigError, match=r"eval_prompts='.*nowhere.txt': no such file"):
        _cfg(eval_freq=64, eval_prompts=str(tmp_path / "nowhere.txt")).validate()


def test_resume_with_other_env_settings_warns_naming_them(saved, tmp_path):
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="resume=")  # the same settings: not a word
        train(_tiny_cfg(resume=str(saved), save_dir=str(tmp_path / "same"), total_timesteps=32), reward=_zero)
    with pytest.warns(
        UserWarning, match=r"env settings differ from the checkpoint's \(max_new_tokens 4 -> 5, top_p 0.95 -> 1.0\)"
    ):
        train(_tiny_cfg(resume=str(saved), max_new_tokens=5, top_p=1.0, total_timesteps=32), reward=_zero)
