"""benchmarks/bench_feedback.py at tiny scale: several pair files in, one RM per seed (the first saved), the AI-judge stage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from feedback import write_jsonl
from feedback.records import PreferencePair
from proxy_env.rewards.learned import load_reward_model

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_feedback.py"
GOOD = ["great", "wonderful", "happy", "lovely", "excellent", "nice"]
BAD = ["awful", "terrible", "sad", "horrible", "bad", "nasty"]


@pytest.mark.slow  # a subprocess loading the LLM and MiniLM, two encoders x two seeds
def test_bench_feedback_reads_pair_files_and_reports_each_seed(tmp_path):
    pairs = [
        PreferencePair(
            f"q{i}", f"a {GOOD[i % 6]} day", f"a {BAD[(i * 5) % 6]} day", "reward:vader", 0.1 + (i % 10) / 10
        )
        for i in range(60)
    ]
    write_jsonl(tmp_path / "a.jsonl", pairs[:30])
    write_jsonl(tmp_path / "b.jsonl", pairs[30:])
    files = [str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--model",
            "tiny",
            "--pairs",
            str(tmp_path / "a.jsonl"),
            str(tmp_path / "b.jsonl"),
            "--rm-seeds",
            "0",
            "1",
            "--layers",
            "0",
            "--train-minutes",
            "0",
            "--judge-pairs",
            "12",
            "--out-dir",
            str(tmp_path / "out"),
            "--threads",
            "1",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads((tmp_path / "out" / "figures.json").read_text())
    assert figures["pairs_kept"] == 60 and figures["strong_pairs"] == 48
    for name in ("rm_mean_last", "rm"):
        assert [m["seed"] for m in figures[f"{name}_by_seed"]] == [0, 1]
        accs = [m["test_accuracy_margin"] for m in figures[f"{name}_by_seed"]]
        assert figures[f"{name}_accuracy_margin_mean"] == round(sum(accs) / 2, 4)
        assert figures[name]["seed"] == 0 and figures[name]["test_accuracy_margin"] == accs[0]
    assert figures["rm"]["pooling"] == "tokens"
    judge = figures["judge"]
    assert judge["pairs"] == 12 and set(judge) == {"pairs", "logits", "generate"}
    assert (
        judge["logits"]["parse_failure_rate"] == 0.0 and judge["logits"]["decided"] <= 12
    )  # logits mode always parses
    for mode in ("logits", "generate"):
        decided = judge[mode]["decided"]
        assert decided == 0 or 0.0 <= judge[mode]["agreement"] <= 1.0
        assert decided == round(12 * (1 - judge[mode]["parse_failure_rate"])) or mode == "logits"
    model = load_reward_model(tmp_path / "out" / "rm", device="cpu")
    assert model.config()["head"]["per_token"] is True and model.train_config["seed"] == 0

    # the judge stage alone, into a folder that does not exist yet
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--model",
            "tiny",
            "--pairs",
            *files,
            "--skip-rm",
            "--train-minutes",
            "0",
            "--judge-pairs",
            "4",
            "--judge-modes",
            "logits",
            "--out-dir",
            str(tmp_path / "new" / "judge"),
            "--threads",
            "1",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads((tmp_path / "new" / "judge" / "figures.json").read_text())
    assert "rm" not in figures and figures["judge"]["pairs"] == 4 and set(figures["judge"]) == {"pairs", "logits"}
