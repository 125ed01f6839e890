"""The leaderboard's tables (agents/eval/board.py): φ's bootstrap interval and the ranking."""

import math

import numpy as np

from agents.eval.board import _order, _trained_name
from agents.eval.report import phi_ci


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


def _row(agent, kind, reward, kl, phi=math.nan):
    return {
        "agent": agent, "kind": kind, "reward": reward, "kl": kl, "phi": phi, "collapsed": False, "prompts": 200,
        "perplexity": 7.0, "distinct_2": 0.7, "rejection_rate": 0.1, "forwards_per_response": 30.0,
        "wall_s_per_response": 0.5, "trainable_params": 10, "train_wall_s": 1.0,
    }  # fmt: skip


def test_a_second_seed_gets_its_phi_interval_from_the_first_rounds_frontier():
    from agents.eval.board import Round, TrainedAgent, section
    from agents.eval.leaderboard import LeaderboardConfig

    rng = np.random.default_rng(0)
    n = 200
    base = rng.normal(0.0, 0.3, n)
    arrays = {
        "always-accept": ("baseline", base, np.zeros(n)),
        "best-of-2": ("best-of-n", base + 0.2, np.full(n, 0.3)),
        "best-of-4": ("best-of-n", base + 0.4, np.full(n, 0.8)),
        "tilt proxy (tilt-b0.3-s0)": ("proxy", base + 0.1 + rng.normal(0, 0.05, n), np.full(n, 0.3)),
    }
    second = {
        "always-accept": arrays["always-accept"],
        "tilt proxy (tilt-b0.3-s1)": arrays["tilt proxy (tilt-b0.3-s0)"],
    }

    def round_of(agents):
        rows = [
            _row(a, k, float(r.mean()), float(kl.mean()), 0.5 if k == "proxy" else math.nan)
            for a, (k, r, kl) in agents.items()
        ]
        per_prompt = {
            a: {"kind": k, "rewards": r.tolist(), "kl": kl.tolist(), "texts": []} for a, (k, r, kl) in agents.items()
        }
        return Round(rows, [f"p{i}" for i in range(n)], "cpu", per_prompt)

    trained = [TrainedAgent("tilt-b0.3", s, f"x/tilt-b0.3-s{s}", 1.0) for s in (0, 1)]
    text = section(LeaderboardConfig(task="sentiment"), [round_of(arrays), round_of(second)], trained, 2.0, "cmd")
    rows = [line for line in text.splitlines() if "| tilt-b0.3 |" in line]
    assert len(rows) == 2 and all("| 0.50 [" in line for line in rows)


def test_the_instruction_table_names_a_second_seeds_columns_by_their_seed():
    from agents.eval.board import Round, _instruction_table
    from proxy_env.tasks.instructions import InstructionReward

    reward = InstructionReward()
    prompt = next(p for p in reward.prompts if [n for n, _ in reward.instructions(p)] == ["punctuation:no_comma"])

    def round_of(texts):
        rows = [_row(a, "proxy" if "(" in a else "baseline", 0.5, 0.1) for a in texts]
        per_prompt = {a: {"kind": "proxy", "rewards": [0.5], "kl": [0.1], "texts": [t]} for a, t in texts.items()}
        return Round(rows, [prompt], "cpu", per_prompt)

    first = round_of({"always-accept": "Yes, I can.", "trpo proxy (trpo-s0)": "Yes I can."})
    second = round_of({"always-accept": "Yes, I can.", "trpo proxy (trpo-s1)": "Yes, I can."})
    header, _, row = _instruction_table([first, second])[2:5]
    assert header.endswith("| always-accept | trpo | trpo, seed 1 |")
    assert row == "| punctuation:no_comma | myopic | 1 | 0.00 | 1.00 | 0.00 |"
