"""φ of earlier bench rows against another run's best-of-N curve on the same prompts.

    python benchmarks/rephi.py --frontier benchmarks/results/frontier32/results.csv \
        benchmarks/results/tilt_frontier/results*.csv
    python benchmarks/rephi.py --frontier benchmarks/results/leaderboard/sentiment/seed0 --evals runs/value/bench/evals/*.json
    python benchmarks/rephi.py --frontier benchmarks/results/leaderboard/sentiment/seed0/results.csv \
        "myopic tilt=benchmarks/results/tilt12/results.csv" --figure reward_kl.png

A results file given as ``LABEL=PATH`` names its rows' curve; with ``--figure`` every file's rows other than
always-accept, random-reject and best-of-N are drawn as one curve (KL increasing, each point named by the bracket or
parenthesis of its agent's name; files with the same LABEL make one curve, a row in two of them drawn once) against the frontier's best-of-N, KL on a log axis.

With ``--evals`` (a bench's ``--cache-dir`` files, which keep each agent's per-prompt rewards and KLs) and a
frontier *folder* holding ``per_prompt.json`` (a leaderboard round, or any bench written with its own best-of-N),
each agent also gets φ's bootstrap 95% CI over prompts (``agents.eval.report.phi_ci``: the agent, always-accept and
best-of-N resampled together) and its paired gain over always-accept; the always-accept rewards of both must be
equal prompt by prompt (same prompts, seed and pool), else it fails.

φ is ``agents.eval.report.phi``, what ``proxy-rlhf bench`` reports (best-of-N interpolated linearly
between its points, always-accept at KL 0). Each results file's always-accept row must agree with
the frontier run's (``read_frontier``: same prompts, seed and pool), else it fails. Best-of-N's KL
is an estimate from a few reference samples, so two curves of the same N differ; this prints φ
against each.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agents.eval.cache import from_json
from agents.eval.compare import paired_gain
from agents.eval.report import bon_frontier, draw_bon_line, draw_curves, phi, phi_ci, read_frontier, read_rows
from proxy_env.errors import ConfigError


@dataclass
class Args:
    frontier: str = ""  # results.csv whose best-of-N rows are the curve (with --evals: its folder)
    results: list[str] = field(default_factory=list)  # results.csv files whose rows get φ
    evals: list[str] = field(default_factory=list)  # bench cache files (per-prompt results) whose agents get φ [CI]
    figure: str = ""  # a PNG: every results file's rows as one curve against the frontier's best-of-N


def _fmt(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frontier", required=True, help="results.csv whose best-of-N rows are the curve")
    parser.add_argument("results", nargs="*", help="results.csv files whose rows get φ (LABEL=PATH names a curve)")
    parser.add_argument("--figure", default="", help="write the reward–KL figure of every results file here (PNG)")
    parser.add_argument("--evals", nargs="+", default=[], help="bench cache files: φ with its CI (see above)")
    args = Args(**vars(parser.parse_args()))
    if args.figure and (args.evals or not args.results):
        raise ConfigError(
            f"--figure={args.figure!r} draws results files: pass one or more results.csv (LABEL=PATH), not --evals."
        )
    if args.evals:
        print_with_ci(args.frontier, args.evals)
        return
    print(f"| file | agent | reward | KL | φ (own curve) | φ ({args.frontier}) |\n|---|---|---|---|---|---|")
    curves = []
    for arg in args.results:
        label, path = _labelled(arg)
        rows = read_rows(path)
        base = next((r for r in rows if r["agent"] == "always-accept"), None)
        if base is None:
            raise ConfigError(
                f"results={path!r} holds no always-accept row; pass the results.csv of a `proxy-rlhf bench` run."
            )
        frontier = read_frontier(args.frontier, rows)
        kl, reward = bon_frontier([base, *frontier])
        name = "/".join(Path(path).parts[-2:])
        for row in rows:
            if row["agent"] != "always-accept" and row["kind"] != "best-of-n":
                print(
                    f"| {name} | {row['agent']} | {row['reward']:.3f} | {row['kl']:.3f} | {_fmt(row['phi'])} | {_fmt(phi(row, kl, reward))} |"
                )
        curves.append((label or name, [r for r in rows if r["kind"] not in ("baseline", "best-of-n")]))
    if args.figure:
        plot_curves(frontier, base, curves, Path(args.figure))


def _labelled(arg: str) -> tuple[str, str]:
    """``LABEL=PATH`` as (label, path); a plain path (or one holding '=' that exists) as ("", path)."""
    label, sep, path = arg.partition("=")
    return (label, path) if sep and not Path(arg).exists() else ("", arg)


def plot_curves(
    bon: list[dict[str, Any]], base: dict[str, Any], curves: list[tuple[str, list[dict[str, Any]]]], path: Path
) -> None:
    """Reward against exact KL: best-of-N ``bon`` as the frontier, always-accept ``base`` at 0, one line per curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 6))
    draw_bon_line(ax, sorted(bon, key=lambda r: r["kl"]), "kl", "best-of-N (empirical KL)")
    ax.errorbar(
        [0.0],
        [base["reward"]],
        yerr=[[base["reward"] - base["reward_lo"]], [base["reward_hi"] - base["reward"]]],
        fmt="D",
        color="gray",
        capsize=3,
        label="always-accept (the LLM)",
    )
    points: dict[tuple[str, str], dict[str, Any]] = {}
    for label, rows in curves:
        for r in rows:
            points.setdefault((label, r["agent"]), r)  # a row in two files of one label: drawn once
    draw_curves(ax, [{**r, "curve": label, "point": _point(r["agent"])} for (label, _), r in points.items()])
    ax.set_xscale("symlog", linthresh=0.05, linscale=0.5)
    ax.set_xlabel("exact KL from the LLM's sampler, nats / response (log scale above 0.05)")
    ax.set_ylabel("mean reward (95% CI)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _point(agent: str) -> str:
    """The name of a point within its curve: the agent's last bracket, else its last parenthesis, else the name."""
    found = re.findall(r"\[([^\]]+)\]", agent) or re.findall(r"\(([^)]+)\)", agent)
    return found[-1] if found else agent


def print_with_ci(folder: str, evals: list[str]) -> None:
    """φ [95% CI] and the paired gain [95% CI] of every agent in ``evals`` against ``folder``'s per-prompt best-of-N."""
    path = Path(folder) / "per_prompt.json"
    if not path.is_file():
        raise ConfigError(
            f"--frontier={folder!r} holds no per_prompt.json; with --evals pass a leaderboard round or bench folder "
            "written with its own best-of-N."
        )
    agents = json.loads(path.read_text(encoding="utf-8"))["agents"]
    base = np.asarray(agents["always-accept"]["rewards"])
    bon = sorted(  # by N, as the bench orders its curve
        (int(name.rsplit("-", 1)[1]), np.asarray(a["rewards"]), np.asarray(a["kl"]))
        for name, a in agents.items()
        if a.get("kind") == "best-of-n"
    )
    if not bon:
        raise ConfigError(f"{str(path)!r} holds no best-of-N results; pass the round that ran best-of-N (seed 0's).")
    curve = [(r, k) for _, r, k in bon]
    kl_curve = np.maximum.accumulate(np.array([0.0] + [max(float(k.mean()), 0.0) for _, k in curve]))
    r_curve = np.array([base.mean()] + [r.mean() for r, _ in curve])
    loaded = [
        (file, from_json(x)) for file in evals for x in json.loads(Path(file).read_text(encoding="utf-8"))["evals"]
    ]
    mine = [e for _, e in loaded if e.name == "always-accept"]
    if not mine:
        raise ConfigError("--evals holds no always-accept evaluation; pass its cache file too (it checks the prompts).")
    for file, e in loaded:
        if e.name == "always-accept" and not (
            len(e.rewards) == len(base) and np.allclose(e.rewards, base, rtol=1e-6, atol=1e-9)
        ):
            raise ConfigError(
                f"{file!r}: always-accept's rewards differ from {str(path)!r}'s; not the same prompts or seed."
            )
    print("| agent | reward | KL | gain vs always-accept [95% CI] | φ [95% CI] |\n|---|---|---|---|---|")
    for _, e in loaded:
        if e.name == "always-accept" or e.kind in ("best-of-n", "finetune"):
            continue
        kl = max(float(e.kl.mean()), 0.0)
        value = phi({"kind": e.kind, "kl": kl, "reward": float(e.rewards.mean())}, kl_curve, r_curve)
        lo, hi = phi_ci(e.rewards, e.kl, base, curve)
        d, glo, ghi, _ = paired_gain(e.rewards, base)
        print(
            f"| {e.name} | {e.rewards.mean():.3f} | {kl:.3f} | {d:+.3f} [{glo:+.3f}, {ghi:+.3f}] | "
            f"{_fmt(value)} [{_fmt(lo)}, {_fmt(hi)}] |"
        )


if __name__ == "__main__":
    main()
