"""The Ray RLlib backend: a real local Ray, 2 env runners x 4 envs on the tiny model, 2 training iterations."""

from __future__ import annotations

import json
import os
from dataclasses import replace

import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

from agents.rllib.backend import INSTALL, RLlibConfig, env_config
from proxy_env.adapters.rllib import make_rllib_env
from proxy_env.config import EnvConfig
from proxy_env.errors import AutoresetModeError, ConfigError
from tests.conftest import PROMPTS, train_config

ray = pytest.importorskip("ray", reason=f"Ray RLlib is not installed: {INSTALL}")
pytest.importorskip("ray.rllib", reason=f"Ray RLlib is not installed: {INSTALL}")


def _cfg(tmp_path, **kw) -> RLlibConfig:
    base = dict(
        model="tiny",
        prompts=PROMPTS,
        max_new_tokens=4,
        num_envs=4,
        n_steps=8,
        batch_size=16,
        total_timesteps=128,
        learning_rate=1e-2,
        seed=0,
        tensorboard_log=str(tmp_path / "tb"),
        save_dir=str(tmp_path / "rllib_ppo"),
    )
    return train_config(RLlibConfig, **{**base, **kw})


def test_env_creator_forces_next_step_and_refuses_other_modes():
    config = env_config(RLlibConfig(env=EnvConfig(model="tiny", prompts=PROMPTS, max_new_tokens=4)))
    venv = make_rllib_env({**config, "num_envs": 3})
    try:
        assert type(venv.unwrapped).__name__ == "ProxyRLHFVectorEnv" and venv.num_envs == 3
        assert venv.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
        venv.reset(seed=0)
        for _ in range(4):  # max_new_tokens=4 and always accept: every episode ends by step 4 ...
            _, _, terminated, truncated, _ = venv.step(np.ones(3, dtype=np.int64))
        # ... as a termination (the env's own semantics): RLlib must not bootstrap a value at the budget
        assert terminated.all() and not truncated.any()
    finally:
        venv.close()
    with pytest.raises(AutoresetModeError, match="autoreset_mode=NEXT_STEP"):
        make_rllib_env({**config, "num_envs": 2, "autoreset_mode": "same_step"})


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"algo": "a3c"}, "not an algorithm of the rllib backend"),
        ({"algo": "dqn"}, "cannot hold"),
        ({"kl_coef": 0.1, "observation": "prefix"}, "kl_coef=0.1 is not supported"),
    ],
    ids=["unknown-algo", "dqn-save", "kl"],
)
def test_validate_names_what_is_unsupported(tmp_path, kw, match):
    with pytest.raises(ConfigError, match=match):
        _cfg(tmp_path, **kw).validate()
    with pytest.raises(TypeError, match="resume"):  # an SB3 setting: not a field of RLlibConfig at all
        _cfg(tmp_path, resume=".")


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"num_env_runners": -1}, "num_env_runners=-1"),
        ({"gpus_per_runner": -0.5}, "gpus_per_runner=-0.5"),
        ({"threads_per_runner": 0}, "threads_per_runner=0"),
    ],
    ids=["runners", "gpus", "threads"],
)
def test_rllib_config_errors(kw, match):
    with pytest.raises(ConfigError, match=match):
        RLlibConfig(**kw).validate()


def test_cli_refuses_rllib_flags_without_the_backend(capsys):
    from agents.cli import main

    assert main(["train", "--num-env-runners", "3"]) == 2
    assert "--num-env-runners apply to --backend rllib only" in capsys.readouterr().err


@pytest.mark.slow  # ~40 s: Ray starts, two runners each load the tiny LLM, two iterations, then bench
def test_ppo_two_runners_trains_saves_and_benches(tmp_path, tiny):
    import torch

    from agents.accept import accept_model
    from agents.eval.bench import BenchConfig, run_bench
    from agents.rllib.module import ProxyRLModule
    from agents.rllib.train import module_weights, train_rllib
    from agents.saving.checkpoint import load_checkpoint

    seen: dict = {"results": []}

    def hook(algo, result):
        if result is None:
            from agents.rllib.backend import runner_facts

            seen["facts"] = runner_facts(algo)
            seen["before"] = {k: np.array(v) for k, v in module_weights(algo).items()}
        else:
            seen["results"].append(result)
            seen["after"] = {k: np.array(v) for k, v in module_weights(algo).items()}
            seen["module"] = algo.get_module()

    cfg = _cfg(tmp_path)
    result = train_rllib(replace(cfg, num_env_runners=2, num_envs_per_runner=4), on_iteration=hook)
    assert not ray.is_initialized(), "train_rllib shuts down the Ray it started"
    # both runners hold our native vector env, with NEXT_STEP autoreset, in their own processes
    facts = seen["facts"]
    assert [(f["env"], f["autoreset_mode"], f["num_envs"]) for f in facts] == [
        ("ProxyRLHFVectorEnv", "NEXT_STEP", 4)
    ] * 2
    assert len({f["pid"] for f in facts}) == 2 and os.getpid() not in {f["pid"] for f in facts}
    # two iterations of 8 steps x 4 envs x 2 runners; episodes (4 tokens, so >= 4 decisions unless EOS) came back
    assert len(seen["results"]) == 2 and result.model.num_timesteps >= cfg.total_timesteps
    runners = seen["results"][-1]["env_runners"]
    assert runners["num_episodes_lifetime"] >= 16 and runners["episode_len_mean"] >= 1
    assert 0 <= runners["rejection_rate"] <= 1 and np.isfinite(runners["episode_return_mean"])
    # the learner changed the proxy's weights (the action head starts at P(accept) = 0.9)
    changed = [k for k in seen["before"] if not np.allclose(seen["before"][k], seen["after"][k])]
    assert any(k.startswith("policy.action_net") for k in changed) and any(
        k.startswith("policy.features_extractor") for k in changed
    )
    # TensorBoard got SB3's tags
    runs = list((tmp_path / "tb").iterdir())
    assert [p.name for p in runs] == ["rllib_ppo_1"] and any(p.name.startswith("events.") for p in runs[0].iterdir())
    # the checkpoint is an ordinary one: an SB3 PPO with exactly the RLlib module's accept probabilities
    saved = json.loads((tmp_path / "rllib_ppo" / "proxy_config.json").read_text())
    assert (
        saved["algo"] == "ppo"
        and saved["config"]["backend"] == "rllib"
        and saved["llm"]["fingerprint"]["num_layers"] == 2
    )
    loaded = load_checkpoint(tmp_path / "rllib_ppo", device="cpu").model
    obs = np.random.default_rng(0).normal(size=(16, facts[0]["obs_dim"])).astype(np.float32)
    module = ProxyRLModule(
        observation_space=loaded.observation_space,
        action_space=loaded.action_space,
        model_config={"features_dim": 64, "hidden": [64], "init_accept_prob": None},
    )
    module.load_state_dict({k: torch.as_tensor(v) for k, v in seen["after"].items()})
    with torch.no_grad():
        rllib_accept = torch.softmax(module.forward_inference({"obs": torch.as_tensor(obs)})["action_dist_inputs"], -1)[
            :, 1
        ]
    np.testing.assert_allclose(accept_model(loaded, deterministic=False)(obs), rllib_accept.numpy(), atol=1e-6)
    # ... which bench evaluates like an SB3 proxy: generations and a finite exact KL
    res = run_bench(
        BenchConfig(
            quick=True,
            n=(2,),
            bon_reference=2,
            max_new_tokens=4,
            num_prompts=3,
            checkpoints=(str(tmp_path / "rllib_ppo"),),
            proxy_actions=("sample",),
        ),
        lm=tiny,
    )
    proxy = next(a for a in res.agents if a.name.startswith("ppo proxy (rllib_ppo)"))
    assert len(proxy.rewards) == 3 and np.isfinite(proxy.kl).all() and proxy.kl_method == "exact"
