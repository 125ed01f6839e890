"""The leaderboard's tables (agents/eval/board.py): φ's bootstrap interval and the ranking."""

import math

import numpy as np

from agents.eval.board import _order, _trained_name, phi_ci


def test_phi_interval_brackets_an_agent_on_the_frontier_and_is_undefined_beyond_it():
    rng = np.random.default_rng(0)
    n = 200
    base = rng.normal(0.0, 0.3, n)
    bon = [(base + 0.2, np.full(n, 0.3)), (base + 0.4, np.full(n, 0.8))]  # best-of-2, best-of-4
    half = base + 0.1 + rng.normal(0, 0.05, n)  # at best-of-2's KL, half its gain: φ ≈ 0.5
    lo, hi = phi_ci(half, np.full(n, 0.3), base, bon)
    assert lo < 0.5 < hi and hi - lo < 0.3
    assert all(math.isnan(x) for x in phi_ci(base + 0.5, np.full(n, 2.0), base, bon))  # beyond best-of-4's KL
    assert all(math.isnan(x) for x in phi_ci(half, np.full(n, 0.3), base, []))


def test_ranking_puts_phi_first_then_undefined_phi_by_reward_and_collapsed_text_last():
    rows = [
        {"agent": "a", "phi": 0.2, "reward": 0.9, "collapsed": False},
        {"agent": "b", "phi": math.nan, "reward": 0.8, "collapsed": False},
        {"agent": "c", "phi": 0.6, "reward": 0.3, "collapsed": False},
        {"agent": "d", "phi": 0.9, "reward": 1.0, "collapsed": True},
    ]
    assert [r["agent"] for r in sorted(rows, key=_order)] == ["c", "a", "b", "d"]
    assert _trained_name("ppo proxy (ppo-kl-s0)") == "ppo-kl" and _trained_name("always-accept") is None


def test_assemble_gathers_the_sections_in_task_order_and_relinks_figures(tmp_path):
    from agents.eval.board import assemble

    root = tmp_path / "runs" / "board"
    for task in ("relevance", "sentiment"):
        (root / task / "seed0").mkdir(parents=True)
        (root / task / "seed0" / "reward_kl.png").write_bytes(b"png")
        (root / task / "board.md").write_text(f"## {task}\n\n![fig]({task}/seed0/reward_kl.png)\n")
    default = assemble(root).read_text()
    assert default.index("## sentiment") < default.index("## relevance")  # the registry's order, not the disk's
    assert "](sentiment/seed0/reward_kl.png)" in default
    elsewhere = assemble(root, tmp_path / "LEADERBOARD.md").read_text()
    assert "](runs/board/relevance/seed0/reward_kl.png)" in elsewhere
