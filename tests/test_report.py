"""The bench report (agents/eval/report.py): φ against the best-of-N frontier with collapse flags, and one line
per fine-tuning curve in the figure.
"""

import numpy as np
import pytest


def test_phi_interpolates_best_of_n_and_flags_collapse():
    from agents.eval.report import frontier_scores

    def row(agent, kind, kl, reward, d2=0.8, ppl=6.0):
        return {"agent": agent, "kind": kind, "kl": kl, "reward": reward, "distinct_2": d2, "perplexity": ppl}

    rows = [
        row("always-accept", "baseline", 0.0, 0.2),
        row("best-of-2", "best-of-n", 0.2, 0.4),
        row("best-of-4", "best-of-n", 0.6, 0.5),
        row("best-of-16", "best-of-n", 1.8, 0.8, ppl=6.5),
        row("proxy", "proxy", 0.4, 0.4),
        row("hacked", "proxy", 1.0, 0.9, d2=0.3),
        row("far", "proxy", 5.0, 0.9),
    ]
    frontier_scores(rows)
    phi = {r["agent"]: r["phi"] for r in rows}
    assert phi["proxy"] == pytest.approx(0.2 / 0.25)  # best-of-N at KL 0.4: 0.45
    assert phi["hacked"] == pytest.approx(0.7 / (0.5 + 0.3 * 0.4 / 1.2 - 0.2))
    assert np.isnan(phi["far"]) and np.isnan(phi["best-of-2"])  # beyond the frontier's range; the frontier itself
    collapsed = {r["agent"]: r["collapsed"] for r in rows}
    assert collapsed == {
        "always-accept": False,
        "best-of-2": False,
        "best-of-4": False,
        "best-of-16": False,
        "proxy": False,
        "hacked": True,
        "far": False,
    }
    rows[4]["perplexity"] = 7.6  # more than best-of-16's + 1
    frontier_scores(rows)
    assert rows[4]["collapsed"]
    # distinct-2 is judged against the unsteered LLM's own: 10% below it collapses, the LLM itself never does
    for r in rows:
        r["distinct_2"], r["perplexity"] = 0.70, 6.0
    rows[4]["distinct_2"], rows[5]["distinct_2"] = 0.64, 0.62
    frontier_scores(rows)
    assert [r["agent"] for r in rows if r["collapsed"]] == ["hacked"]


def test_fine_tuned_rows_are_drawn_as_one_line_per_curve():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from agents.eval.report import draw_curves

    def row(curve, point, kl, reward):
        return {
            "agent": f"fine-tuned ({point})",
            "kind": "finetune",
            "curve": curve,
            "point": point,
            "kl": kl,
            "kl_lo": kl - 0.1,
            "kl_hi": kl + 0.1,
            "reward": reward,
            "reward_lo": reward - 0.05,
            "reward_hi": reward + 0.05,
        }

    rows = [
        row("grpo", "β=0.5", 8.0, 0.5),
        row("grpo", "β=0.1", 20.0, 0.8),
        row("dpo (ppl ≤ q0.75)", "β=0.1", 6.0, 0.4),
        row("grpo", "β=2", 6.0, 0.3),
    ]
    fig, ax = plt.subplots()
    draw_curves(ax, rows)
    assert ax.get_legend_handles_labels()[1] == ["grpo", "dpo (ppl ≤ q0.75)"]
    grpo_line = ax.get_lines()[0]
    assert list(grpo_line.get_xdata()) == [6.0, 8.0, 20.0] and list(grpo_line.get_ydata()) == [0.3, 0.5, 0.8]
    assert [t.get_text() for t in ax.texts] == ["β=2", "β=0.5", "β=0.1", "β=0.1"]
    plt.close(fig)


def test_a_results_csv_cut_mid_row_names_the_line(tmp_path):
    from agents.eval.report import read_rows
    from proxy_env.errors import ConfigError

    path = tmp_path / "results.csv"
    path.write_text("agent,kind,reward\nalways-accept,baseline,0.3\nbest-of-2,best-of-n\n")  # the last row is cut
    with pytest.raises(ConfigError, match=r"frontier_from='.*results.csv', line 3: 2 fields where the header has 3"):
        read_rows(path, "frontier_from")


def test_the_bench_gives_phi_an_interval_from_its_own_best_of_n_only():
    from agents.eval.report import summarize
    from agents.eval.results import AgentEval

    rng = np.random.default_rng(0)
    n = 200
    base = rng.normal(0.0, 0.3, n)

    def agent(name, kind, rewards, kl):
        ids = [[1, 2, 3]] * n
        zeros = np.zeros(n)
        return AgentEval(name, kind, rewards, ids, zeros, zeros + 3.0, np.full(n, kl), zeros, zeros + 3, 1.0)

    agents = [
        agent("always-accept", "baseline", base, 0.0),
        agent("best-of-2", "best-of-n", base + 0.2, 0.3),
        agent("best-of-4", "best-of-n", base + 0.4, 0.8),
        agent("proxy (half)", "proxy", base + 0.1 + rng.normal(0, 0.05, n), 0.3),
    ]
    rows = {r["agent"]: r for r in summarize(agents)}
    half = rows["proxy (half)"]
    assert half["phi_lo"] < half["phi"] < half["phi_hi"] and half["phi_lo"] < 0.5 < half["phi_hi"]
    assert half["phi_hi"] - half["phi_lo"] < 0.3
    assert np.isnan(rows["best-of-2"]["phi_lo"]) and np.isnan(rows["always-accept"]["phi_lo"])
    alone = {r["agent"]: r for r in summarize([agents[0], agents[3]])}  # no curve here: no φ, no interval
    assert np.isnan(alone["proxy (half)"]["phi_lo"])
