"""tianshou 2.x on the batched env: the adapter under tianshou's own ``Collector``, and ``--backend tianshou`` (PPO)."""

from __future__ import annotations

import inspect
import json
import re

import gymnasium as gym
import numpy as np
import pytest
import torch

import proxy_env
from agents.tianshou_backend import INSTALL, PPO_KWARGS, TianshouConfig, train_tianshou
from proxy_env.adapters.tianshou import TianshouVectorEnv
from proxy_env.config import EnvConfig
from proxy_env.errors import AutoresetModeError, ConfigError, ConfigTypeError, StateError

pytest.importorskip("tianshou", reason=f"tianshou is not installed: {INSTALL}")

from tianshou.algorithm.modelfree.reinforce import DiscreteActorPolicy
from tianshou.data import Collector, VectorReplayBuffer

MAX_TOKENS = 4
# tests/conftest.py's prompts (imported here by value: textstat installs a top-level `tests` package that shadows ours)
PROMPTS = ["Hello!", "How are you today?", "Tell me about the weather.", "What is your favourite book?"]


class Paid:
    """A reward that varies with the text (the response's length in characters) and records what it paid."""

    def __init__(self):
        self.paid: list[float] = []

    def __call__(self, prompts, responses):
        out = [float(len(r)) for r in responses]
        self.paid += out
        return out


class ConstantActor(torch.nn.Module):
    """tianshou's actor interface with fixed logits: ACCEPT with probability ``sigmoid(logit)``."""

    def __init__(self, logit: float):
        super().__init__()
        self.logits = torch.nn.Parameter(torch.tensor([0.0, logit]), requires_grad=False)

    def forward(self, obs, state=None, info=None):
        return self.logits.expand(len(obs), 2), state


def _venv(tiny, num_envs=4, reward=None, **kw):
    return gym.make_vec(
        proxy_env.ENV_ID,
        num_envs=num_envs,
        vectorization_mode="vector_entry_point",
        model=tiny,
        prompts=PROMPTS,
        max_new_tokens=MAX_TOKENS,
        reward=reward or Paid(),
        **kw,
    )


def _collector(env, logit=2.0):
    policy = DiscreteActorPolicy(actor=ConstantActor(logit), action_space=env.action_space[0])
    return Collector(policy, env, VectorReplayBuffer(100 * len(env), len(env)))


# ---------------------------------------------------------------------------------- the adapter under tianshou
def test_collector_collects_steps_and_the_returns_the_env_pays(tiny):
    torch.manual_seed(0)  # the actions tianshou samples
    reward = Paid()
    env = TianshouVectorEnv(_venv(tiny, reward=reward))
    collector = _collector(env)
    collector.reset(gym_reset_kwargs={"seed": 0})
    stats = collector.collect(n_step=48)
    data = collector.buffer[collector.buffer.sample_indices(0)]  # every transition collected
    assert stats.n_collected_steps == len(data) == 48  # 12 steps of 4 envs
    assert stats.n_collected_episodes == int(data.done.sum()) > 4  # 4-token responses: several episodes per env
    # an episode's transitions are its decisions (tokens plus rejections), as the env counts them
    assert sorted(stats.lens.tolist()) == sorted(data.info.decisions[data.done].tolist())
    # every episode the env scored was collected (no env left out), and tianshou's return is what it paid
    assert sorted(stats.returns.tolist()) == sorted(reward.paid)
    assert sorted(data.info.reward_raw[data.done].tolist()) == sorted(reward.paid)
    collector.close()
    assert env.is_closed


def test_collector_collects_episodes_leaving_envs_out(tiny):
    """``n_episode`` < envs steps a subset of ids; the left-out rows are reset before they are used again."""
    torch.manual_seed(1)
    reward = Paid()
    env = TianshouVectorEnv(_venv(tiny, reward=reward))
    collector = _collector(env)
    collector.reset(gym_reset_kwargs={"seed": 1})
    with pytest.warns(UserWarning, match="n_episode=3 should be larger"):  # on purpose: one env is left out
        stats = collector.collect(n_episode=3)
    assert stats.n_collected_episodes == 3 and len(stats.returns) == 3
    assert set(stats.returns.tolist()) <= set(reward.paid)  # (left-out rows were scored too, and discarded)
    assert collector.collect(n_step=8).n_collected_steps == 8  # every env steppable again
    collector.close()


def test_step_translates_same_step_for_tianshou(tiny):
    """The adapter's transitions are the env's: last observation of an ended episode, its reward and infos."""
    raw, env = _venv(tiny, num_envs=3), TianshouVectorEnv(_venv(tiny, num_envs=3))
    obs_raw, _ = raw.reset(seed=7)
    obs, infos = env.reset(seed=7)
    np.testing.assert_array_equal(obs, obs_raw)
    assert [i["env_id"] for i in infos] == [0, 1, 2] and all(i["position"] == 0 for i in infos)
    accept, episodes = np.ones(3, dtype=np.int64), 0
    for _ in range(2 * MAX_TOKENS):  # always-accept: every response ends within MAX_TOKENS steps
        obs_raw, rew_raw, term_raw, _, info_raw = raw.step(accept)
        obs, rew, term, trunc, infos = env.step(accept)
        np.testing.assert_array_equal(rew, rew_raw)
        assert term.tolist() == term_raw.tolist() and not trunc.any()
        for i in range(3):
            np.testing.assert_array_equal(obs[i], info_raw["final_obs"][i] if term_raw[i] else obs_raw[i])
            if term_raw[i]:
                assert infos[i]["reward_raw"] == rew_raw[i] and infos[i]["response_length"] >= 1
        ended = np.flatnonzero(term_raw).tolist()
        if ended:  # tianshou resets a finished env itself: stepping it first is refused, with no side effect
            with pytest.raises(StateError, match=re.escape(f"reset(env_id={ended})")):
                env.step(np.ones(len(ended), dtype=np.int64), id=ended)
            # the env started their next episodes in that step: reset(env_id) hands them over, unchanged
            obs, infos = env.reset(env_id=ended[::-1])
            np.testing.assert_array_equal(obs, obs_raw[ended[::-1]])
            assert [i["env_id"] for i in infos] == ended[::-1] and all(i["position"] == 0 for i in infos)
            episodes += len(ended)
    assert episodes >= 3


def test_partial_ids_step_and_reset(tiny, monkeypatch):
    env = TianshouVectorEnv(_venv(tiny, num_envs=3))
    with pytest.raises(StateError, match="before reset"):
        env.step(np.ones(3, dtype=np.int64))
    env.reset(seed=0)
    obs, rew, term, trunc, infos = env.step(np.ones(2, dtype=np.int64), id=np.array([2, 0]))
    assert obs.shape == (2, 64) and rew.shape == term.shape == trunc.shape == (2,)
    assert [i["env_id"] for i in infos] == [2, 0]
    with pytest.raises(StateError, match=r"left out of a step.*reset\(env_id=\[1\]\)"):  # env 1 moved unseen
        env.step(np.ones(1, dtype=np.int64), id=[1])
    with pytest.raises(ConfigError, match="2 actions for 1 envs"):
        env.step(np.ones(2, dtype=np.int64), id=[0])
    with pytest.raises(ConfigError, match="distinct ints in"):
        env.step(np.ones(2, dtype=np.int64), id=[0, 0])
    resets = []
    unwrapped = env.unwrapped
    original = unwrapped.reset
    monkeypatch.setattr(unwrapped, "reset", lambda **kw: resets.append(kw) or original(**kw))
    obs, infos = env.reset(env_id=[1])  # a real reset of that row only
    assert obs.shape == (1, 64) and infos[0]["position"] == 0
    assert resets[-1]["options"]["reset_mask"].tolist() == [False, True, False]
    for _ in range(MAX_TOKENS):  # step env 1 alone until its episode ends; envs 0 and 2 are left out
        _, _, term, _, _ = env.step(np.ones(1, dtype=np.int64), id=[1])
        if term[0]:
            break
    assert term[0]
    calls = len(resets)
    env.reset(env_id=[1])  # finished: the episode the env already started, with no reset call
    assert len(resets) == calls
    env.reset(env_id=[0, 2])  # left out: reset for real, those rows only
    assert len(resets) == calls + 1 and resets[-1]["options"]["reset_mask"].tolist() == [True, False, True]
    env.reset(env_id=[2], seed=5)  # a seed asks for a real reset: env 2 gets seed 5 + 2
    assert resets[-1]["seed"] == [None, None, 7]
    assert resets[-1]["options"]["reset_mask"].tolist() == [False, False, True]
    env.close()


def test_adapter_refuses_what_it_cannot_translate(tiny):
    with pytest.raises(AutoresetModeError, match="TianshouVectorEnv needs autoreset_mode=SAME_STEP"):
        TianshouVectorEnv(_venv(tiny, num_envs=2, autoreset_mode="next_step"))
    with pytest.raises(ConfigTypeError, match="gymnasium VectorEnv"):
        TianshouVectorEnv(gym.make(proxy_env.ENV_ID, model=tiny, prompts=PROMPTS))  # type: ignore[arg-type]
    env = TianshouVectorEnv(_venv(tiny, num_envs=2))
    assert len(env.action_space) == 2 and env.action_space[0] == gym.spaces.Discrete(2)
    with pytest.raises(ConfigError, match="share one batched env"):
        env.set_env_attr("kl_coef", 0.1, id=[0])
    with pytest.raises(ConfigError, match="reset_mask"):
        env.reset(options={"reset_mask": np.ones(2, dtype=bool)})
    env.close()


# ---------------------------------------------------------------------------------- the training backend
def _cfg(tmp_path, observation="candidate", kl_coef=0.0, **kw) -> TianshouConfig:
    env = EnvConfig(model="tiny", prompts=PROMPTS, max_new_tokens=MAX_TOKENS, observation=observation, kl_coef=kl_coef)
    base = dict(
        num_envs=4,
        n_steps=8,
        batch_size=16,
        n_epochs=2,
        total_timesteps=64,
        learning_rate=1e-2,
        seed=0,
        policy_device="cpu",
        tensorboard_log=str(tmp_path / "tb"),
        save_dir=str(tmp_path / "ts_ppo"),
    )
    return TianshouConfig(env=env, **{**base, **kw})


def test_train_changes_the_proxy_and_saves_an_sb3_checkpoint(tmp_path, tiny):
    from agents.accept import accept_model
    from agents.eval.bench import BenchConfig, run_bench
    from agents.saving.checkpoint import load_checkpoint

    seen: dict = {"epochs": 0}

    def hook(algorithm, stats):
        weights = {k: v.detach().clone() for k, v in algorithm.policy.actor.policy.state_dict().items()}
        seen["algorithm"], seen["before" if stats is None else "after"] = algorithm, weights
        seen["epochs"] += stats is not None

    result = train_tianshou(_cfg(tmp_path), reward=Paid(), on_epoch=hook)  # the model by name, as the CLI passes it
    assert seen["epochs"] == 2 and result.model.num_timesteps == 64  # two rollouts of 8 steps x 4 envs
    assert result.interrupted is None and 0 < result.params.proxy < 20_000
    # the proxy started at P(accept) = 0.9 and PPO moved its heads and its features extractor
    changed = [k for k in seen["before"] if not torch.equal(seen["before"][k], seen["after"][k])]
    assert any(k.startswith("action_net") for k in changed) and any(k.startswith("features_extractor") for k in changed)
    runs = list((tmp_path / "tb").iterdir())
    assert [p.name for p in runs] == ["tianshou_ppo_1"] and any(p.name.startswith("events.") for p in runs[0].iterdir())
    # an ordinary checkpoint, whose SB3 policy accepts exactly as tianshou's actor does
    saved = json.loads((tmp_path / "ts_ppo" / "proxy_config.json").read_text())
    assert saved["algo"] == "ppo" and saved["config"]["backend"] == "tianshou" and saved["num_timesteps"] == 64
    checkpoint = load_checkpoint(tmp_path / "ts_ppo", device="cpu")
    assert checkpoint.meta.config["backend"] == "tianshou" and checkpoint.meta.env_kwargs["model"] == "tiny"
    obs = np.random.default_rng(0).normal(size=(32, 64)).astype(np.float32)
    with torch.no_grad():
        logits, _ = seen["algorithm"].policy.actor(obs)
    tianshou_accept = torch.softmax(logits, -1)[:, 1].numpy()
    assert 0 < tianshou_accept.std() and not np.allclose(tianshou_accept, 0.9, atol=1e-3)  # trained, not the init
    np.testing.assert_allclose(accept_model(checkpoint.model, deterministic=False)(obs), tianshou_accept, atol=1e-6)
    # ... which bench evaluates like an SB3 proxy: generations and a finite exact KL
    bench = BenchConfig(
        quick=True,
        n=(2,),
        bon_reference=2,
        max_new_tokens=MAX_TOKENS,
        num_prompts=3,
        checkpoints=(str(tmp_path / "ts_ppo"),),
    )
    proxy = next(a for a in run_bench(bench, lm=tiny).agents if a.name.startswith("ppo proxy (ts_ppo)"))
    assert len(proxy.rewards) == 3 and np.isfinite(proxy.kl).all() and proxy.kl_method == "exact"


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"algo": "a2c"}, "algo='a2c' is not an algorithm of the tianshou backend"),
        ({"kl_coef": 0.1, "observation": "prefix"}, "kl_coef=0.1 is not supported by --backend tianshou"),
        ({"n_epochs": 0}, "n_epochs=0 must be an int >= 1"),
        ({"algo_kwargs": {"eps": 0.1}}, "'eps', which is not a keyword of tianshou's PPO. Did you mean 'eps_clip'"),
        ({"algo_kwargs": {"gae_lambda": 2}}, r"algo_kwargs\['gae_lambda'\]=2 must be a number in \[0, 1\]"),
        ({"algo_kwargs": {"dual_clip": 0.5}}, r"algo_kwargs\['dual_clip'\]=0.5 must be None or a number > 1"),
        ({"num_envs": 0}, "num_envs=0"),
    ],
    ids=["algo", "kl", "n_epochs", "unknown-kwarg", "gae_lambda", "dual_clip", "num_envs"],
)
def test_bad_config_is_refused_before_the_llm_loads(tmp_path, monkeypatch, kw, match):
    import agents.tianshou_backend as backend

    monkeypatch.setattr(backend, "resolve_lm", lambda *a, **k: pytest.fail("the LLM loaded before the check"))
    with pytest.raises(ConfigError, match=match):
        train_tianshou(_cfg(tmp_path, **kw))
    assert not (tmp_path / "ts_ppo").exists()


def test_ppo_kwargs_are_tianshous_own():
    from tianshou.algorithm import PPO

    keywords = [k for k in inspect.signature(PPO.__init__).parameters if k not in ("self", "policy", "critic", "optim")]
    assert sorted(PPO_KWARGS) == sorted(k for k in keywords if k != "gamma")  # gamma is RLConfig.gamma


def test_cli_trains_with_backend_tianshou(tmp_path, capsys):
    from agents.cli import main
    from agents.saving.checkpoint import read_meta

    args = ["--model", "tiny", "--max-new-tokens", "4", "--num-envs", "2", "--n-steps", "8", "--total-timesteps", "16"]
    path = tmp_path / "cli_ppo"
    assert main(["train", "--backend", "tianshou", *args, "--policy-device", "cpu", "--save-dir", str(path)]) == 0
    assert f"checkpoint: {path}" in capsys.readouterr().out
    meta = read_meta(path)
    assert meta.config["backend"] == "tianshou" and meta.num_timesteps == 16 and meta.config["n_epochs"] == 10
    assert main(["train", "--n-epochs", "3"]) == 2
    assert "--n-epochs apply to --backend tianshou or torch only" in capsys.readouterr().err
    assert main(["train", "--backend", "tianshou", "--kl-coef", "0.1"]) == 2  # a refused setting has no flag
    assert "--kl-coef apply to --backend sb3 or tilt only" in capsys.readouterr().err
