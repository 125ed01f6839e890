"""RL libraries users bring, each through its documented entry point and autoreset mode (the README's table).

Gymnasium's vector wrappers (NEXT_STEP), SB3's helpers (make_vec_env; VecNormalize and
evaluate_policy over proxy_env.adapters.sb3.SB3VecEnv, SAME_STEP), skrl's PPO (SAME_STEP) and TorchRL's
GymWrapper + check_env_specs (DISABLED), on the tiny model. The training tests use a task with a
known optimum. A test whose library is missing is skipped with the command that installs it.
"""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch

import proxy_env
from proxy_env import Action
from proxy_env.adapters.sb3 import SB3VecEnv
from proxy_env.wrappers import RejectCost
from tests.conftest import PROMPTS

INSTALL = {
    "skrl": "skrl==2.1.1",
    "torchrl": "torchrl==0.14.1 tensordict==0.14.3",
    "array_api_compat": "array-api-compat==1.16.0",
}


def _require(module: str):
    return pytest.importorskip(
        module, reason=f"{module} is not installed: pip install {INSTALL[module]}  (or: pip install -e '.[clients]')"
    )


def _length_reward(prompts, responses):
    return [len(r) / 10 for r in responses]


# ---------------------------------------------------------------------------------- the learning task
# One decision per episode: after "Hello!" the tiny LLM's two-token pool is {"\n", " radar"}, offered
# in sampled order (temperature 100 makes the two about equally likely); rejecting the first commits
# the other. Reward 1 unless the response is "\n". The optimum, 1.0, needs the observation (accept
# " radar", reject "\n"); always-accept and always-reject both score about 0.5.
NEWLINE = 198
BANDIT = dict(prompts=["Hello!"], max_new_tokens=1, top_k=2, top_p=1.0, temperature=100.0)
THRESHOLD = 0.9  # mean reward a trained agent must reach


def _bandit_reward(tiny):
    text = tiny.tokenizer.decode([NEWLINE])
    return lambda prompts, responses: [0.0 if text in r else 1.0 for r in responses]


def _mean_reward(venv, act, steps: int = 8) -> float:
    """Mean reward per episode of ``act(obs, info) -> actions`` on the bandit (every step ends every episode)."""
    obs, info = venv.reset(seed=123)
    rewards = []
    for _ in range(steps):
        obs, reward, terminated, truncated, info = venv.step(act(obs, info))
        assert (terminated | truncated).all()
        rewards.append(reward)
    return float(np.mean(rewards))


def test_bandit_has_a_known_optimum(make_venv, tiny):
    venv = make_venv(8, **BANDIT, reward=_bandit_reward(tiny))
    assert 0.3 < _mean_reward(venv, lambda obs, info: np.ones(8, dtype=np.int64)) < 0.7
    oracle = lambda obs, info: np.where(info["token_id"] == NEWLINE, Action.REJECT, Action.ACCEPT)  # noqa: E731
    assert _mean_reward(venv, oracle) == 1.0


def _policy_params(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def _changed(before: list[torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(a, b) for a, b in zip(before, module.parameters()))


# ---------------------------------------------------------------------------------- Gymnasium's vector wrappers
@pytest.fixture
def gym_venv(make_venv):
    def make(mode: str = "next_step", **kwargs):
        kwargs.setdefault("reward", _length_reward)
        return RejectCost(make_venv(4, max_new_tokens=3, autoreset_mode=mode, **kwargs), 0.05)

    return make


def _random_actions(steps: int, n: int = 4) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 2, (steps, n))


# Gymnasium < 1.4's vector RecordEpisodeStatistics ignores metadata["autoreset_mode"] and counts every env as NEXT_STEP
# (its step() has no SAME_STEP branch); ray[rllib]==2.60.0 (the rllib extra, which `make test` installs) pins 1.2.2
_OLD_STATS = tuple(int(v) for v in gym.__version__.split(".")[:2]) < (1, 4)


@pytest.mark.parametrize(
    "mode",
    [
        "next_step",
        pytest.param(
            "same_step",
            marks=pytest.mark.skipif(
                _OLD_STATS,
                reason=f"gymnasium {gym.__version__}'s RecordEpisodeStatistics handles SAME_STEP from 1.4 on",
            ),
        ),
    ],
)
def test_record_episode_statistics(gym_venv, mode):
    from gymnasium.wrappers.vector import RecordEpisodeStatistics

    env = RecordEpisodeStatistics(gym_venv(mode))
    env.reset(seed=0)
    returns, lengths, prev_done, checked = np.zeros(4), np.zeros(4, int), np.zeros(4, bool), 0
    for actions in _random_actions(24):
        _, reward, terminated, truncated, info = env.step(actions)
        fresh = prev_done if mode == "next_step" else np.zeros(4, bool)  # NEXT_STEP: this step was the reset
        returns[fresh], lengths[fresh] = 0.0, 0
        returns[~fresh] += reward[~fresh]
        lengths[~fresh] += 1
        done = terminated | truncated
        for i in np.flatnonzero(done):
            assert info["_episode"][i] and info["episode"]["r"][i] == pytest.approx(returns[i], abs=1e-5)
            assert info["episode"]["l"][i] == lengths[i]
            checked += 1
        if mode == "same_step":
            returns[done], lengths[done] = 0.0, 0
        prev_done = done
    assert checked >= 8


def test_normalize_observation(gym_venv):
    from gymnasium.wrappers.vector import NormalizeObservation

    raw_obs, _ = gym_venv("next_step").reset(seed=0)
    env = NormalizeObservation(gym_venv("next_step"))  # it refuses SAME_STEP and DISABLED
    env.reset(seed=0)
    for actions in _random_actions(10):
        obs, *_ = env.step(actions)
    assert env.obs_rms.count == pytest.approx(4 * 11, abs=1e-3)  # every observation, reset steps included
    assert np.isfinite(obs).all() and np.abs(obs).mean() < np.abs(raw_obs).mean() / 2


def test_dtype_observation(gym_venv):
    from gymnasium.wrappers.vector import DtypeObservation

    raw = gym_venv("next_step")
    raw_obs, _ = raw.reset(seed=0)
    env = DtypeObservation(gym_venv("next_step"), np.float64)  # like NormalizeObservation, it refuses SAME_STEP
    obs, _ = env.reset(seed=0)
    assert obs.dtype == np.float64 and env.observation_space.dtype == np.float64
    np.testing.assert_array_equal(obs, raw_obs.astype(np.float64))
    for actions in _random_actions(6):
        obs, *_ = env.step(actions)
        raw_obs, *_ = raw.step(actions)
        assert obs.dtype == np.float64
        np.testing.assert_allclose(obs, raw_obs, rtol=1e-6)


@pytest.mark.parametrize("mode", ["next_step", "same_step"])
def test_normalize_reward(gym_venv, mode):
    from gymnasium.wrappers.vector import NormalizeReward

    raw, env = gym_venv(mode), NormalizeReward(gym_venv(mode))
    raw.reset(seed=0)
    env.reset(seed=0)
    for actions in _random_actions(16):
        _, r_raw, *_ = raw.step(actions)
        _, r_norm, *_ = env.step(actions)
        np.testing.assert_allclose(r_norm, r_raw / np.sqrt(env.return_rms.var + env.epsilon), rtol=1e-5)
    assert env.return_rms.count > 16


def test_numpy_to_torch(gym_venv, tiny):
    _require("array_api_compat")
    from gymnasium.wrappers.vector import NumpyToTorch

    env = NumpyToTorch(gym_venv("next_step"))  # SAME_STEP's final_obs (an object array) has no tensor form
    obs, info = env.reset(seed=0)
    assert isinstance(obs, torch.Tensor) and obs.shape == (4, tiny.hidden_size) and obs.dtype == torch.float32
    ended = 0
    for actions in _random_actions(12):
        obs, reward, terminated, truncated, info = env.step(torch.as_tensor(actions))
        assert all(isinstance(x, torch.Tensor) for x in (obs, reward, terminated, truncated))
        assert all(isinstance(v, torch.Tensor) for v in info.values()), {k: type(v) for k, v in info.items()}
        ended += int((terminated | truncated).sum())
        if "reward_raw" in info:
            assert info["reward_raw"].shape == (4,)
    assert ended >= 4


@pytest.mark.parametrize("mode", ["next_step", "same_step"])
def test_dict_info_to_list(gym_venv, mode):
    from gymnasium.wrappers.vector import DictInfoToList

    env = DictInfoToList(gym_venv(mode))
    _, infos = env.reset(seed=0)
    assert isinstance(infos, list) and len(infos) == 4 and "token_id" in infos[0]
    ended = 0
    for actions in _random_actions(12):
        _, _, terminated, truncated, infos = env.step(actions)
        for i in np.flatnonzero(terminated | truncated):
            ended += 1
            episode = infos[i]["final_info"] if mode == "same_step" else infos[i]
            assert {"reward_raw", "response_length", "decisions"} <= set(episode)
            if mode == "same_step":
                assert infos[i]["final_obs"].shape == (env.unwrapped.lm.hidden_size,)
    assert ended >= 4


# ---------------------------------------------------------------------------------- stable-baselines3's helpers
def test_sb3_make_vec_env(tiny):
    from stable_baselines3.common.env_util import make_vec_env

    with warnings.catch_warnings(record=True) as caught:  # make_vec_env passes render_mode="rgb_array"
        warnings.simplefilter("always")
        venv = make_vec_env(
            proxy_env.ENV_ID,
            n_envs=2,
            seed=0,
            env_kwargs=dict(model=tiny, prompts=PROMPTS, max_new_tokens=3, reward=_length_reward),
        )
    assert any("render_mode='rgb_array' is not supported" in str(w.message) for w in caught)
    assert venv.render_mode is None and venv.num_envs == 2
    venv.reset()
    episodes = 0
    for actions in _random_actions(12, 2):
        obs, _rewards, dones, infos = venv.step(actions)
        assert obs.shape == (2, tiny.hidden_size) and obs.dtype == np.float32
        episodes += sum("episode" in infos[i] for i in np.flatnonzero(dones))  # from SB3's Monitor
    assert episodes >= 2
    venv.close()


def test_sb3_vecnormalize_ppo_evaluate_policy(make_venv, tiny):
    from stable_baselines3 import PPO
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.vec_env import VecNormalize

    env = VecNormalize(SB3VecEnv(make_venv(8, **BANDIT, reward=_bandit_reward(tiny))), gamma=0.0)
    model = PPO(
        "MlpPolicy", env, n_steps=16, batch_size=64, n_epochs=4, learning_rate=3e-3, gamma=0.0, seed=0, device="cpu"
    )
    before = _policy_params(model.policy)
    model.learn(1024)
    assert _changed(before, model.policy) and env.obs_rms.count > 1024
    env.training, env.norm_reward = False, False
    mean, _ = evaluate_policy(model, env, n_eval_episodes=32, deterministic=True, warn=False)
    assert mean > THRESHOLD, mean


# ---------------------------------------------------------------------------------- skrl
def _skrl_models(env):
    from skrl.models.torch import CategoricalMixin, DeterministicMixin, Model

    class Policy(CategoricalMixin, Model):
        def __init__(self):
            Model.__init__(
                self, observation_space=env.observation_space, action_space=env.action_space, device=env.device
            )
            CategoricalMixin.__init__(self)
            self.net = torch.nn.Linear(self.num_observations, self.num_actions)

        def compute(self, inputs, role=""):
            return self.net(inputs["observations"]), {}

    class Value(DeterministicMixin, Model):
        def __init__(self):
            Model.__init__(
                self, observation_space=env.observation_space, action_space=env.action_space, device=env.device
            )
            DeterministicMixin.__init__(self)
            self.net = torch.nn.Linear(self.num_observations, 1)

        def compute(self, inputs, role=""):
            return self.net(inputs["observations"]), {}

    return {"policy": Policy(), "value": Value()}


def test_skrl_ppo_learns(make_venv, tiny, tmp_path):
    _require("skrl")
    from skrl.agents.torch.ppo import PPO, PPO_CFG
    from skrl.envs.wrappers.torch import wrap_env
    from skrl.memories.torch import RandomMemory
    from skrl.resources.preprocessors.torch import RunningStandardScaler
    from skrl.trainers.torch import SequentialTrainer

    torch.manual_seed(0)
    venv = make_venv(8, **BANDIT, reward=_bandit_reward(tiny))  # SAME_STEP, the default
    env = wrap_env(venv, wrapper="gymnasium", verbose=False)
    models = _skrl_models(env)
    cfg = PPO_CFG(
        rollouts=16,
        learning_epochs=4,
        mini_batches=2,
        learning_rate=3e-3,
        discount_factor=0.0,
        observation_preprocessor=RunningStandardScaler,
        observation_preprocessor_kwargs={"size": env.observation_space, "device": env.device},
    )
    cfg.experiment.directory, cfg.experiment.write_interval, cfg.experiment.checkpoint_interval = str(tmp_path), 0, 0
    agent = PPO(
        models=models,
        memory=RandomMemory(memory_size=16, num_envs=env.num_envs, device=env.device),
        observation_space=env.observation_space,
        action_space=env.action_space,
        device=env.device,
        cfg=cfg,
    )
    before = _policy_params(models["policy"])
    # headless=False: skrl's default, whose render step calls env.call("render")
    trainer = SequentialTrainer(
        env=env,
        agents=agent,
        cfg={"timesteps": 160, "headless": False, "disable_progressbar": True, "close_environment_at_exit": False},
    )
    trainer.train()
    assert _changed(before, models["policy"])

    def act(obs, info):
        with torch.no_grad():
            actions, _ = agent.act(torch.as_tensor(obs), None, timestep=0, timesteps=1)
        return actions.view(-1).numpy()

    assert _mean_reward(venv, act) > THRESHOLD


# ---------------------------------------------------------------------------------- TorchRL
@pytest.mark.parametrize("mode", ["disabled", "same_step"])
def test_torchrl_gym_wrapper(make_venv, tiny, mode):
    _require("torchrl")
    from torchrl.envs import GymWrapper
    from torchrl.envs.utils import check_env_specs

    venv = make_venv(4, max_new_tokens=3, autoreset_mode=mode, reward=lambda p, r: [1.0] * len(r))
    env = GymWrapper(venv)  # DISABLED is TorchRL's preferred mode: it resets finished envs itself
    check_env_specs(env)
    env.set_seed(0)
    td = env.rollout(16, break_when_any_done=False)
    assert td.batch_size == (4, 16) and td["observation"].shape == (4, 16, tiny.hidden_size)
    done, reward = td["next", "done"].squeeze(-1), td["next", "reward"].squeeze(-1)
    assert done.sum() >= 4
    np.testing.assert_array_equal(reward.numpy(), done.float().numpy())  # the terminal reward lands on the done step
    after = done[:, :-1]  # a finished env's next step starts a new episode, not from its last observation
    assert (td["next", "observation"][:, :-1][after] != td["observation"][:, 1:][after]).any(-1).all()


def test_torchrl_gym_env_subprocesses():
    """TorchRL's own multi-process path: ``GymEnv(id, num_envs=2)`` runs single envs in Gymnasium's
    AsyncVectorEnv workers, each building its LLM from the plain model name it is given."""
    _require("torchrl")
    from torchrl.envs import GymEnv
    from torchrl.envs.utils import check_env_specs

    # "proxy_env:" makes each spawned worker import proxy_env (which registers the id) before gym.make
    env = GymEnv(f"proxy_env:{proxy_env.ENV_ID}", num_envs=2, model="tiny", prompts=list(PROMPTS), max_new_tokens=3)
    try:
        check_env_specs(env)
        env.set_seed(0)
        td = env.rollout(8, break_when_any_done=False)
        assert td.batch_size == (2, 8) and td["observation"].shape == (2, 8, 64)
        done = td["next", "done"].squeeze(-1)
        assert done.sum() >= 2  # 3-token episodes end within 8 steps in both workers
        assert torch.isfinite(td["observation"]).all() and td["observation"].abs().sum(-1).gt(0).all()
    finally:
        env.close()
