"""`proxy-rlhf demo` (agents/cli/demo.py): both recipes at tiny scale, the decision budget checked before any model
loads, and a demo checkpoint that generates without --model.
"""

from __future__ import annotations

import pytest

from agents.cli import main
from agents.saving.checkpoint import read_meta
from tests.conftest import _cli, _no_model


@pytest.mark.parametrize(
    ("recipe", "trained"), [("tilt", 64), ("ppo", 128)]
)  # PPO rounds up to whole rollouts of 64 steps
def test_demo_at_tiny_scale(capsys, recipe, trained):
    from agents.cli import main

    assert (
        main(
            [
                "demo",
                "--model",
                "tiny",
                "--recipe",
                recipe,
                "--decisions",
                "64",
                "--num-envs",
                "2",
                "--max-new-tokens",
                "4",
                "--eval-prompts",
                "4",
                "--show",
                "1",
                "--no-progress-bar",
                "--out",
                str(__import__("tempfile").mkdtemp()),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    for row in ("| always-accept |", "| best-of-2 |", "| best-of-4 |", f"| {recipe} proxy (sampled actions) |"):
        assert row in out
    assert f"trained {trained} decisions" in out and "(exact)" in out and "PROMPT:" in out
    assert main(["demo", "--decisions", "0"]) == 2


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


@pytest.mark.parametrize("decisions", ["0", "-1"])
def test_demo_budget_must_be_positive(capsys, decisions, monkeypatch):
    _no_model(monkeypatch)
    code, err = _cli(capsys, "demo", "--model", "tiny", "--decisions", decisions)
    assert code == 2 and f"--decisions={decisions} must be >= 1" in err


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--num-envs", "0"], "num_envs=0 must be an int >= 1"),
        (["--num-envs", "-2"], "num_envs=-2 must be an int >= 1"),
        (["--learning-rate", "0"], "learning_rate=0.0 must be a finite number in (0, 1]"),
        (["--recipe", "ppo", "--learning-rate", "0"], "learning_rate=0.0 must be a finite number in (0, 1]"),
    ],
    ids=["num-envs-0", "num-envs-negative", "lr-0-tilt", "lr-0-ppo"],
)
def test_demo_zero_or_negative_settings_are_refused_not_replaced(capsys, monkeypatch, flags, needle):
    """0 is a value, not "unset": it gets train's error instead of silently becoming the recipe's default."""
    _no_model(monkeypatch)
    code, err = _cli(capsys, "demo", "--model", "tiny", *flags)
    assert code == 2 and needle in err, err


def test_cli_demo_is_registered():
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--help"])
    assert exc.value.code == 0
