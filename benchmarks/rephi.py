"""φ of earlier bench rows against another run's best-of-N curve on the same prompts.

    python benchmarks/rephi.py --frontier benchmarks/results/frontier32/results.csv \
        benchmarks/results/tilt_frontier/results*.csv

φ is ``agents.eval.report.phi``, what ``proxy-rlhf bench`` reports (best-of-N interpolated linearly
between its points, always-accept at KL 0). Each results file's always-accept row must agree with
the frontier run's (``read_frontier``: same prompts, seed and pool), else it fails. Best-of-N's KL
is an estimate from a few reference samples, so two curves of the same N differ; this prints φ
against each.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from pathlib import Path

from agents.eval.report import bon_frontier, phi, read_frontier, read_rows
from proxy_env.errors import ConfigError


@dataclass
class Args:
    frontier: str = ""  # results.csv whose best-of-N rows are the curve
    results: list[str] = field(default_factory=list)  # results.csv files whose rows get φ


def _fmt(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frontier", required=True, help="results.csv whose best-of-N rows are the curve")
    parser.add_argument("results", nargs="+", help="results.csv files whose rows get φ")
    args = Args(**vars(parser.parse_args()))
    print(f"| file | agent | reward | KL | φ (own curve) | φ ({args.frontier}) |\n|---|---|---|---|---|---|")
    for path in args.results:
        rows = read_rows(path)
        base = next((r for r in rows if r["agent"] == "always-accept"), None)
        if base is None:
            raise ConfigError(
                f"results={path!r} holds no always-accept row; pass the results.csv of a `proxy-rlhf bench` run."
            )
        kl, reward = bon_frontier([base, *read_frontier(args.frontier, rows)])
        name = "/".join(Path(path).parts[-2:])
        for row in rows:
            if row["agent"] != "always-accept" and row["kind"] != "best-of-n":
                print(
                    f"| {name} | {row['agent']} | {row['reward']:.3f} | {row['kl']:.3f} | {_fmt(row['phi'])} | {_fmt(phi(row, kl, reward))} |"
                )


if __name__ == "__main__":
    main()
