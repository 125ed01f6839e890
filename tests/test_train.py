"""Training (agents/train.py), checkpoints (agents/saving/checkpoint.py) and callbacks (agents/callbacks.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from agents.baselines import AlwaysAccept, RandomReject
from agents.callbacks import run_episodes
from agents.saving import checkpoint as ckpt
from agents.saving.checkpoint import CheckpointError, load_checkpoint, read_meta
from agents.train import SB3Config, make_sb3_env, train
from proxy_env.errors import ConfigError
from tests.conftest import PROMPTS, train_config


def _zero(prompts, responses):
    return [0.0] * len(responses)


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


# ---------------------------------------------------------------------------------- checkpoints
@pytest.fixture(scope="module")
def saved(tmp_path_factory, tiny) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "proxy"
    result = train(_tiny_cfg(save_dir=str(path)), reward=_zero)
    assert result.checkpoint == path
    return path


def test_round_trip_gives_identical_actions(saved, tiny):
    first, second = load_checkpoint(saved, device="cpu"), load_checkpoint(saved, device="cpu")
    meta = first.meta
    assert meta.algo == "ppo" and meta.seed == 0 and meta.format_version == ckpt.FORMAT_VERSION
    assert meta.env_kwargs["model"] == "tiny" and meta.env_kwargs["max_new_tokens"] == 4
    assert meta.env_kwargs["reward"] == "<object: _zero>" and meta.num_timesteps >= 64
    env = make_sb3_env({**meta.env_kwargs, "model": tiny, "reward": _zero}, 4, seed=5)
    obs = np.concatenate([env.reset()] + [env.step(np.ones(4, dtype=np.int64))[0] for _ in range(15)])  # (64, 64)
    obs = obs + np.random.default_rng(0).normal(0, 5, obs.shape).astype(np.float32)  # spread the decisions
    a1, _ = first.model.predict(obs, deterministic=True)
    a2, _ = second.model.predict(obs, deterministic=True)
    np.testing.assert_array_equal(a1, a2)
    p1 = first.model.policy.get_distribution(first.model.policy.obs_to_tensor(obs)[0]).distribution.probs
    p2 = second.model.policy.get_distribution(second.model.policy.obs_to_tensor(obs)[0]).distribution.probs
    assert torch.equal(p1, p2)


def test_interrupted_save_keeps_previous_checkpoint(saved, tmp_path, monkeypatch):
    import shutil

    path = tmp_path / "proxy"
    shutil.copytree(saved, path)
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    model = load_checkpoint(path, device="cpu").model

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("simulated crash while writing meta.json")

    monkeypatch.setattr(ckpt.json, "dump", crash)
    with pytest.raises(KeyboardInterrupt, match="simulated crash"):
        ckpt.save_checkpoint(model, path, env_kwargs={"model": "tiny"}, seed=1)
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["proxy"]  # no temporary folder left behind
    monkeypatch.undo()

    calls = []
    real_replace = ckpt.os.replace

    def fail_second_replace(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # the old checkpoint has been moved aside; putting the new one in place fails
            raise OSError("simulated crash during the swap")
        return real_replace(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", fail_second_replace)
    with pytest.raises(OSError, match="during the swap"):
        ckpt.save_checkpoint(model, path, env_kwargs={"model": "tiny"}, seed=1)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before
    assert load_checkpoint(path, device="cpu").meta.seed == 0


def _corrupt_config_missing(path: Path) -> None:
    (path / "proxy_config.json").unlink()


def _corrupt_config_json(path: Path) -> None:
    (path / "proxy_config.json").write_text("{not json", encoding="utf-8")


def _corrupt_weights(path: Path) -> None:
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])


def _weights_of_another_policy(path: Path) -> None:
    config = json.loads((path / "proxy_config.json").read_text())
    config["policy_kwargs"]["net_arch"] = [32]
    (path / "proxy_config.json").write_text(json.dumps(config))


def _edit_config(**changes):
    def edit(path: Path) -> None:
        config = json.loads((path / "proxy_config.json").read_text())
        config.update(changes)
        (path / "proxy_config.json").write_text(json.dumps(config))

    return edit


@pytest.mark.parametrize(
    "corrupt, match",
    [
        (_corrupt_config_missing, "has no proxy_config.json"),
        (_corrupt_config_json, "proxy_config.json is not valid JSON"),
        (_corrupt_weights, "model.safetensors is damaged or truncated"),
        (_weights_of_another_policy, "model.safetensors does not match the policy"),
        (_edit_config(format_version=99), r"format_version=99.*reads format_version=\[1, 2\] only"),
        (_edit_config(algo="ppo9000"), "algo='ppo9000'"),
        (
            _edit_config(policy_kwargs={"features_extractor_class": {"class": "Popen"}}),
            "names class 'Popen', which is not one",
        ),
    ],
    ids=[
        "config-missing",
        "config-unparseable",
        "weights-truncated",
        "weights-mismatch",
        "wrong-version",
        "unknown-algo",
        "class-not-allowed",
    ],
)
def test_corrupted_checkpoint_raises_clear_error(saved, tmp_path, corrupt, match):
    import shutil

    path = tmp_path / "proxy"
    shutil.copytree(saved, path)
    corrupt(path)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(path, device="cpu")


@pytest.fixture(scope="module")
def saved_sb3(tmp_path_factory, saved) -> Path:
    """The same proxy in format 1 (SB3's pickled proxy.zip + meta.json)."""
    path = tmp_path_factory.mktemp("ckpt1") / "proxy"
    ckpt.save_checkpoint(
        load_checkpoint(saved, device="cpu").model, path, env_kwargs={"model": "tiny"}, seed=0, format="sb3"
    )
    return path


def _corrupt_zip(path: Path) -> None:
    (path / "proxy.zip").write_bytes(b"this is not a zip archive")


def _corrupt_zip_contents(path: Path) -> None:
    import zipfile

    with zipfile.ZipFile(path / "proxy.zip", "w") as zf:
        zf.writestr("data", "{}")


@pytest.mark.parametrize(
    "corrupt, match",
    [
        (_corrupt_zip, "proxy.zip is missing or not a zip archive"),
        (_corrupt_zip_contents, "proxy.zip could not be loaded as ppo"),
    ],
    ids=["zip-garbage", "zip-bad-contents"],
)
def test_corrupted_sb3_checkpoint_raises_clear_error(saved_sb3, tmp_path, corrupt, match):
    import shutil

    path = tmp_path / "proxy"
    shutil.copytree(saved_sb3, path)
    corrupt(path)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(path, device="cpu", trust=True)


def test_missing_checkpoint_folder(tmp_path, saved):
    import shutil

    with pytest.raises(CheckpointError, match="is not a folder"):
        load_checkpoint(tmp_path / "nope")
    assert issubclass(CheckpointError, ValueError)
    shutil.copytree(saved, tmp_path / ".proxy.old-x1" / "proxy")  # a process killed between the swap's two renames
    with pytest.raises(CheckpointError, match=r"previous checkpoint at .*\.proxy\.old-x1/proxy.*move it back"):
        load_checkpoint(tmp_path / "proxy")


def test_resume_continues_training(saved, tmp_path):
    done = read_meta(saved).num_timesteps
    out = tmp_path / "resumed"
    result = train(_tiny_cfg(resume=str(saved), save_dir=str(out), total_timesteps=64), reward=_zero)
    assert result.model.num_timesteps >= done + 64
    assert read_meta(out).num_timesteps == result.model.num_timesteps
    with pytest.raises(ConfigError, match="holds a 'ppo' checkpoint but algo='a2c'.*--algo ppo"):
        train(_tiny_cfg(algo="a2c", resume=str(saved)), reward=_zero)


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
