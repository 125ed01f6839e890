"""Resuming a stopped leaderboard run: which settings may change, and the digest trained agents and rounds carry.

A run's ``leaderboard.json`` must match the resuming config (:func:`check_resumable`). Each trained agent's record
(:func:`record_path`) and each benchmarked round (:data:`ROUND_SETTINGS`) carries :func:`settings_digest`, so that
an agent or a round left in the folder by an earlier run with other settings is never reused. Within a round, each
agent's evaluation is kept in :data:`EVALS` as it ends (:mod:`agents.eval.cache`), so a bench stopped half-way
resumes at the next agent.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING

from proxy_env.assets import atomic_write_text
from proxy_env.errors import ConfigError
from proxy_env.tasks import get_task

if TYPE_CHECKING:
    from agents.eval.leaderboard import LeaderboardConfig

# settings that may differ between a run and its resumption (where it writes, whether it resumes)
RESUMABLE_CHANGES = ("out", "board", "resume", "rebuild")
ROUND_SETTINGS = "settings.txt"  # in each round's folder: the digest of the settings it was benchmarked under
EVALS = "evals"  # in each round's folder: each agent's evaluation as it ended (agents.eval.cache), for a stopped bench


def check_resumable(cfg: LeaderboardConfig, saved_path: Path) -> None:
    """Refuse to resume a run whose saved ``leaderboard.json`` has other settings than ``cfg``."""
    if not saved_path.is_file():
        raise ConfigError(
            f"resume=True but {saved_path} does not exist: there is no run to continue; drop --resume to start one."
        )
    saved = json.loads(saved_path.read_text(encoding="utf-8"))
    mine = json.loads(json.dumps(dataclasses.asdict(cfg)))  # tuples as lists, like the saved file
    differ = sorted(k for k in mine if k not in RESUMABLE_CHANGES and saved.get(k) != mine[k])
    if differ:
        shown = ", ".join(f"{k}={saved.get(k)!r} there, {mine[k]!r} here" for k in differ)
        raise ConfigError(
            f"resume=True but the run in {saved_path.parent} has other settings ({shown}); pass the same settings, "
            "or drop --resume and choose another --out to start a new run."
        )


def settings_digest(cfg: LeaderboardConfig) -> str:
    """A digest of the settings a trained agent or a round depends on (all but where it is written and how it runs)."""
    import hashlib

    mine = {k: v for k, v in json.loads(json.dumps(dataclasses.asdict(cfg))).items() if k not in RESUMABLE_CHANGES}
    return hashlib.sha256(json.dumps(mine, sort_keys=True).encode()).hexdigest()[:16]


def record_path(cfg: LeaderboardConfig, name: str, seed: int) -> Path:
    return Path(cfg.out).expanduser() / get_task(cfg.task).name / "agents" / f"{name}-s{seed}.json"


RUNS = "runs.json"  # in <out>/<task>: each invocation of the run, so the board reports the whole run's wall time


def read_runs(out: Path) -> list[dict]:
    """The invocations ``out/runs.json`` lists ([] without one)."""
    path = out / RUNS
    if not path.is_file():
        return []
    try:
        runs = json.loads(path.read_text(encoding="utf-8"))
        if not all(isinstance(r, dict) and float(r["wall_s"]) >= 0 for r in runs):
            raise ValueError("not a list of runs")
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"{path} is damaged ({exc}), so the run's wall time cannot be summed; restore it, or delete it and say in "
            "the board's note (--rebuild with a note) how long the earlier invocations took."
        ) from None
    return runs


def runs_summary(runs: list[dict]) -> str:
    """One sentence: the wall time of each invocation, for the board (empty with fewer than two)."""
    if len(runs) < 2:
        return ""
    parts = [f"{r['wall_s']:.0f} s ({r['started'][:10]}, {r['outcome']})" for r in runs]
    return f"Wall time over {len(runs)} invocations (--resume): " + " + ".join(parts) + "."


class RunLedger:
    """``with RunLedger(out, command, fresh=...) as ledger:`` one invocation of a run, appended to ``out/runs.json``
    as it ends: finished, interrupted (Ctrl-C) or failed (an exception; a killed process leaves no entry).
    ``fresh``: a new run, whose ledger starts empty.
    :meth:`total_s`: the wall seconds of every invocation so far, this one's included (what the board reports)."""

    def __init__(self, out: Path, command: str, *, fresh: bool) -> None:
        self.path, self.command = out / RUNS, command
        self.before = [] if fresh else read_runs(out)

    def __enter__(self) -> RunLedger:
        import datetime
        import time

        self.started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        self.t0 = time.perf_counter()
        return self

    def current(self, outcome: str) -> dict:
        import time

        wall = round(time.perf_counter() - self.t0, 1)
        return {"started": self.started, "wall_s": wall, "command": self.command, "outcome": outcome}

    def total_s(self) -> float:
        return sum(float(r["wall_s"]) for r in self.before) + float(self.current("")["wall_s"])

    def summary(self) -> str:
        return runs_summary([*self.before, self.current("this one")])

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if kind is None:
            outcome = "finished"
        elif issubclass(kind, KeyboardInterrupt):
            outcome = "interrupted"
        else:
            outcome = f"failed: {kind.__name__}"
        try:  # a run killed while writing keeps the previous ledger
            atomic_write_text(self.path, json.dumps([*self.before, self.current(outcome)], indent=1) + "\n")
        except OSError as err:  # never hides the run's own error
            if kind is None:
                raise
            import logging

            logging.getLogger(__name__).warning("could not record this run in %s: %s", self.path, err)
