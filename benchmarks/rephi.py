"""φ of earlier bench rows against another run's best-of-N curve on the same prompts.

    python benchmarks/rephi.py --frontier benchmarks/results/frontier32/results.csv \
        benchmarks/results/tilt_frontier/results*.csv

φ = (R − R_base)/(R_BoN(KL) − R_base), as ``proxy-rlhf bench`` computes it (best-of-N interpolated
linearly between its points, always-accept at KL 0). Each results file's always-accept row must
agree with the frontier run's (``read_frontier``: same prompts, seed and pool), else it fails.
Best-of-N's KL is an estimate from a few reference samples, so two curves of the same N differ;
this prints φ against each.
"""

from __future__ import annotations

import argparse
import csv
import math

import numpy as np

from agents.eval.report import _parse, bon_frontier, read_frontier


def _rows(path: str) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return [{k: _parse(k, v) for k, v in r.items()} for r in csv.DictReader(fh)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frontier", required=True, help="results.csv whose best-of-N rows are the curve")
    parser.add_argument("results", nargs="+", help="results.csv files whose proxy rows get φ")
    args = parser.parse_args()
    print(f"| file | agent | reward | KL | φ (own curve) | φ ({args.frontier}) |\n|---|---|---|---|---|---|")
    for path in args.results:
        rows = _rows(path)
        base = next(r for r in rows if r["agent"] == "always-accept")
        kl, reward = bon_frontier([base, *read_frontier(args.frontier, rows)])
        for row in rows:
            if row["kind"] in ("baseline", "best-of-n", "finetune") or math.isnan(row["kl"]):
                continue
            phi = math.nan
            if row["kl"] <= kl[-1]:
                phi = (row["reward"] - reward[0]) / (float(np.interp(max(row["kl"], 0.0), kl, reward)) - reward[0])
            own = "—" if math.isnan(row["phi"]) else f"{row['phi']:.2f}"
            new = "—" if math.isnan(phi) else f"{phi:.2f}"
            print(f"| {'/'.join(path.split('/')[-2:])} | {row['agent']} | {row['reward']:.3f} | {row['kl']:.3f} | {own} | {new} |")


if __name__ == "__main__":
    main()
