"""benchmarks/rephi.py --evals: φ with its bootstrap CI against another run's per-prompt best-of-N."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from agents.eval.cache import to_json
from agents.eval.results import AgentEval
from proxy_env.errors import ConfigError

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "rephi.py"


def _script():
    spec = importlib.util.spec_from_file_location("rephi", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["rephi"] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def _eval(name: str, rewards: np.ndarray, kl: np.ndarray) -> AgentEval:
    n = len(rewards)
    zeros = np.zeros(n)
    return AgentEval(name, "proxy", rewards, [[1]] * n, zeros, zeros, kl, kl, zeros + 30, 1.0)


def test_an_agent_on_the_frontier_gets_phi_one_and_an_interval_around_it(tmp_path, capsys):
    rng = np.random.default_rng(0)
    n = 400
    base = rng.normal(0.3, 0.3, n)
    bon2, bon4 = base + rng.normal(0.2, 0.1, n), base + rng.normal(0.35, 0.1, n)
    kl2, kl4 = np.full(n, 0.2), np.full(n, 0.6)
    bon16 = base + 0.4  # listed first; its KL estimate below best-of-4's: the running max keeps the curve rising
    agents = {
        "best-of-16": {"kind": "best-of-n", "rewards": bon16.tolist(), "kl": np.full(n, 0.5).tolist()},
        "always-accept": {"kind": "baseline", "rewards": base.tolist(), "kl": [0.0] * n},
        "best-of-2": {"kind": "best-of-n", "rewards": bon2.tolist(), "kl": kl2.tolist()},
        "best-of-4": {"kind": "best-of-n", "rewards": bon4.tolist(), "kl": kl4.tolist()},
    }
    (tmp_path / "round").mkdir()
    (tmp_path / "round" / "per_prompt.json").write_text(json.dumps({"prompts": [], "agents": agents}))
    # halfway between best-of-2 and best-of-4 in KL, and in reward: on the frontier (φ 1); half its gain: φ 0.5
    noise = rng.normal(0, 0.05, n)
    noise -= noise.mean()
    on = base + (bon2.mean() + bon4.mean()) / 2 - base.mean() + noise
    half = base + ((bon2.mean() + bon4.mean()) / 2 - base.mean()) / 2 + noise
    evals = [
        _eval("always-accept", base, np.zeros(n)),
        _eval("on", on, np.full(n, 0.4)),
        _eval("half", half, np.full(n, 0.4)),
    ]
    (tmp_path / "evals.json").write_text(json.dumps({"evals": [to_json(e) for e in evals]}))
    _script().print_with_ci(str(tmp_path / "round"), [str(tmp_path / "evals.json")])
    rows = {line.split(" | ")[0].strip("| "): line for line in capsys.readouterr().out.splitlines()[2:]}
    assert set(rows) == {"on", "half"}

    def phi_and_ci(line: str) -> tuple[float, float, float]:
        cell = line.rstrip(" |").rsplit(" | ", 1)[1]  # "0.99 [0.93, 1.05]"
        value, interval = cell.split(" [")
        lo, hi = interval.rstrip("]").split(", ")
        return float(value), float(lo), float(hi)

    value, lo, hi = phi_and_ci(rows["on"])
    assert value == pytest.approx(1.0, abs=0.01) and lo < value < hi and hi - lo < 0.3
    value, lo, hi = phi_and_ci(rows["half"])
    assert value == pytest.approx(0.5, abs=0.01) and lo < 0.5 < hi
    # an agent beyond the curve's last KL, and a frontier no better than always-accept: no φ (as the bench says)
    flat = {**agents, "best-of-2": {**agents["best-of-2"], "rewards": (base - 0.1).tolist()}}
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "per_prompt.json").write_text(json.dumps({"prompts": [], "agents": flat}))
    low = [evals[0], _eval("low", base + 0.01, np.full(n, 0.1)), _eval("far", base + 0.5, np.full(n, 2.0))]
    (tmp_path / "low.json").write_text(json.dumps({"evals": [to_json(e) for e in low]}))
    _script().print_with_ci(str(tmp_path / "flat"), [str(tmp_path / "low.json")])
    out = capsys.readouterr().out
    assert "| low |" in out and "| far |" in out and out.count("— [—, —]") == 2
    # without always-accept's own evaluation nothing checks the prompts: refused
    (tmp_path / "alone.json").write_text(json.dumps({"evals": [to_json(low[1])]}))
    with pytest.raises(ConfigError, match="no always-accept evaluation"):
        _script().print_with_ci(str(tmp_path / "round"), [str(tmp_path / "alone.json")])
    # another run's always-accept (other prompts or seed) is refused
    evals[0] = _eval("always-accept", base + 0.01, np.zeros(n))
    (tmp_path / "evals.json").write_text(json.dumps({"evals": [to_json(e) for e in evals]}))
    with pytest.raises(ConfigError, match="always-accept's rewards differ"):
        _script().print_with_ci(str(tmp_path / "round"), [str(tmp_path / "evals.json")])
    with pytest.raises(ConfigError, match="holds no per_prompt.json"):
        _script().print_with_ci(str(tmp_path), [str(tmp_path / "evals.json")])


def _row(agent: str, kind: str, kl: float, reward: float) -> dict:
    return {
        "agent": agent,
        "kind": kind,
        "kl": kl,
        "kl_lo": kl - 0.01,
        "kl_hi": kl + 0.01,
        "reward": reward,
        "reward_lo": reward - 0.05,
        "reward_hi": reward + 0.05,
    }


def test_the_figure_draws_one_line_per_label_and_a_row_in_two_files_once(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rephi = _script()
    bon = [_row("best-of-4", "best-of-n", 0.6, 0.6), _row("best-of-2", "best-of-n", 0.2, 0.5)]
    guide = [
        _row("value guide (head) [N=8]", "proxy", 0.19, 0.39),
        _row("value guide (head) [N=16]", "proxy", 0.28, 0.43),
    ]
    large = [
        _row("value guide (head) [N=16]", "proxy", 0.28, 0.43),
        _row("value guide (head) [N=32]", "proxy", 0.34, 0.40),
    ]
    tilt = [_row("tilt proxy (w0.3)", "proxy", 0.79, 0.49)]
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)  # keep the figure to read its lines back
    path = tmp_path / "reward_kl.png"
    rephi.plot_curves(
        bon, _row("always-accept", "baseline", 0.0, 0.3), [("guide", guide), ("guide", large), ("tilt", tilt)], path
    )
    assert path.stat().st_size > 0
    ax = figures[0].axes[0]
    lines = {bars.get_label(): bars.lines[0] for bars in ax.containers}  # each errorbar's data line
    assert list(lines) == ["best-of-N (empirical KL)", "always-accept (the LLM)", "guide", "tilt"]
    assert list(lines["best-of-N (empirical KL)"].get_xdata()) == [0.2, 0.6]  # KL increasing
    assert list(lines["guide"].get_xdata()) == [0.19, 0.28, 0.34]  # N=16 (in both files) once
    assert [t.get_text() for t in ax.texts] == [
        "N=2",
        "N=4",
        "N=8",
        "N=16",
        "N=32",
        "w0.3",
    ]  # best-of-N's, then each curve's


def test_a_figure_without_results_files_is_refused(monkeypatch):
    rephi = _script()
    monkeypatch.setattr(sys, "argv", ["rephi.py", "--frontier", "x.csv", "--figure", "out.png"])
    with pytest.raises(ConfigError, match="--figure='out.png' draws results files"):
        rephi.main()
