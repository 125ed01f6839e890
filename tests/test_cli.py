"""The `proxy-rlhf` command (agents/cli/app.py): train and generate end to end, every error one line on stderr
with exit 2 (--debug shows the traceback), SIGTERM saves and exits 143, pickled checkpoints need --trust-checkpoint.
"""

from __future__ import annotations

import os
import signal

import pytest

from agents.cli import main
from agents.saving.checkpoint import CheckpointError, load_checkpoint, read_meta, save_checkpoint
from proxy_env.errors import ProxyEnvError
from tests.conftest import PROMPTS, _cli

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


# ---------------------------------------------------------------------------------- train and generate
def test_cli_train_then_resume(tmp_path, capsys):
    flags = [
        "train",
        "--model",
        "tiny",
        "--reward",
        "default",
        "--prompts",
        str(_prompt_file(tmp_path)),
        "--max-new-tokens",
        "3",
        "--num-envs",
        "2",
        "--total-timesteps",
        "32",
        "--n-steps",
        "16",
        "--batch-size",
        "32",
        "--policy-device",
        "cpu",
        "--hidden",
        "32",
        "32",
        "--reject-cost",
        "0.05",
        "--algo-kwargs",
        '{"n_epochs": 2}',
        "--no-progress-bar",
        "--save-dir",
        str(tmp_path / "ck"),
    ]
    assert main(flags) == 0
    out = capsys.readouterr().out
    assert "trainable params" in out and f"checkpoint: {tmp_path / 'ck'}" in out
    assert main(flags + ["--resume", str(tmp_path / "ck")]) == 0
    from agents.saving.checkpoint import read_meta

    meta = read_meta(tmp_path / "ck")
    assert meta.num_timesteps >= 64 and meta.config["reject_cost"] == 0.05 and meta.config["hidden"] == [32, 32]


def _prompt_file(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(PROMPTS), encoding="utf-8")
    return path


def test_cli_generate(saved, capsys):
    assert (
        main(["generate", "--checkpoint", str(saved), "--device", "cpu", "--max-new-tokens", "3", "Hello!", "Hi!"]) == 0
    )
    out = capsys.readouterr().out
    assert out.count("PROMPT: ") == 2 and "PROMPT: Hi!" in out and "rejections=" in out


# ---------------------------------------------------------------------------------- an error is one line, exit 2
def test_cli_reports_config_errors(capsys):
    assert main(["train", "--algo", "dqnn", "--model", "tiny"]) == 2
    assert "Did you mean 'dqn'?" in capsys.readouterr().err


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


def test_cli_os_errors_are_one_line(capsys, tmp_path):
    from agents.cli.app import _explain

    code, err = _cli(capsys, "generate", "--checkpoint", str(tmp_path), "Hi")
    assert code == 2 and "has no proxy_config.json" in err and err.count("\n") == 1
    code, line = _explain(PermissionError(13, "Permission denied", "/srv/runs"))
    assert (
        code == 2
        and line == "Permission denied: '/srv/runs'; check that the path exists and that you may read or write it."
    )


def test_cli_debug_shows_the_traceback():
    with pytest.raises(CheckpointError):
        main(["generate", "--checkpoint", "/nonexistent/ck", "Hi", "--debug"])
    with pytest.raises(ProxyEnvError):
        main(["--debug", "generate", "--checkpoint", "/nonexistent/ck", "Hi"])


# ---------------------------------------------------------------------------------- checkpoints and signals
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


# ---------------------------------------------------------------------------------- each backend shows its own flags
def _help_flags(capsys, *argv: str) -> set[str]:
    import re

    with pytest.raises(SystemExit):
        main(["train", *argv, "--help"])
    return set(re.findall(r"^  (--[a-z0-9-]+)", capsys.readouterr().out, flags=re.M))


@pytest.mark.parametrize("backend", ["sb3", "tilt", "rllib"])
def test_train_help_shows_only_the_flags_the_backend_takes(capsys, backend):
    """A flag is shown iff it is a field of the backend's config (the env's included), minus what the backend refuses."""
    from dataclasses import fields

    from agents.cli.app import backend_config
    from proxy_env.config import EnvConfig

    config = backend_config(backend)
    expected = {f"--{f.name.replace('_', '-')}" for f in fields(config) if f.name != "env"}
    expected |= {
        f"--{f.name.replace('_', '-')}" for f in fields(EnvConfig) if f.name not in config.refused_env_settings
    }
    shown = _help_flags(capsys, "--backend", backend) - {"--help", "--backend", "--debug"}
    assert shown == expected
    if backend == "tilt":  # SB3's rollout, resume and evaluation settings mean nothing to the tilt fit
        assert not shown & {"--n-steps", "--gamma", "--resume", "--eval-freq", "--kl-target", "--reject-cost"}
    if backend == "rllib":  # the KL charge needs the proxy in every runner's env: refused, so not shown
        assert "--kl-coef" not in shown and "--num-env-runners" in shown
    if backend == "sb3":
        assert not shown & {"--tilt-epochs", "--num-env-runners", "--tilt-data"}


def test_another_backends_flag_names_the_backend(capsys):
    assert main(["train", "--model", "tiny", "--tilt-epochs", "3"]) == 2
    assert "--tilt-epochs apply to --backend tilt only" in capsys.readouterr().err
    assert main(["train", "--backend", "rllib", "--kl-coef", "0.1"]) == 2
    assert "--kl-coef apply to --backend sb3 or tilt only" in capsys.readouterr().err
