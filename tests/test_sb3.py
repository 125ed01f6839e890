"""The SB3 adapter (proxy_env/adapters/sb3.py): VecEnv contract, episode infos, and every registered algorithm trains on it."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import proxy_env
from agents.algos import ALGOS, get_algo
from agents.policies import HiddenStateExtractor, proxy_policy_kwargs
from proxy_env.adapters.sb3 import SB3VecEnv, episode_infos
from proxy_env.errors import AutoresetModeError, ConfigError, ConfigTypeError
from proxy_env.wrappers import RejectCost


def _const_reward(prompts, responses):
    return [float(len(r)) / 10 for r in responses]


@pytest.fixture
def sb3_env(make_venv):
    def make(num_envs: int = 4, **kwargs):
        kwargs.setdefault("reward", _const_reward)
        cost = kwargs.pop("reject_cost", 0.0)
        venv = make_venv(num_envs, **kwargs)
        env = SB3VecEnv(RejectCost(venv, cost) if cost else venv)
        env.seed(0)
        return env

    return make


def _rollout(env: SB3VecEnv, steps: int, rng: np.random.Generator):
    """(obs, rewards, dones, infos) of ``steps`` random steps after a reset."""
    out = []
    env.reset()
    for _ in range(steps):
        out.append(env.step(rng.integers(0, 2, env.num_envs)))
    return out


def test_shapes_and_dtypes(sb3_env):
    env = sb3_env(3)
    obs = env.reset()
    assert obs.shape == (3, 64) and obs.dtype == np.float32
    assert env.observation_space.shape == (64,) and env.action_space.n == 2
    obs, rewards, dones, infos = env.step(np.ones(3, dtype=np.int64))
    assert obs.shape == (3, 64) and obs.dtype == np.float32
    assert rewards.shape == (3,) and rewards.dtype == np.float32
    assert dones.shape == (3,) and dones.dtype == np.bool_
    assert isinstance(infos, list) and len(infos) == 3 and all(isinstance(i, dict) for i in infos)
    assert all("token_id" in i for i in infos)


def test_terminal_observation_exactly_on_done(sb3_env):
    env = sb3_env(4, reject_cost=0.01, info_text=True)
    ended = 0
    returns, lengths = np.zeros(4), np.zeros(4, dtype=int)
    for obs, rewards, dones, infos in _rollout(env, 60, np.random.default_rng(0)):
        returns += rewards
        lengths += 1
        for i, info in enumerate(infos):
            keys = ("terminal_observation", "TimeLimit.truncated", "episode", "rejection_rate", "response_length")
            assert all((k in info) == bool(dones[i]) for k in keys), (i, dones[i], sorted(info))
            if not dones[i]:
                continue
            ended += 1
            assert info["terminal_observation"].shape == (64,) and info["terminal_observation"].dtype == np.float32
            assert not np.array_equal(info["terminal_observation"], obs[i])  # obs is the next episode's first
            assert info["episode"]["r"] == pytest.approx(returns[i], abs=1e-4)
            assert info["episode"]["l"] == lengths[i] == info["decisions"]
            assert info["response_length"] == len(info["response_ids"])
            assert info["rejection_rate"] == pytest.approx(info["num_rejections"] / info["decisions"])
            assert isinstance(info["TimeLimit.truncated"], bool)
            returns[i], lengths[i] = 0.0, 0
    assert ended >= 8


def test_the_budget_is_terminal_so_sb3_does_not_bootstrap(tiny):
    """A fixed-horizon task with a known value: reward 1 when each response ends, γ = λ = 1, a critic fixed at 5.

    Every step of an episode that ends inside the rollout has return exactly 1 (the episode's reward);
    had the budget been reported as a truncation, SB3 would add γ·V(final obs) = 5 at its last step (6).
    """
    from stable_baselines3 import PPO

    from agents.policies import proxy_policy_kwargs

    venv = gym.make_vec(
        proxy_env.ENV_ID,
        num_envs=2,
        vectorization_mode="vector_entry_point",
        model=tiny,
        prompts=["Hi!"],
        max_new_tokens=3,
        reward=lambda p, r: [1.0] * len(r),
    )
    env = SB3VecEnv(venv)
    agent = PPO(
        "MlpPolicy",
        env,
        n_steps=16,
        batch_size=32,
        gamma=1.0,
        gae_lambda=1.0,
        seed=0,
        device="cpu",
        policy_kwargs=proxy_policy_kwargs(),
    )
    with torch.no_grad():
        agent.policy.value_net.weight.zero_()
        agent.policy.value_net.bias.fill_(5.0)
    _, callback = agent._setup_learn(16, None)
    agent.collect_rollouts(env, callback, agent.rollout_buffer, n_rollout_steps=16)
    buffer = agent.rollout_buffer
    ends = np.vstack([buffer.episode_starts[1:], agent._last_episode_starts[None]]).astype(bool)  # (T, B): t ended one
    ended_later = np.flip(np.maximum.accumulate(np.flip(ends, 0), 0), 0).astype(bool)  # (T, B): an end at t or after
    assert ended_later.sum() >= 8 and not ended_later.all()
    np.testing.assert_allclose(buffer.returns[ended_later], 1.0, atol=1e-5)
    np.testing.assert_allclose(buffer.returns[~ended_later], 5.0, atol=1e-5)  # cut by the rollout: bootstrapped
    env.close()


def test_seeding_is_reproducible(sb3_env):
    env = sb3_env(2)
    first = _rollout(env, 10, np.random.default_rng(0))
    env.seed(0)
    second = _rollout(env, 10, np.random.default_rng(0))
    for (o1, r1, d1, _), (o2, r2, d2, _) in zip(first, second):
        np.testing.assert_allclose(o1, o2, atol=1e-5)
        np.testing.assert_array_equal(r1, r2)
        np.testing.assert_array_equal(d1, d2)


def test_attribute_access(sb3_env):
    env = sb3_env(3)
    assert env.get_attr("num_envs") == [3, 3, 3]
    assert env.get_attr("prompts", indices=[1]) == [env.unwrapped.prompts]
    assert env.env_is_wrapped(gym.Wrapper) == [False, False, False]
    env.set_attr("render_mode", None)
    with pytest.raises(ConfigError, match=r"set_attr\(indices=\[0\]\).*only indices=None"):
        env.set_attr("render_mode", None, indices=[0])
    assert env.env_method("render") == [None, None, None]
    env.close()


def test_render_ansi_per_env(sb3_env):
    env = sb3_env(2, render_mode="ansi")
    env.reset()
    frames = env.env_method("render")
    assert len(frames) == 2 and all(f.startswith("PROMPT:") for f in frames)


@pytest.mark.parametrize("mode", ["next_step", "disabled"])
def test_rejects_wrong_autoreset_mode(make_venv, mode):
    with pytest.raises(
        AutoresetModeError,
        match=(
            rf"autoreset_mode={mode.upper()}, but SB3VecEnv needs autoreset_mode=SAME_STEP: .*"
            r"Make the env with autoreset_mode='same_step'"
        ),
    ):
        SB3VecEnv(make_venv(2, autoreset_mode=mode))


def test_episode_infos_without_text(sb3_env):
    """By default the env's infos are numeric: the adapter's episode infos have the counts, not the text."""
    env = sb3_env(4, max_new_tokens=2)
    infos = [info for *_, infos in _rollout(env, 8, np.random.default_rng(0)) for info in episode_infos(infos)]
    assert infos and all(0 < i["response_length"] <= 2 and "response" not in i and "prompt" not in i for i in infos)


def test_rejects_wrong_type():
    with pytest.raises(ConfigTypeError, match="venv must be a gymnasium VectorEnv"):
        SB3VecEnv(gym.make("CartPole-v1"))  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------- algorithms
ALGO_KWARGS = {
    "ppo": {"n_steps": 16, "batch_size": 32, "n_epochs": 2},
    "a2c": {"n_steps": 8},
    "trpo": {"n_steps": 16, "batch_size": 32},
    "recurrentppo": {"n_steps": 16, "batch_size": 32, "n_epochs": 2},
    "dqn": {"learning_starts": 8, "train_freq": 2, "batch_size": 16, "target_update_interval": 4},
    "qrdqn": {"learning_starts": 8, "train_freq": 2, "batch_size": 16, "target_update_interval": 4},
}


@pytest.mark.parametrize("algo", list(ALGOS), ids=list(ALGOS))
def test_algorithm_trains_on_adapter(sb3_env, algo):
    """At least two gradient updates run and the proxy's parameters change."""
    spec = get_algo(algo)
    env = sb3_env(4, max_new_tokens=4)
    model = spec.load_class()(
        spec.policy,
        env,
        policy_kwargs=proxy_policy_kwargs(algo),
        seed=0,
        device="cpu",
        learning_rate=1e-2,
        **ALGO_KWARGS[algo],
    )
    assert any(isinstance(m, HiddenStateExtractor) for m in model.policy.modules())
    before = {k: v.clone() for k, v in model.policy.state_dict().items()}
    steps = 2 * (ALGO_KWARGS[algo].get("n_steps", 0) * env.num_envs) or 64
    model.learn(steps)
    assert model._n_updates >= 2, model._n_updates
    changed = [k for k, v in model.policy.state_dict().items() if "target" not in k and not torch.equal(before[k], v)]
    assert any("features_extractor" in k for k in changed), changed
    assert len(episode_infos([{"episode": {}}, {}])) == 1
