"""Resuming a stopped leaderboard run: which settings may change, and the digest trained agents and rounds carry.

A run's ``leaderboard.json`` must match the resuming config (:func:`check_resumable`). Each trained agent's record
(:func:`record_path`) and each benchmarked round (:data:`ROUND_SETTINGS`) carries :func:`settings_digest`, so that
an agent or a round left in the folder by an earlier run with other settings is never reused.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING

from proxy_env.errors import ConfigError
from proxy_env.tasks import get_task

if TYPE_CHECKING:
    from agents.eval.leaderboard import LeaderboardConfig

# settings that may differ between a run and its resumption (where it writes, whether it resumes)
RESUMABLE_CHANGES = ("out", "board", "resume", "rebuild")
ROUND_SETTINGS = "settings.txt"  # in each round's folder: the digest of the settings it was benchmarked under


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
