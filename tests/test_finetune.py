"""Tests of agents/finetune (the shared run, the CLI and the GRPO method) on a tiny random Llama."""

from __future__ import annotations

import argparse
import json
import sys

import pytest
import torch

pytest.importorskip("trl")
pytest.importorskip("datasets")

from agents.cli.finetune import add_subcommands
from agents.finetune import FinetuneConfig, finetune, reward_function
from proxy_env.errors import ConfigError, MissingDependencyError, ModelNotFoundError, RewardError
from tests.conftest import PROMPTS


def length_reward(prompts: list[str], responses: list[str]) -> list[float]:
    return [len(r) / 10 for r in responses]


def small(tiny_dir, out, **overrides) -> FinetuneConfig:
    # prompts: a list is accepted by load_prompts (the CLI passes a name or a path)
    values = dict(
        model=str(tiny_dir),
        prompts=PROMPTS,
        out=str(out),
        max_new_tokens=6,
        num_generations=2,
        batch_size=4,
        learning_rate=1e-3,
        max_steps=2,
        seed=0,
    )
    return FinetuneConfig(**{**values, **overrides})


@pytest.fixture(scope="module")
def trained(tiny_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "ft"
    seen: list[tuple[str, str]] = []

    def reward(prompts: list[str], responses: list[str]) -> list[float]:
        seen.extend(zip(prompts, responses))
        return length_reward(prompts, responses)

    result = finetune(small(tiny_dir, out), reward=reward)
    return result, out, seen


def test_trains_and_saves_a_loadable_model(trained, tiny_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result, out, _ = trained
    assert result.steps == 2 and result.output_dir == out and result.samples == 8
    before = AutoModelForCausalLM.from_pretrained(tiny_dir)
    after = AutoModelForCausalLM.from_pretrained(out)
    assert result.trainable_params == sum(p.numel() for p in before.parameters())
    changed = [name for name, p in after.state_dict().items() if not torch.equal(p, before.state_dict()[name])]
    assert len(changed) >= len(before.state_dict()) // 2, "most weights should move after 2 steps at lr 1e-3"
    assert AutoTokenizer.from_pretrained(out).chat_template is not None
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")], "the staging folder must be gone"


def test_metrics_file_and_tensorboard(trained):
    result, out, _ = trained
    meta = json.loads((out / "finetune.json").read_text())
    assert {"wall_s", "steps", "trainable_params", "tensorboard_dir", "config", "reward"} <= set(meta)
    assert meta["steps"] == 2 and meta["reward"] == "reward" and meta["config"]["beta"] == pytest.approx(0.04)
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert meta["tensorboard_dir"] == "tensorboard"  # relative to the model folder: it survives a move
    assert [entry["step"] for entry in result.log_history] == [1, 2]
    assert result.kl_last is not None and result.kl_last >= 0 and result.reward_last is not None


def test_reward_sees_raw_prompts_and_text_responses(trained):
    _, _, seen = trained
    assert len(seen) == 8 and {p for p, _ in seen} <= set(PROMPTS)
    assert all(isinstance(r, str) and "<|im_start|>" not in r for _, r in seen)


def test_prompt_format_matches_the_env(tiny):
    """TRL tokenizes a conversational prompt with the chat template as FrozenLM.encode_prompt does."""
    from agents.finetune.common import prompt_dataset

    rows = list(prompt_dataset(PROMPTS, tiny.tokenizer)["prompt"])
    ids = tiny.tokenizer.apply_chat_template(rows, add_generation_prompt=True, tokenize=True, return_dict=True)[
        "input_ids"
    ]
    assert [list(i) for i in ids] == [tiny.encode_prompt(p) for p in PROMPTS]

    class NoTemplate:
        chat_template = None

    assert list(prompt_dataset(PROMPTS, NoTemplate())["prompt"]) == PROMPTS


@pytest.mark.parametrize(
    "prompts, completions",
    [
        (["Hi"], ["Good!"]),
        ([[{"role": "user", "content": "Hi"}]], [[{"role": "assistant", "content": "Good!"}]]),
    ],
    ids=["plain", "conversational"],
)
def test_reward_function_unwraps(prompts, completions):
    calls = []

    def fn(p, r):
        calls.append((p, r))
        return [1.5] * len(r)

    assert reward_function(fn)(prompts=prompts, completions=completions, completion_ids=[[1]], trainer_state=None) == [
        1.5
    ]
    assert calls == [(["Hi"], ["Good!"])]
    with pytest.raises(RewardError, match="one float per response"):
        reward_function(lambda p, r: [])(prompts=prompts, completions=completions)


def test_time_limit_stops_training_and_overwrite(tiny_dir, tmp_path):
    out = tmp_path / "ft"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    with pytest.raises(ConfigError, match="already exists"):
        small(tiny_dir, out).validate()
    with pytest.raises(
        ConfigError, match=r"did not write \(stale.txt\)"
    ):  # --overwrite replaces a fine-tuned model only
        small(tiny_dir, out, overwrite=True).validate()
    (out / "finetune.json").write_text("{}")  # now it is one (an earlier run's)
    result = finetune(
        small(tiny_dir, out, max_steps=50, time_limit_s=1e-6, overwrite=True, tensorboard=False, beta=0.0),
        reward=length_reward,
    )
    assert result.steps == 1
    assert not (out / "stale.txt").exists() and (out / "config.json").is_file() and not (out / "tensorboard").exists()
    assert result.kl_last is None  # beta=0: TRL loads no reference model
    assert json.loads((out / "finetune.json").read_text())["tensorboard_dir"] is None


def test_failed_final_rename_keeps_the_old_model(tiny_dir, tmp_path, monkeypatch):
    import os

    import agents.finetune.run as ft

    out = tmp_path / "ft"
    out.mkdir()
    (out / "old_model.txt").write_text("old")
    (out / "finetune.json").write_text("{}")  # an earlier fine-tuned model, which --overwrite may replace

    def fake_run(cfg, model, tokenizer, data, staging, callbacks):  # no training: only the swap is tested
        staging.mkdir()
        (staging / "new_model.txt").write_text("new")
        return ft.FinetuneResult(staging, 0.0, 0, 0, 0, None, None, None, [])

    real_rename, calls = os.rename, []

    def flaky_rename(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # ``out`` was moved aside; renaming the new model onto it fails
            raise OSError("disk full")
        return real_rename(src, dst)

    monkeypatch.setattr(ft, "_run", fake_run)
    monkeypatch.setattr(os, "rename", flaky_rename)
    with pytest.raises(OSError, match="disk full"):
        finetune(small(tiny_dir, out, overwrite=True), reward=length_reward)
    monkeypatch.undo()
    assert (out / "old_model.txt").read_text() == "old" and not (out / "new_model.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["ft"]  # neither the staging folder nor a hidden .old is left


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("num_generations", 1, "num_generations=1 must be an int >= 2"),
        ("batch_size", 6, "not a multiple of num_generations=4"),
        ("learning_rate", 0.0, "learning_rate=0.0 must be a number > 0"),
        ("top_p", 1.5, r"top_p=1.5 must be a number in \(0, 1\]"),
        ("beta", -0.1, "beta=-0.1 must be a number >= 0"),
        ("max_steps", 0, "max_steps=0 must be an int >= 1"),
        ("time_limit_s", float("nan"), "time_limit_s=nan"),
        ("device", "gpu", "Did you mean 'cpu'"),
        ("lr_scheduler", "cosin", "Did you mean 'cosine'"),
        ("out", "", "out='' is empty"),
    ],
    ids=lambda v: str(v)[:20],
)
def test_validation(tmp_path, field, value, match):
    cfg = FinetuneConfig(**{"out": str(tmp_path / "ft"), field: value})
    with pytest.raises(ConfigError, match=match):
        cfg.validate()


def test_bad_model_path_fails_before_training(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no such folder"):
        finetune(FinetuneConfig(model=str(tmp_path / "missing"), out=str(tmp_path / "ft")), reward=length_reward)
    assert not (tmp_path / "ft").exists()


def test_missing_trl_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "trl", None)  # makes `import trl` raise ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'proxy-rlhf\[finetune\]'"):
        finetune(FinetuneConfig(out=str(tmp_path / "ft")), reward=length_reward)


def test_cli_flags(tiny_dir, tmp_path, capsys, monkeypatch):
    parser = argparse.ArgumentParser()
    add_subcommands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "finetune",
            "--model",
            str(tiny_dir),
            "--out",
            str(tmp_path / "ft"),
            "--max-steps",
            "1",
            "--batch-size",
            "2",
            "--num-generations",
            "2",
            "--max-new-tokens",
            "4",
            "--no-tensorboard",
            "--learning-rate",
            "1e-4",
        ]
    )
    assert args.batch_size == 2 and args.tensorboard is False and args.learning_rate == pytest.approx(1e-4)
    monkeypatch.setattr("proxy_env.prompts.load_prompts", lambda name: PROMPTS)
    monkeypatch.setattr("proxy_env.rewards.resolve_reward", lambda name: length_reward)
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "step     1  reward" in printed and "1 steps, 2 responses" in printed


@pytest.mark.slow
def test_real_model_two_steps(tmp_path):
    """Two GRPO steps on SmolLM2-135M-Instruct with VADER: the default path end to end (~1 min on 2 cores)."""
    torch.set_num_threads(2)
    result = finetune(
        FinetuneConfig(out=str(tmp_path / "ft"), max_steps=2, max_new_tokens=8, batch_size=4, num_generations=2)
    )
    assert result.steps == 2 and result.trainable_params > 100_000_000
    assert json.loads((tmp_path / "ft" / "finetune.json").read_text())["reward"] == "vader"
