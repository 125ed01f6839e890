"""The scripts in examples/ run end to end at tiny scale (PROXY_RLHF_TINY=1: tiny random LLM, few steps)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _run(script: str, cwd: Path, *args: str) -> str:
    env = {
        **os.environ,
        "PROXY_RLHF_TINY": "1",
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_train_ppo(tmp_path):
    out = _run("train_ppo.py", tmp_path)
    assert "trainable params" in out and out.count("PROMPT: ") == 2
    assert (tmp_path / "checkpoints" / "ppo" / "model.safetensors").is_file()
    assert (tmp_path / "checkpoints" / "ppo" / "proxy_config.json").is_file()


def test_swap_algorithms(tmp_path):
    out = _run("swap_algorithms.py", tmp_path)
    rows = {line.split()[0] for line in out.splitlines()[1:] if line.strip()}
    assert rows == {"always-accept", "random-0.2", "ppo", "a2c", "dqn", "qrdqn", "recurrentppo", "trpo"}, out


@pytest.mark.parametrize("args", [(), ("--tiny", "Hello there!")], ids=["env-var", "flag-and-prompt"])
def test_generate(tmp_path, args):
    out = _run("generate.py", tmp_path, *args)
    assert out.count("PROMPT: ") == (1 if args else 2)
    assert "frozen LLM" in out and "proxy" in out and "best-of-4" in out
