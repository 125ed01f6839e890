"""Tests of agents/finetune/dpo.py: DPO on `prefs build` pairs, the perplexity filter and its random control."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("trl")
pytest.importorskip("datasets")

from agents.finetune import FinetuneConfig, finetune, select_pairs
from feedback.records import PreferencePair
from proxy_env.errors import ConfigError, DataError

# (ppl_chosen, ppl_rejected) per pair; the 0.5 quantile of all 16 values is 5.25: pairs 0, 2 and 7 lie under it
PPL = [(2.0, 3.0), (9.0, 1.0), (4.0, 5.0), (6.0, 7.0), (3.0, 12.0), (5.5, 6.0), (8.0, 8.5), (1.5, 2.5)]


def pairs_with(ppl: list[tuple[float | None, float | None]]) -> list[PreferencePair]:
    return [
        PreferencePair(f"Prompt {i}?", f"Lovely, thank you {i}!", f"Awful {i}.", "reward:vader", 0.5, c, r)
        for i, (c, r) in enumerate(ppl)
    ]


def write_pairs(path, pairs: list[PreferencePair]):
    path.write_text("".join(json.dumps(p.to_json()) + "\n" for p in pairs), encoding="utf-8")
    return path


def small(tiny_dir, tmp_path, **overrides) -> FinetuneConfig:
    pairs = write_pairs(tmp_path / "pairs.jsonl", pairs_with(PPL))
    values = dict(
        method="dpo",
        model=str(tiny_dir),
        pairs=(str(pairs),),
        out=str(tmp_path / "dpo"),
        batch_size=2,
        learning_rate=1e-3,
        max_steps=2,
        seed=0,
        tensorboard=False,
    )
    return FinetuneConfig(**{**values, **overrides})


# ---------------------------------------------------------------------------------------------- the pair selection
@pytest.mark.parametrize("quantile", [0.25, 0.5, 0.9, 1.0])
def test_filter_keeps_exactly_the_pairs_under_the_quantile(quantile):
    pairs = pairs_with(PPL)
    cut = float(np.quantile([v for pair in PPL for v in pair], quantile))
    expected = [p for p, (c, r) in zip(pairs, PPL) if c <= cut and r <= cut]
    chosen = select_pairs(pairs, quantile=quantile)
    assert chosen.pairs == expected and chosen.threshold == pytest.approx(cut)
    assert chosen.selection == "ppl-filter" and chosen.total == 8 and chosen.filter_kept == len(expected)


def test_filter_drops_pairs_without_a_perplexity():
    pairs = pairs_with([(2.0, 3.0), (None, 1.0), (2.5, 2.0)])
    assert [p.prompt for p in select_pairs(pairs, quantile=1.0).pairs] == ["Prompt 0?", "Prompt 2?"]


def test_random_arm_has_the_same_count_and_is_seeded():
    pairs = pairs_with(PPL)
    filtered = select_pairs(pairs, quantile=0.5)
    draws = [select_pairs(pairs, quantile=0.5, random_same_count=True, seed=s) for s in range(6)]
    assert all(len(d.pairs) == len(filtered.pairs) == 3 and d.selection == "random" for d in draws)
    assert select_pairs(pairs, quantile=0.5, random_same_count=True, seed=0).pairs == draws[0].pairs  # reproducible
    assert all(set(map(id, d.pairs)) <= set(map(id, pairs)) for d in draws)
    assert all(
        [pairs.index(p) for p in d.pairs] == sorted(pairs.index(p) for p in d.pairs) for d in draws
    )  # file order
    assert len({tuple(pairs.index(p) for p in d.pairs) for d in draws}) > 1, (
        "different seeds should draw different pairs"
    )
    assert select_pairs(pairs).pairs == pairs and select_pairs(pairs).selection == "all"


def test_a_quantile_that_keeps_nothing_is_an_error():
    pairs = pairs_with([(1.0, 10.0), (11.0, 2.0)])  # every pair has one response above any cut below the top
    with pytest.raises(ConfigError, match=r"ppl_quantile=0.5 keeps none of the 2 pairs .*raise --ppl-quantile"):
        select_pairs(pairs, quantile=0.5)


# ---------------------------------------------------------------------------------------------- training
def test_trains_two_steps_on_the_filtered_pairs(tiny_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    result = finetune(small(tiny_dir, tmp_path, ppl_quantile=0.5))
    out = tmp_path / "dpo"
    assert result.steps == 2 and result.output_dir == out and result.samples == 4
    before, after = AutoModelForCausalLM.from_pretrained(tiny_dir), AutoModelForCausalLM.from_pretrained(out)
    changed = [name for name, p in after.state_dict().items() if not torch.equal(p, before.state_dict()[name])]
    assert len(changed) >= len(before.state_dict()) // 2, "most weights should move after 2 steps at lr 1e-3"
    meta = json.loads((out / "finetune.json").read_text())
    assert meta["method"] == "dpo" and meta["config"]["beta"] == pytest.approx(0.1) and meta["reward"] == "reward:vader"
    assert meta["pairs"]["used"] == meta["pairs"]["filter_kept"] == 3 and meta["pairs"]["selection"] == "ppl-filter"
    assert meta["pairs"]["ppl_threshold"] == pytest.approx(5.25) and meta["pairs"]["total"] == 8
    assert (meta["curve"], meta["point"]) == ("dpo (ppl ≤ q0.5)", "β=0.1")
    assert [entry["step"] for entry in result.log_history] == [1, 2] and "loss" in result.log_history[0]


def test_random_arm_records_the_same_count(tiny_dir, tmp_path):
    result = finetune(small(tiny_dir, tmp_path, ppl_quantile=0.5, ppl_random=True, max_steps=1, beta=0.3))
    meta = json.loads((result.output_dir / "finetune.json").read_text())
    assert meta["pairs"]["used"] == 3 and meta["pairs"]["selection"] == "random"
    assert (meta["curve"], meta["point"]) == ("dpo (random, as many as q0.5)", "β=0.3")


# ---------------------------------------------------------------------------------------------- bad pairs files
@pytest.mark.parametrize(
    "lines, match",
    [
        (
            ['{"prompt": "a", "chosen": "b", "rejected": "c"}', '{"prompt": "a", "chosen": "b"', ""],
            r"pairs.jsonl, line 2: not valid JSON",
        ),
        (
            ['{"prompt": "a", "chosen": "b", "rejected": "c"}', "", '{"prompt": "a", "chosen": 3, "rejected": "c"}'],
            r"pairs.jsonl, line 3: field 'chosen' must be a string, got int 3",
        ),
        (
            ['{"prompt": "a", "winner": "b"}'],
            r"pairs.jsonl, line 1: a preference record needs 'prompt', 'chosen' and 'rejected'",
        ),
        (['["a", "b"]'], r"pairs.jsonl, line 1: expected a JSON object, got list"),
        (["", "   "], r"pairs.jsonl: holds no preference records"),
    ],
    ids=["bad-json", "wrong-type", "missing-keys", "not-an-object", "empty"],
)
def test_malformed_or_empty_pairs_file_names_file_and_line(tmp_path, lines, match):
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg = FinetuneConfig(
        method="dpo", model=str(tmp_path / "no-model-here"), pairs=(str(path),), out=str(tmp_path / "dpo")
    )
    with pytest.raises(DataError, match=match):  # raised before the (missing) model is looked up
        finetune(cfg)
    assert not (tmp_path / "dpo").exists()


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(pairs=()), r"method='dpo' needs pairs: pass --pairs FILE.jsonl"),
        (dict(pairs=("missing.jsonl",)), r"pairs: 'missing.jsonl' is not a file"),
        (dict(pairs="p.jsonl"), r"pairs='p.jsonl' must be a tuple of JSONL files"),
        (dict(ppl_quantile=0.0), r"ppl_quantile=0.0 must be a number in \(0, 1\]"),
        (dict(ppl_random=True), r"ppl_random=True draws as many random pairs as --ppl-quantile keeps"),
        (dict(judge_model="x"), r"judge_model applies to method='online-dpo' only"),
        (dict(beta=0.0), r"beta=0.0 must be a number > 0"),
        (dict(method="grpo", pairs=(), ppl_quantile=0.5), r"ppl_quantile applies to method='dpo' only"),
        (dict(method="ddpo"), r"Did you mean 'dpo'"),
    ],
    ids=lambda v: str(v)[:24],
)
def test_validation(tmp_path, overrides, match):
    pairs = write_pairs(tmp_path / "pairs.jsonl", pairs_with(PPL))
    values = dict(method="dpo", pairs=(str(pairs),), out=str(tmp_path / "dpo"))
    with pytest.raises(ConfigError, match=match):
        FinetuneConfig(**{**values, **overrides}).validate()


def test_cli_takes_several_pairs_files(tiny_dir, tmp_path, capsys):
    import argparse

    from agents.cli.finetune import add_subcommands

    first = write_pairs(tmp_path / "a.jsonl", pairs_with(PPL[:4]))
    second = write_pairs(tmp_path / "b.jsonl", pairs_with(PPL[4:]))
    parser = argparse.ArgumentParser()
    add_subcommands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "finetune",
            "--method",
            "dpo",
            "--model",
            str(tiny_dir),
            "--pairs",
            str(first),
            str(second),
            "--ppl-quantile",
            "0.5",
            "--ppl-random",
            "--out",
            str(tmp_path / "dpo"),
            "--max-steps",
            "1",
            "--batch-size",
            "2",
            "--no-tensorboard",
        ]
    )
    assert args.pairs == [str(first), str(second)] and args.ppl_random is True and args.beta is None
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "with dpo (β 0.1" in printed and "1 steps, 2 pairs" in printed and "step     1  loss" in printed
    assert json.loads((tmp_path / "dpo" / "finetune.json").read_text())["pairs"]["total"] == 8
