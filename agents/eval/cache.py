"""Each agent's evaluation kept on disk as soon as it ends, so that a stopped bench resumes where it stopped.

A bench of a dozen agents on the CPU takes hours; one killed in its last hour used to lose them all. With
``BenchConfig.cache_dir`` every evaluation is written there as it ends (one JSON file per agent, replaced
atomically), under a key of everything it depends on: the settings that change what an agent generates, the prompts
themselves, the agent's name and, for a checkpoint or a fine-tuned folder, the size and time of every file in it (an
agent trained again in the same folder is evaluated again). With ``resume=True`` an evaluation whose key matches
is read back instead of run again; each agent is generated with its own seeded samplers, so a read one equals a run one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from agents.eval.results import AgentEval, BenchConfig
from proxy_env.assets import atomic_write_text

# BenchConfig fields that do not change any one agent's evaluation (which agents run, where the tables go, how
# checkpoints load); the key covers every other field, so a field added later counts unless listed here
NOT_IN_KEY = (
    "checkpoints",
    "finetuned",
    "tensorboard",
    "n",
    "frontier_from",
    "proxy_actions",
    "accept_powers",
    "value_heads",
    "value_n",
    "value_rules",
    "random_reject_p",  # in random-reject's own identity
    "out",
    "quick",
    "trust_checkpoint",
    "cache_dir",
    "resume",
)


def folder_fingerprint(path: str | Path) -> str:
    """Every file under ``path`` by relative name, size and modification time: changes when the folder is rewritten."""
    root = Path(path).expanduser()
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return json.dumps([(str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in files])


def to_json(e: AgentEval) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(e):
        value = getattr(e, f.name)
        out[f.name] = {"array": value.tolist(), "dtype": str(value.dtype)} if isinstance(value, np.ndarray) else value
    return out


def from_json(data: dict[str, Any]) -> AgentEval:
    def value(v: Any) -> Any:
        return np.asarray(v["array"], dtype=v["dtype"]) if isinstance(v, dict) and "array" in v else v

    return AgentEval(**{k: value(v) for k, v in data.items()})


class EvalCache:
    """Evaluations of one bench, one file each in ``folder``; read back when ``resume`` and the key matches."""

    def __init__(self, folder: str | Path, cfg: BenchConfig, prompts: list[str], resume: bool, lm: Any) -> None:
        self.folder, self.resume = Path(folder).expanduser(), resume
        settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in NOT_IN_KEY}
        reward = Path(cfg.reward).expanduser()  # a reward model folder retrained in place is another reward
        base = {
            "settings": settings,
            "prompts": prompts,
            "model": [getattr(lm, "name", ""), str(getattr(lm, "device", ""))],  # the model run, not the name asked
            "reward": folder_fingerprint(reward) if reward.is_dir() else None,
            "format": [f.name for f in dataclasses.fields(AgentEval)],  # what an older version saved is run again
        }
        self.base = json.dumps(base, sort_keys=True, default=str)
        self.reused: list[str] = []

    def key(self, name: str, identity: str) -> str:
        return hashlib.sha256(f"{self.base}\n{name}\n{identity}".encode()).hexdigest()

    def path(self, name: str, identity: str) -> Path:
        slug = re.sub(r"[^A-Za-z0-9.=-]+", "_", name).strip("_")[:80]
        return self.folder / f"{slug}-{self.key(name, identity)[:8]}.json"

    def run(self, name: str, identity: str | None, compute: Callable[[], list[AgentEval]]) -> list[AgentEval]:
        """``compute()``, or what an earlier run of the same key saved; ``identity`` None: never cached."""
        if identity is None:
            return compute()
        path, key = self.path(name, identity), self.key(name, identity)
        if self.resume and path.is_file():
            try:
                saved = json.loads(path.read_text(encoding="utf-8"))
                kept = [from_json(e) for e in saved["evals"]] if saved.get("key") == key else None
            except (OSError, ValueError, KeyError, TypeError, AttributeError):  # cut short or not ours: run it again
                kept = None
            if kept is not None:
                self.reused.append(name)
                return kept
        evals = compute()
        # a run killed while writing leaves the previous file, never half of one
        atomic_write_text(path, json.dumps({"key": key, "name": name, "evals": [to_json(e) for e in evals]}))
        return evals
