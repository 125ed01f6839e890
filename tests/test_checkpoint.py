"""Checkpoints (agents/saving/checkpoint.py): a round trip keeps the policy, its optimizer and counters for every
algorithm; the default format unpickles nothing and a pickled SB3 zip loads only when trusted; a failed, rescued or
diverged save keeps what was there; damaged files and another LLM are named.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from agents.saving import checkpoint as ckpt
from agents.saving.checkpoint import CheckpointError, load_checkpoint, read_meta, save_checkpoint
from agents.train import make_sb3_env, train
from proxy_env.errors import ConfigError
from tests.conftest import PROMPTS, _cfg, _zero


# ---------------------------------------------------------------------------------- round trips
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


# ---------------------------------------------------------------------------------- no code runs unless trusted
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


# ---------------------------------------------------------------------------------- failed saves keep what was there
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


# ---------------------------------------------------------------------------------- damaged folders
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


# ---------------------------------------------------------------------------------- the LLM it was trained on
def test_checkpoint_refuses_an_llm_with_another_fingerprint(saved, tiny_gpt2):
    from agents.generate import ProxyGenerator

    with pytest.raises(
        CheckpointError, match=r"trained on the LLM 'tiny'.*model_type 'llama' vs 'gpt2'.*--model 'tiny'"
    ):
        ProxyGenerator.from_checkpoint(saved, model=tiny_gpt2, device="cpu")


def test_a_tensor_writer_failure_is_rescued_too(tmp_path):
    """safetensors' own error ("File too large" under a file-size limit) gets the rescue, not "a bug"."""
    from safetensors import SafetensorError

    from agents.saving.checkpoint import save_or_rescue

    written = []

    def save(agent, path=None):
        if path is None:
            raise SafetensorError("Error while serializing: IoError(File too large (os error 27))")
        written.append(path)
        return path

    with pytest.raises(
        CheckpointError, match=r"could not be written \(Error while serializing.*saved to .*run\.rescued-"
    ):
        save_or_rescue(save, object(), str(tmp_path / "run"))
    assert len(written) == 1 and ".rescued-" in written[0]


def test_flipped_bytes_in_the_weights_are_caught_by_the_recorded_digest(saved, tmp_path):
    """safetensors has no checksum: a few flipped bytes load fine and steer differently, unless the digest is checked."""
    import shutil

    from agents.saving.folder import ProxyFolderError, load_proxy

    path = tmp_path / "flipped"
    shutil.copytree(saved, path)
    weights = path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    for i in range(len(data) - 2000, len(data) - 1000):  # tensor data, not the header: still a valid file
        data[i] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="model.safetensors is damaged or truncated: its sha256"):
        load_checkpoint(path)
    with pytest.raises(ProxyFolderError, match="model.safetensors is damaged or truncated: its sha256"):
        load_proxy(path)
    assert set(json.loads((saved / "proxy_config.json").read_text())["files"]) >= {"model.safetensors"}


def test_a_save_cleans_what_a_killed_save_left_and_keeps_the_folders_mode(saved, tmp_path):
    """A kill in the swap window leaves the checkpoint only in a hidden .old- folder; the next save puts it back
    first, deletes the leftovers, and keeps the folder's and files' modes (mkdtemp alone gives 0700 and 0600)."""
    import shutil

    model = load_checkpoint(saved, device="cpu").model
    path = tmp_path / "ck"
    old = tmp_path / ".ck.old-killed"
    old.mkdir()
    shutil.copytree(saved, old / "ck")  # the swap moved the checkpoint aside, then the process was killed
    (tmp_path / ".ck.tmp-killed").mkdir()  # and a half-written new one
    save_checkpoint(model, path, env_kwargs={"model": "tiny"})
    assert read_meta(path).num_timesteps == model.num_timesteps
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]  # nothing hidden left behind
    os.chmod(path, 0o755)
    save_checkpoint(model, path, env_kwargs={"model": "tiny"})
    assert path.stat().st_mode & 0o777 == 0o755
    umask = os.umask(0)
    os.umask(umask)
    assert {f.stat().st_mode & 0o777 for f in path.iterdir()} == {0o666 & ~umask}  # as any file the user makes


def test_resume_of_a_checkpoint_a_killed_save_left_aside_says_where_it_is(saved, tmp_path):
    import shutil

    from tests.conftest import _cfg

    old = tmp_path / ".ck.old-killed"
    old.mkdir()
    shutil.copytree(saved, old / "ck")
    with pytest.raises(CheckpointError, match=r"left the previous checkpoint at '.*\.ck\.old-killed/ck': move it back"):
        _cfg(resume=str(tmp_path / "ck")).validate()
