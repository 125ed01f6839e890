"""Reliability (issue 20): a careless or hostile user cannot destroy files, run code from a checkpoint,
wedge the env with one bad reward, lose a run to Ctrl-C, or get a raw traceback from the CLI.

One section per defect of the issue, in its order; every test uses the tiny model.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import pickle
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import proxy_env
from agents.cli import main
from agents.saving.checkpoint import CheckpointError, load_checkpoint, read_meta, save_checkpoint
from agents.train import SB3Config, train
from proxy_env.errors import (
    ConfigError,
    ConfigTypeError,
    DataError,
    FolderInUseError,
    OutputPathError,
    ProxyEnvError,
    RewardError,
    StateError,
)
from proxy_env.folders import FolderLock
from tests.conftest import PROMPTS, train_config

TRAIN = [
    "train",
    "--model",
    "tiny",
    "--total-timesteps",
    "64",
    "--num-envs",
    "2",
    "--n-steps",
    "32",
    "--batch-size",
    "64",
    "--max-new-tokens",
    "4",
    "--eval-prompts",
    "",
    "--no-progress-bar",
    "--policy-device",
    "cpu",
]


def _zero(prompts, responses):
    return [0.0] * len(responses)


def _cfg(**kwargs) -> SB3Config:
    base = dict(
        model="tiny",
        prompts=PROMPTS,
        max_new_tokens=4,
        num_envs=2,
        total_timesteps=64,
        n_steps=32,
        batch_size=64,
        seed=0,
        policy_device="cpu",
        eval_freq=0,
    )
    return train_config(**{**base, **kwargs})


def _no_model(monkeypatch):
    """Fail the test if a model gets loaded: the check under test must come first."""
    import agents.train as train_module

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the check")

    monkeypatch.setattr(train_module, "resolve_lm", refuse)


def _cli(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err
    return code, err


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("rel") / "proxy"
    train(_cfg(save_dir=str(path)), reward=_zero)
    return path


# ------------------------------------------------------------------ 1. never destroy a user's folder
def _thesis(tmp_path: Path) -> Path:
    docs = tmp_path / "mydocs"
    (docs / "thesis").mkdir(parents=True)
    (docs / "thesis" / "ch1.tex").write_text("x")
    return docs


def test_save_dir_holding_user_files_is_refused_before_training(tmp_path, monkeypatch):
    docs = _thesis(tmp_path)
    _no_model(monkeypatch)
    with pytest.raises(
        OutputPathError, match=r"save_dir=.*mydocs.*holds 1 entry that proxy-rlhf did not write \(thesis\)"
    ):
        train(_cfg(save_dir=str(docs)), reward=_zero)
    assert (docs / "thesis" / "ch1.tex").read_text() == "x"


def test_save_dir_holding_checkpoints_is_refused(saved, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    shutil.copytree(saved, runs / "demo")  # `--save-dir runs` must not wipe the checkpoints under it
    _no_model(monkeypatch)
    with pytest.raises(OutputPathError, match="did not write \\(demo\\)"):
        train(_cfg(save_dir=str(runs)), reward=_zero)
    assert (runs / "demo" / "model.safetensors").is_file()


def test_save_checkpoint_never_empties_a_foreign_folder(saved, tmp_path):
    docs = _thesis(tmp_path)
    model = load_checkpoint(saved, device="cpu").model
    with pytest.raises(OutputPathError, match="did not write"):
        save_checkpoint(model, docs, env_kwargs={"model": "tiny"})
    (tmp_path / "lone").mkdir()
    (tmp_path / "lone" / "model.safetensors").write_bytes(b"someone's model")  # our file name, but no marker: not ours
    with pytest.raises(OutputPathError, match="did not write"):
        save_checkpoint(model, tmp_path / "lone", env_kwargs={"model": "tiny"})
    assert (docs / "thesis" / "ch1.tex").is_file() and (
        tmp_path / "lone" / "model.safetensors"
    ).read_bytes() == b"someone's model"


def test_file_dropped_into_save_dir_during_training_is_kept_and_the_proxy_saved_beside(tmp_path):
    from stable_baselines3.common.callbacks import BaseCallback

    target = tmp_path / "run"

    class UserWritesThere(BaseCallback):
        def _on_step(self) -> bool:
            target.mkdir(exist_ok=True)
            (target / "notes.txt").write_text("mine")
            return True

    with pytest.raises(CheckpointError, match=r"could not be written.*saved to .*run\.rescued-"):
        train(_cfg(save_dir=str(target)), reward=_zero, callbacks=[UserWritesThere()])
    assert (target / "notes.txt").read_text() == "mine"
    rescued = [p for p in tmp_path.iterdir() if p.name.startswith("run.rescued-")]
    assert len(rescued) == 1 and read_meta(rescued[0]).num_timesteps >= 64


def test_failed_periodic_save_does_not_end_the_run(tmp_path):
    from stable_baselines3.common.callbacks import BaseCallback

    target = tmp_path / "run"

    class UserWritesThere(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps == 8:
                target.mkdir(exist_ok=True)
                (target / "notes.txt").write_text("mine")
            return True

    with pytest.raises(CheckpointError, match="saved to .*run.rescued-"):  # trained to the end, then saved beside
        train(_cfg(save_dir=str(target), save_freq=16, total_timesteps=64), reward=_zero, callbacks=[UserWritesThere()])
    rescued = next(p for p in tmp_path.iterdir() if p.name.startswith("run.rescued-"))
    assert read_meta(rescued).num_timesteps >= 64 and (target / "notes.txt").read_text() == "mine"


def test_demo_out_and_finetune_out_refuse_user_folders(tmp_path, capsys):
    docs = _thesis(tmp_path)
    code, err = _cli(capsys, "demo", "--model", "tiny", "--out", str(docs))
    assert code == 2 and "--out=" in err and "did not write (thesis)" in err and err.count("\n") == 1
    from agents.finetune import FinetuneConfig

    with pytest.raises(OutputPathError, match="did not write"):
        FinetuneConfig(out=str(docs), overwrite=True).validate()
    assert (docs / "thesis" / "ch1.tex").is_file()


# ------------------------------------------------------------------ 2. never run code from a checkpoint
def _poisoned_sb3_checkpoint(saved: Path, folder: Path, marker: Path) -> Path:
    """A format-1 folder whose proxy.zip carries a pickle that creates ``marker`` when unpickled."""
    import zipfile

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = folder / "poisoned"
    save_checkpoint(load_checkpoint(saved, device="cpu").model, path, env_kwargs={"model": "tiny"}, format="sb3")
    with zipfile.ZipFile(path / "proxy.zip") as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    data = json.loads(members["data"])
    data["evil"] = {":type:": "<class 'object'>", ":serialized:": base64.b64encode(pickle.dumps(Payload())).decode()}
    members["data"] = json.dumps(data).encode()
    with zipfile.ZipFile(path / "proxy.zip", "w") as zf:
        for name, blob in members.items():
            zf.writestr(name, blob)
    return path


def test_sb3_zip_runs_no_code_without_trust_and_warns_with_it(saved, tmp_path, caplog):
    marker = tmp_path / "pwned"
    path = _poisoned_sb3_checkpoint(saved, tmp_path, marker)
    with pytest.raises(
        CheckpointError, match="unpickles Python objects, which can run arbitrary code.*trust=True.*--trust-checkpoint"
    ):
        load_checkpoint(path, device="cpu")
    assert not marker.exists()
    with caplog.at_level(logging.WARNING, logger="agents.saving.checkpoint"):
        load_checkpoint(path, device="cpu", trust=True)
    assert marker.exists(), "the payload is real: trust=True is what runs it"
    assert "can run arbitrary code" in caplog.text


def test_default_format_loads_without_unpickling_anything(saved, monkeypatch):
    import cloudpickle

    def refuse(*args, **kwargs):
        raise AssertionError("unpickling during load")

    for module, name in ((pickle, "loads"), (pickle, "load"), (cloudpickle, "loads"), (torch, "load")):
        monkeypatch.setattr(module, name, refuse)
    checkpoint = load_checkpoint(saved, device="cpu")
    assert sorted(p.name for p in saved.iterdir()) == [
        "model.safetensors",
        "optimizer.safetensors",
        "proxy_config.json",
    ]
    assert checkpoint.meta.format_version == 2 and checkpoint.meta.llm["fingerprint"]["vocab_size"] == 49152


def test_round_trip_keeps_weights_optimizer_and_counters(saved):
    first, second = load_checkpoint(saved, device="cpu").model, load_checkpoint(saved, device="cpu").model
    for a, b in zip(first.policy.state_dict().values(), second.policy.state_dict().values()):
        assert torch.equal(a, b)
    state = first.policy.optimizer.state_dict()["state"]
    assert state and all(
        torch.equal(v, second.policy.optimizer.state_dict()["state"][k][n]) for k in state for n, v in state[k].items()
    )
    assert first.num_timesteps == read_meta(saved).num_timesteps >= 64


@pytest.mark.parametrize("algo", ["a2c", "dqn", "recurrentppo"])
def test_every_algorithm_round_trips_in_the_pickle_free_format(algo, tmp_path, tiny):
    from agents.train import make_sb3_env

    extra = (
        {"n_steps": 8} if algo != "dqn" else {"n_steps": None, "batch_size": 8, "algo_kwargs": {"learning_starts": 0}}
    )
    result = train(
        _cfg(algo=algo, total_timesteps=16, **{"batch_size": None, **extra}, save_dir=str(tmp_path / algo)),
        model=tiny,
        reward=_zero,
    )
    loaded = load_checkpoint(result.checkpoint, device="cpu").model
    obs = np.random.default_rng(0).normal(0, 3, (8, tiny.hidden_size)).astype(np.float32)
    starts = np.ones(8, dtype=bool)
    np.testing.assert_array_equal(
        result.model.predict(obs, episode_start=starts, deterministic=True)[0],
        loaded.predict(obs, episode_start=starts, deterministic=True)[0],
    )
    env = make_sb3_env({"model": tiny, "prompts": PROMPTS, "max_new_tokens": 4, "reward": _zero}, 2)
    resumed = load_checkpoint(result.checkpoint, env=env, device="cpu").model  # attachable to continue training
    resumed.learn(8, reset_num_timesteps=False)
    env.close()


def test_cli_needs_trust_flag_for_sb3_zip(saved, tmp_path, capsys):
    path = tmp_path / "old"
    save_checkpoint(
        load_checkpoint(saved, device="cpu").model, path, env_kwargs=read_meta(saved).env_kwargs, format="sb3"
    )
    code, err = _cli(capsys, "generate", "--checkpoint", str(path), "Hi!", "--max-new-tokens", "2")
    assert code == 2 and "--trust-checkpoint" in err and "Traceback" not in err
    assert (
        _cli(capsys, "generate", "--checkpoint", str(path), "Hi!", "--max-new-tokens", "2", "--trust-checkpoint")[0]
        == 0
    )
    code, err = _cli(capsys, *TRAIN, "--resume", str(path))
    assert code == 2 and "--trust-checkpoint" in err
    assert (
        _cli(capsys, *TRAIN, "--resume", str(path), "--trust-checkpoint", "--save-dir", str(tmp_path / "new"))[0] == 0
    )
    assert read_meta(tmp_path / "new").format_version == 2  # saving again writes the pickle-free format


# ------------------------------------------------------------------ 3. one reward failure does not wedge the env
class Flaky:
    """Raises (or returns NaN) on its ``bad``-th call, fine otherwise."""

    name = "flaky"

    def __init__(self, bad: int, nan: bool = False):
        self.calls, self.bad, self.nan = 0, bad, nan

    def __call__(self, prompts, responses):
        self.calls += 1
        if self.calls == self.bad:
            if self.nan:
                return [float("nan")] * len(responses)
            raise ValueError("reward server timed out")
        return [1.0] * len(responses)


def _run_until_error(venv, n):
    for _ in range(200):
        venv.step(np.ones(n, dtype=np.int64))
    raise AssertionError("no reward error")


@pytest.mark.parametrize("nan", [False, True], ids=["raises", "nan"])
def test_reward_failure_says_reset_and_the_env_recovers(make_venv, nan):
    venv = make_venv(2, reward=Flaky(bad=1, nan=nan), max_new_tokens=3)
    venv.reset(seed=0)
    with pytest.raises(
        RewardError, match=r"(raised ValueError: reward server timed out|returned nan).*usable again after reset\(\)"
    ):
        _run_until_error(venv, 2)
    with pytest.raises(StateError, match=r"last step\(\) failed.*call reset\(\) before step\(\)"):
        venv.step(np.ones(2, dtype=np.int64))
    venv.reset(seed=1)
    ended = 0
    for _ in range(20):
        _, reward, term, trunc, _ = venv.step(np.ones(2, dtype=np.int64))
        ended += int((term | trunc).sum())
        assert np.all(reward[term | trunc] == 1.0)
    assert ended >= 2


def test_reward_failure_partial_reset_must_cover_the_failed_envs(make_venv):
    venv = make_venv(2, reward=Flaky(bad=1), max_new_tokens=3)
    venv.reset(seed=0)
    with pytest.raises(RewardError):
        _run_until_error(venv, 2)
    failed = venv.unwrapped._failed[1].cpu().numpy()
    if not failed.all():
        with pytest.raises(StateError, match="reset them too"):
            venv.reset(options={"reset_mask": ~failed})
    venv.reset(options={"reset_mask": failed})
    venv.step(np.ones(2, dtype=np.int64))


# ------------------------------------------------------------------ 4. an interrupted or failed save keeps the run
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_signal_stops_training_and_saves(tmp_path, signum):
    from stable_baselines3.common.callbacks import BaseCallback

    class Kill(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps == 16:
                os.kill(os.getpid(), signum)
            return True

    result = train(_cfg(save_dir=str(tmp_path / "run"), total_timesteps=10_000), reward=_zero, callbacks=[Kill()])
    assert result.interrupted == signal.Signals(signum).name
    assert 16 <= result.model.num_timesteps < 10_000
    assert read_meta(tmp_path / "run").num_timesteps == result.model.num_timesteps
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored


def test_cli_sigterm_saves_and_exits_143(tmp_path, capsys, monkeypatch):
    from agents import callbacks

    def step_and_kill(self):
        if self.num_timesteps == 8:
            os.kill(os.getpid(), signal.SIGTERM)
        return True

    monkeypatch.setattr(callbacks.EpisodeStatsCallback, "_on_step", step_and_kill)
    code, err = _cli(capsys, *TRAIN, "--total-timesteps", "100000", "--save-dir", str(tmp_path / "run"))
    assert code == 143 and "SIGTERM received" in err and "checkpoint saved" in err
    assert read_meta(tmp_path / "run").num_timesteps < 100_000


@pytest.mark.parametrize(
    "where, match",
    [("afile/sub", "lies under .*afile.*which is a file"), (".", "current or home folder"), ("afile", "is a file")],
    ids=["under-file", "cwd", "file"],
)
def test_save_path_checked_before_training(tmp_path, monkeypatch, where, match):
    (tmp_path / "afile").write_text("x")
    monkeypatch.chdir(tmp_path)
    _no_model(monkeypatch)
    with pytest.raises(OutputPathError, match=match):
        train(_cfg(save_dir=where), reward=_zero)
    assert (tmp_path / "afile").read_text() == "x"


# ------------------------------------------------------------------ 5. demo budget 0 or -1 (now in decisions, not minutes)
@pytest.mark.parametrize("decisions", ["0", "-1"])
def test_demo_budget_must_be_positive(capsys, decisions, monkeypatch):
    _no_model(monkeypatch)
    code, err = _cli(capsys, "demo", "--model", "tiny", "--decisions", decisions)
    assert code == 2 and f"--decisions={decisions} must be >= 1" in err


# ------------------------------------------------------------------ 6. one run per save folder
def test_second_run_on_a_locked_save_dir_fails_at_once(tmp_path, monkeypatch):
    target = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from proxy_env.folders import FolderLock; "
            f"FolderLock({str(target)!r}).acquire(); print('locked', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        _no_model(monkeypatch)
        with pytest.raises(
            FolderInUseError, match=rf"save_dir=.*run.* is being written by another run \(pid {holder.pid}"
        ):
            train(_cfg(save_dir=str(target)), reward=_zero)
    finally:
        holder.kill()
        holder.wait()
    with FolderLock(target):  # the kernel released the dead holder's lock
        with pytest.raises(FolderInUseError):
            FolderLock(target).acquire()  # and one process cannot take it twice
    assert not (tmp_path / ".run.lock").exists()


# ------------------------------------------------------------------ 8. bounded budgets
@pytest.mark.parametrize("tokens", [2000, 10**9, 10**12])
def test_max_new_tokens_beyond_the_models_positions(make_venv, tokens):
    import time

    start = time.perf_counter()
    with pytest.raises(
        ConfigError, match=rf"max_new_tokens={tokens} does not fit the 1024 positions.*pass max_new_tokens <= \d+"
    ):
        make_venv(1, max_new_tokens=tokens)
    assert time.perf_counter() - start < 5  # refused before allocating anything


def test_prompt_longer_than_the_models_positions(make_venv, tiny_gpt2):
    with pytest.raises(ConfigError, match=r"prompts\[1\] \('hello world.*is \d+ tokens.*has 1024.*Shorten it"):
        make_venv(1, model=tiny_gpt2, prompts=["Hi", "hello world " * 1500])


def test_memory_estimate_before_allocating(make_venv, monkeypatch):
    from proxy_env import guards

    monkeypatch.setattr(guards, "available_bytes", lambda device: 1 << 20)
    with pytest.raises(
        ConfigError, match=r"num_envs=64 x max_new_tokens=900 need ~.* GiB.*lower max_new_tokens or num_envs"
    ):
        make_venv(64, max_new_tokens=900)


def test_rollout_buffer_memory_checked(monkeypatch):
    from proxy_env import guards

    real = guards.available_bytes
    monkeypatch.setattr(guards, "available_bytes", lambda device: 1 << 30 if device is None else real(device))
    with pytest.raises(ConfigError, match=r"n_steps=10000000 x num_envs=2 .* lower n_steps or num_envs"):
        train(_cfg(n_steps=10_000_000), reward=_zero)


# ------------------------------------------------------------------ 9. seeds as Gymnasium takes them
def _first_obs(venv, seed):
    return venv.reset(seed=seed)[0]


def test_numpy_and_huge_seeds_on_the_vector_env(make_venv, make_env):
    venv = make_venv(2)
    np.testing.assert_array_equal(_first_obs(venv, np.int64(3)), _first_obs(venv, 3))
    big = venv.reset(seed=2**63 - 1)  # env 1 gets 2**63: taken modulo 2**64, as on the single env
    env = make_env()
    for i, seed in enumerate([2**63 - 1, 2**63]):
        obs, info = env.reset(seed=seed)
        assert info["token_id"] == big[1]["token_id"][i]  # same prompt and candidate as env i of the vector env
        np.testing.assert_allclose(obs, big[0][i], rtol=1e-4, atol=1e-5)  # batched vs alone: float tolerance
    np.testing.assert_array_equal(env.reset(seed=np.uint32(5))[0], env.reset(seed=5)[0])
    mixed = venv.reset(seed=[np.int64(7), None])[0]
    np.testing.assert_array_equal(mixed[0], _first_obs(venv, [7, 8])[0])


@pytest.mark.parametrize(
    "seed, error, match",
    [
        ("abc", ConfigTypeError, "seed='abc' must be None, a non-negative int"),
        (-1, ConfigError, "seed=-1 must be >= 0"),
        (1.5, ConfigTypeError, "seed=1.5"),
        (True, ConfigTypeError, "seed=True"),
        ([1, 2, 3], ConfigError, "3 values for num_envs=2"),
        ([1, "x"], ConfigTypeError, r"seed\[1\]='x'"),
    ],
    ids=["str", "negative", "float", "bool", "length", "list-entry"],
)
def test_bad_seeds_are_refused_clearly(make_venv, seed, error, match):
    venv = make_venv(2)
    with pytest.raises(error, match=match):
        venv.reset(seed=seed)


def test_train_seed_range_is_checked_first(monkeypatch):
    _no_model(monkeypatch)
    with pytest.raises(ConfigError, match=r"seed=4294967296 must be an int in \[0, 2\*\*32\)"):
        train(_cfg(seed=2**32), reward=_zero)


# ------------------------------------------------------------------ 10. damaged files
def test_meta_json_missing_fields(saved, tmp_path):
    path = tmp_path / "old"
    save_checkpoint(load_checkpoint(saved, device="cpu").model, path, env_kwargs={"model": "tiny"}, format="sb3")
    meta = json.loads((path / "meta.json").read_text())
    del meta["env_kwargs"]
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"meta.json lacks \['env_kwargs'\]; the checkpoint is corrupted"):
        read_meta(path)
    meta["env_kwargs"], meta["num_timesteps"] = {}, "many"
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="num_timesteps='many' must be an int >= 0"):
        load_checkpoint(path, trust=True)


def test_truncated_reward_model_weights(tmp_path, monkeypatch):
    import proxy_env.rewards.learned as rm

    class Encoder:  # a stand-in sentence encoder: the test is about the weights file, not the encoder
        name, dim = "stub", 4

        def spec(self):
            return {"kind": "stub"}

    folder = rm.BTRewardModel(Encoder(), rm.make_head(4, 0), hidden=0).save(tmp_path / "rm")
    _truncate(folder / rm.WEIGHTS_NAME)
    monkeypatch.setattr(rm, "encoder_from_spec", lambda spec, **kwargs: Encoder())
    with pytest.raises(DataError, match=r"model.safetensors: damaged or truncated.*retrain the reward model"):
        rm.load_reward_model(folder)


@pytest.fixture
def fake_default_cache(tmp_path, monkeypatch):
    """The default model's cache under tmp_path, 'converted' by saving the tiny model (no 538 MB GGUF conversion)."""
    from transformers import AutoTokenizer

    from proxy_env import assets
    from proxy_env.engine.tiny import tiny_model

    real_tokenizer = assets.default_tokenizer_dir()
    builds = []

    def convert(gguf, tokenizer_dir, tmp):
        builds.append(tmp)
        tiny_model().save_pretrained(tmp)
        AutoTokenizer.from_pretrained(real_tokenizer).save_pretrained(tmp)

    monkeypatch.setenv(assets.CACHE_ENV_VAR, str(tmp_path / "cache"))
    monkeypatch.setattr(
        assets, "_default_root", lambda: (Path("unused.gguf"), tmp_path / "cache" / f"{assets.DEFAULT_NAME}-0123")
    )
    monkeypatch.setattr(assets, "default_tokenizer_dir", lambda: real_tokenizer)
    monkeypatch.setattr(assets, "_convert_default_model", convert)
    return builds


def _truncate(file: Path) -> None:
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])


def test_truncated_default_model_cache_is_rebuilt(fake_default_cache):
    from proxy_env import assets
    from proxy_env.engine.lm import FrozenLM

    folder = assets.default_model_dir()
    assert len(fake_default_cache) == 1
    _truncate(folder / "model.safetensors")  # the manifest shows it: rebuilt before loading
    assert FrozenLM("default", device="cpu").hidden_size == 64 and len(fake_default_cache) == 2
    (folder / assets.MANIFEST).unlink()  # a cache from before manifests: the failed load triggers the rebuild
    _truncate(folder / "model.safetensors")
    assert FrozenLM("default", device="cpu").hidden_size == 64 and len(fake_default_cache) == 3


def test_default_model_cache_that_stays_broken_names_the_fix(fake_default_cache, monkeypatch):
    from proxy_env import assets
    from proxy_env.engine.lm import FrozenLM

    def broken(gguf, tokenizer_dir, tmp):
        tmp.mkdir()
        (tmp / "config.json").write_text("{}")

    monkeypatch.setattr(assets, "_convert_default_model", broken)
    with pytest.raises(
        DataError, match=r"model='default': the cached folder .* still fails to load after a rebuild.*delete it"
    ):
        FrozenLM("default", device="cpu")


# ------------------------------------------------------------------ the smaller ones
def test_device_and_dtype_with_a_frozenlm_object(make_venv):
    with pytest.raises(ConfigError, match=r"dtype='bfloat16' was passed with a FrozenLM in torch.float32.*not cast"):
        make_venv(1, dtype="bfloat16")
    make_venv(1, dtype="float32", device="cpu").close()  # agreeing values are fine


def test_demo_checkpoint_generates_without_model_flag(tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(
        [
            "demo",
            "--model",
            "tiny",
            "--decisions",
            "64",
            "--num-envs",
            "2",
            "--max-new-tokens",
            "4",
            "--eval-prompts",
            "2",
            "--show",
            "0",
            "--no-progress-bar",
            "--out",
            str(out),
        ]
    )
    assert code == 0 and read_meta(out).env_kwargs["model"] == "tiny"
    capsys.readouterr()
    assert main(["generate", "--checkpoint", str(out), "Hello there!"]) == 0
    assert "RESPONSE:" in capsys.readouterr().out


def test_checkpoint_refuses_an_llm_with_another_fingerprint(saved, tiny_gpt2):
    from agents.generate import ProxyGenerator

    with pytest.raises(
        CheckpointError, match=r"trained on the LLM 'tiny'.*model_type 'llama' vs 'gpt2'.*--model 'tiny'"
    ):
        ProxyGenerator.from_checkpoint(saved, model=tiny_gpt2, device="cpu")


# ------------------------------------------------------------------ the CLI: one line, exit 2, --debug for the traceback
@pytest.mark.parametrize(
    "argv, needle",
    [
        (["generate", "--checkpoint", "/nonexistent/ck", "Hi"], "is not a folder"),
        (["train", "--model", "tiny", "--num-envs", "0"], "num_envs=0 must be an int >= 1"),
        (["train", "--model", "tiny", "--seed", "-3"], "seed=-3"),
        (["demo", "--model", "tiny", "--decisions", "-1"], "--decisions=-1"),
        (["train", "--model", "tiny", "--time-limit-s", "nan"], "time_limit_s=nan"),
    ],
    ids=["missing-checkpoint", "num-envs", "seed", "decisions", "nan-time"],
)
def test_cli_errors_are_one_line_with_exit_2(capsys, argv, needle):
    code, err = _cli(capsys, *argv)
    assert code == 2 and needle in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize(
    "flags, needle",
    [
        (["--policy-device", "tpu"], "device='tpu'"),
        (["--algo-kwargs", '{"batch_size": 1}'], "batch_size"),
        (["--algo-kwargs", '{"n_epochs": -1}'], "algo_kwargs['n_epochs']=-1 must be an int >= 1"),
        (["--algo-kwargs", '{"n_epoch": 4}'], "Did you mean 'n_epochs'"),
        (["--learning-rate", "1e12"], "learning_rate=1000000000000.0"),
        (["--algo-kwargs", "{broken"], "argument --algo-kwargs: invalid JSON object value"),
    ],
    ids=["device", "sb3-assert", "n-epochs", "unknown-kwarg", "learning-rate", "argparse"],
)
def test_cli_bad_hyperparameters_are_one_line(capsys, flags, needle):
    code, err = (
        _cli(capsys, *TRAIN, *flags)
        if flags[0] != "--algo-kwargs" or "broken" not in flags[1]
        else _argparse(capsys, flags)
    )
    assert code == 2 and needle in err and err.count("\n") == 1 and "Traceback" not in err


def _argparse(capsys, flags):
    with pytest.raises(SystemExit) as exc:
        main([*TRAIN, *flags])
    return exc.value.code, capsys.readouterr().err


def test_diverged_policy_is_not_saved_over_a_checkpoint(saved, tmp_path):
    path = tmp_path / "proxy"
    shutil.copytree(saved, path)
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    model = load_checkpoint(path, device="cpu").model
    with torch.no_grad():
        next(model.policy.parameters()).fill_(float("nan"))
    with pytest.raises(CheckpointError, match="NaN or inf parameters.*training diverged.*is kept"):
        save_checkpoint(model, path, env_kwargs={"model": "tiny"})
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before
    with pytest.raises(ConfigError, match="device='gpu'"):
        load_checkpoint(path, device="gpu")


def test_cli_debug_shows_the_traceback():
    with pytest.raises(CheckpointError):
        main(["generate", "--checkpoint", "/nonexistent/ck", "Hi", "--debug"])
    with pytest.raises(ProxyEnvError):
        main(["--debug", "generate", "--checkpoint", "/nonexistent/ck", "Hi"])


def test_cli_os_errors_are_one_line(capsys, tmp_path):
    from agents.cli.app import _explain

    code, err = _cli(capsys, "generate", "--checkpoint", str(tmp_path), "Hi")
    assert code == 2 and "has no proxy_config.json" in err and err.count("\n") == 1
    code, line = _explain(PermissionError(13, "Permission denied", "/srv/runs"))
    assert (
        code == 2
        and line == "Permission denied: '/srv/runs'; check that the path exists and that you may read or write it."
    )


def test_env_still_registered():
    assert proxy_env.ENV_ID in gym.registry
