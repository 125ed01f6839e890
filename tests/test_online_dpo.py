"""Tests of agents/finetune/online_dpo.py: online DPO (OAIF) with a reward or an LLM judge as the annotator."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("trl")
pytest.importorskip("datasets")

from agents.finetune import FinetuneConfig, finetune, pairwise_reward
from feedback.sources import Preference
from proxy_env.errors import ConfigError, StateError
from tests.conftest import PROMPTS


def small(tiny_dir, out, **overrides) -> FinetuneConfig:
    values = dict(
        method="online-dpo",
        model=str(tiny_dir),
        prompts=PROMPTS,
        out=str(out),
        max_new_tokens=6,
        batch_size=2,
        learning_rate=1e-3,
        max_steps=2,
        seed=0,
        tensorboard=False,
    )
    return FinetuneConfig(**{**values, **overrides})


def changed_fraction(tiny_dir, out) -> float:
    from transformers import AutoModelForCausalLM

    before, after = (
        AutoModelForCausalLM.from_pretrained(tiny_dir).state_dict(),
        AutoModelForCausalLM.from_pretrained(out).state_dict(),
    )
    return sum(not torch.equal(p, before[name]) for name, p in after.items()) / len(before)


def test_reward_annotator_trains_two_steps(tiny_dir, tmp_path):
    seen: list[tuple[str, str]] = []

    def length(prompts, responses):
        seen.extend(zip(prompts, responses))
        return [len(r) / 10 for r in responses]

    result = finetune(small(tiny_dir, tmp_path / "odpo"), reward=length)
    assert result.steps == 2 and result.samples == 8 and len(seen) == 8  # 2 prompts x 2 samples per step
    assert {p for p, _ in seen} <= set(PROMPTS) and all("<|im_start|>" not in r for _, r in seen)
    assert changed_fraction(tiny_dir, result.output_dir) >= 0.5
    meta = json.loads((result.output_dir / "finetune.json").read_text())
    assert (
        meta["method"] == "online-dpo" and meta["reward"] == "length" and meta["config"]["beta"] == pytest.approx(0.1)
    )
    assert (meta["curve"], meta["point"]) == ("online-dpo (length)", "β=0.1")
    assert result.reward_last is not None and result.kl_last is not None  # objective/scores, objective/kl


def test_judge_model_annotator_trains_two_steps(tiny_dir, tmp_path):
    """--judge-model: a causal LM folder (the tiny Llama here) judges each pair of samples."""
    result = finetune(small(tiny_dir, tmp_path / "odpo", judge_model=str(tiny_dir), beta=0.5))
    assert result.steps == 2 and changed_fraction(tiny_dir, result.output_dir) >= 0.5
    meta = json.loads((result.output_dir / "finetune.json").read_text())
    assert meta["annotator"]["pairs"] == 4 and meta["reward"].startswith("judge:")
    assert meta["annotator"]["first_wins"] + meta["annotator"]["ties"] <= 4
    assert meta["curve"].startswith("online-dpo (judge:") and meta["point"] == "β=0.5"
    assert result.reward_first is None  # a judge's 1/0 scores always average 0.5: no training reward to report


class Scripted:
    """A feedback source with fixed answers."""

    name = "scripted"

    def __init__(self, answers):
        self.answers, self.calls = answers, []

    def label(self, prompts, first, second):
        self.calls.append((prompts, first, second))
        return [Preference(a, None) for a in self.answers]


def test_pairwise_annotator_maps_verdicts_onto_trl_rows():
    source = Scripted([True, False, None])
    annotate = pairwise_reward(source)
    prompts = [[{"role": "user", "content": p}] for p in ("a", "b", "c")] * 2  # TRL: 2 * batch
    completions = [[{"role": "assistant", "content": t}] for t in ("a1", "b1", "c1", "a2", "b2", "c2")]
    assert annotate(prompts=prompts, completions=completions, completion_ids=[], trainer_state=None) == [
        1.0,
        0.0,
        0.5,
        0.0,
        1.0,
        0.5,
    ]
    assert source.calls == [(["a", "b", "c"], ["a1", "b1", "c1"], ["a2", "b2", "c2"])]
    assert annotate.stats.to_json() == {"pairs": 3, "first_wins": 1, "ties": 1, "tie_rate": pytest.approx(1 / 3)}
    with pytest.raises(StateError, match="not two copies of one batch"):
        annotate(prompts=["a", "b"], completions=["x", "y"])


def test_judge_object_is_used_as_given(tiny_dir, tmp_path):
    source = Scripted([True, True])
    result = finetune(small(tiny_dir, tmp_path / "odpo", max_steps=1), judge=source)
    assert len(source.calls) == 1 and len(source.calls[0][0]) == 2
    assert json.loads((result.output_dir / "finetune.json").read_text())["annotator"]["first_wins"] == 2


def test_judge_model_only_with_online_dpo(tmp_path):
    with pytest.raises(ConfigError, match="judge_model applies to method='online-dpo' only"):
        FinetuneConfig(method="grpo", judge_model="x", out=str(tmp_path / "o")).validate()
    with pytest.raises(ConfigError, match="Did you mean 'generate'"):
        FinetuneConfig(method="online-dpo", judge_mode="generat", out=str(tmp_path / "o")).validate()
