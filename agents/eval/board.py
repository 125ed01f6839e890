"""The leaderboard's tables: one task's section (``<out>/<task>/board.md``) and ``LEADERBOARD.md`` from all of them.

A task's section ranks the trained agents on the reward–KL plane: by φ (the share of best-of-N's
reward gain reached at the same KL, with a bootstrap 95% CI over prompts), agents whose text
collapsed last, agents beyond best-of-N's KL range (φ undefined) after those with a φ, by reward.
Failed trainings are rows with their error. The instructions task adds the share of each
instruction type followed, per agent.

Everything a section needs is on disk: each round's ``results.csv`` (the bench's rows) and
``per_prompt.json`` (each agent's per-prompt rewards, KLs and texts, for the paired CIs, φ's
bootstrap and the per-instruction table), the run's ``leaderboard.json`` and ``trained.json``. So
:func:`rebuild` writes the section again from a folder, e.g. after a run was stopped during its
second round.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from agents.eval.compare import paired_gain
from agents.eval.report import phi_ci, read_rows, result_rows
from agents.eval.results import BenchResult
from proxy_env.tasks import TASKS, get_task

if TYPE_CHECKING:
    from agents.eval.leaderboard import LeaderboardConfig

SECTION = "board.md"
PER_PROMPT = "per_prompt.json"
TRAINED = "trained.json"


@dataclass
class TrainedAgent:
    """One training run of the leaderboard: its checkpoint, or why there is none."""

    name: str
    seed: int
    checkpoint: str | None
    wall_s: float
    error: str | None = None


@dataclass
class Round:
    """One bench of a leaderboard run: its rows and (when saved) each agent's per-prompt results."""

    rows: list[dict[str, Any]]
    prompts: list[str]
    machine: str
    per_prompt: dict[str, dict[str, Any]] = field(default_factory=dict)  # agent -> kind, rewards, kl, texts


def save_round(bench: BenchResult, folder: Path, digest: str) -> Round:
    """The round of ``bench``, its per-prompt results written to ``folder/per_prompt.json`` (after results.csv) and
    then the settings ``digest``: last, so that :func:`round_saved` finds a round only once all of it is written."""
    from agents.eval.resume import ROUND_SETTINGS

    per_prompt = {
        a.name: {"kind": a.kind, "rewards": a.rewards.tolist(), "kl": a.kl.tolist(), "texts": list(a.texts)}
        for a in bench.agents
    }
    data = {"prompts": list(bench.prompts), "machine": bench.machine, "agents": per_prompt}
    (folder / PER_PROMPT).write_text(json.dumps(data), encoding="utf-8")
    (folder / ROUND_SETTINGS).write_text(digest + "\n", encoding="utf-8")
    return Round(result_rows(bench), list(bench.prompts), bench.machine, per_prompt)


def load_round(folder: Path) -> Round:
    """A round from ``folder``: its results.csv, and its per_prompt.json when there is one."""
    rows = read_rows(folder / "results.csv")
    if any(r["kind"] == "best-of-n" for r in rows):  # φ and the collapse flag under today's definitions
        from agents.eval.report import frontier_scores

        frontier_scores(rows)
    path = folder / PER_PROMPT
    if not path.is_file():
        return Round(rows, [], "", {})
    data = json.loads(path.read_text(encoding="utf-8"))
    return Round(rows, data["prompts"], data["machine"], data["agents"])


# ``ppo proxy (ppo-kl-s0)``: the folder the leaderboard saved a trained agent in, ``<name>-s<seed>``
TRAINED_FOLDER = re.compile(r"\(([^()]+)-s(\d+)\)")


def round_saved(folder: Path, digest: str) -> bool:
    """Whether ``folder`` holds a round benchmarked to its end under the settings ``digest`` (:func:`save_round`
    writes the digest last)."""
    from agents.eval.resume import ROUND_SETTINGS

    settings = folder / ROUND_SETTINGS
    return (
        (folder / PER_PROMPT).is_file()
        and settings.is_file()
        and settings.read_text(encoding="utf-8").strip() == digest
    )


def benched_agent(out: Path, digest: str, name: str, seed: int) -> TrainedAgent | None:
    """The agent ``name``/``seed`` as ``out/trained.json`` lists it, when the round of its seed was benchmarked under
    the settings ``digest`` with it (or it failed to train); else None.

    A resumed run on a fresh clone of a committed board (whose ``agents/`` folder is not in git) reads its
    benchmarked rounds back without training their agents again; only a round still to run needs checkpoints.
    """
    folder, listing = out / f"seed{seed}", out / TRAINED
    if not (listing.is_file() and round_saved(folder, digest)):
        return None
    saved = json.loads(listing.read_text(encoding="utf-8")).get("trained", [])
    agent = next((TrainedAgent(**t) for t in saved if t["name"] == name and t["seed"] == seed), None)
    if agent is None or agent.error:
        return agent
    named = {found.groups() for r in read_rows(folder / "results.csv") if (found := TRAINED_FOLDER.search(r["agent"]))}
    return agent if (name, str(seed)) in named else None


def _trained_name(agent_name: str) -> str | None:
    """``ppo proxy (ppo-kl-s0)`` -> ``ppo-kl``; None for an agent the leaderboard did not train."""
    found = TRAINED_FOLDER.search(agent_name)
    return found.group(1) if found else None


def _seed(agent_name: str) -> str:
    """``ppo proxy (ppo-kl-s1)`` -> ``1`` ('—' for an agent the leaderboard did not train)."""
    found = TRAINED_FOLDER.search(agent_name)
    return found.group(2) if found else "—"


def _order(row: dict[str, Any]) -> tuple[int, float]:
    if row["collapsed"]:
        return (2, -row["reward"])
    return (0, -row["phi"]) if not math.isnan(row["phi"]) else (1, -row["reward"])


def ranked(rows: list[dict[str, Any]]) -> list[str]:
    """Names of the trained agents among a bench's ``rows``, best first (φ; then φ undefined by reward; collapsed last)."""
    mine = [r for r in rows if r["kind"] == "proxy" and _trained_name(r["agent"])]
    return [str(_trained_name(r["agent"])) for r in sorted(mine, key=_order)]


def _cell(value: float, digits: int = 3, sign: bool = False) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "—"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def section(
    cfg: LeaderboardConfig,
    rounds: list[Round],
    trained: list[TrainedAgent],
    wall_s: float,
    command: str,
    note: str = "",
) -> str:
    """The markdown section of one task: settings, the ranked table, failures, the figure, per-instruction rates."""
    task, first = get_task(cfg.task), rounds[0]
    arrays = {name: (np.asarray(a["rewards"]), np.asarray(a["kl"])) for name, a in first.per_prompt.items()}
    base = arrays["always-accept"][0] if "always-accept" in arrays else None
    bon = [arrays[r["agent"]] for r in first.rows if r["kind"] == "best-of-n" and r["agent"] in arrays]
    lines = [
        f"## {task.env_id}",
        "",
        f"{task.what[0].upper()}{task.what[1:]}. Hard: {task.hard}.",
        "",
        f"Budget: {cfg.decisions:,} decisions per agent, {cfg.num_envs} envs (tilt: 32), model {cfg.model!r}, "
        f"max_new_tokens={cfg.max_new_tokens}; evaluated on {int(first.rows[0]['prompts'])} held-out prompts "
        f"(``{task.eval_prompts}``), sampled actions, seed {cfg.seed}. Wall time of the whole run "
        f"(training, evaluation, second seeds): {wall_s:.0f} s. Machine: {first.machine or 'see results.md'}.",
        f"Command: `{command or 'proxy-rlhf leaderboard --task ' + task.name}`",
        *(["", note] if note else []),
        "",
        "| rank | agent | seed | reward | gain vs always-accept [95% CI] | KL (nats) | φ [95% CI] | aligned | "
        "perplexity | distinct-2 | rejection rate | LLM forwards / response | s / response | trainable params | training s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    mine: list[tuple[int, dict[str, Any]]] = []
    others: list[tuple[int, dict[str, Any]]] = []
    for index, rnd in enumerate(rounds):
        for row in rnd.rows:
            if row["kind"] == "proxy" and _trained_name(row["agent"]):
                mine.append((index, row))
            elif index == 0:  # later rounds repeat always-accept and read best-of-N from the first
                others.append((index, row))
    wall = {f"{t.name}-s{t.seed}": t.wall_s for t in trained}
    rank = 0
    for index, row in [*sorted(mine, key=lambda x: _order(x[1])), *others]:
        own = rounds[index].per_prompt.get(row["agent"])
        gain, phi = "—", _cell(row["phi"], 2)
        if own is not None and base is not None and row["agent"] != "always-accept":
            d, lo, hi, _ = paired_gain(np.asarray(own["rewards"]), base)
            gain = f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]"
        # later rounds share the first's prompts and always-accept (checked when benchmarked): one frontier for all
        if own is not None and base is not None and row["kind"] == "proxy" and not math.isnan(float(row["phi"])):
            lo, hi = phi_ci(np.asarray(own["rewards"]), np.asarray(own["kl"]), base, bon)
            phi += f" [{_cell(lo, 2)}, {_cell(hi, 2)}]"
        folder = TRAINED_FOLDER.search(row["agent"])
        is_mine = row["kind"] == "proxy" and folder is not None
        rank += is_mine
        train_s = wall.get(f"{folder.group(1)}-s{folder.group(2)}", row["train_wall_s"]) if folder else math.nan
        lines.append(
            f"| {rank if is_mine else ''} | {_trained_name(row['agent']) or row['agent']} | "
            f"{_seed(row['agent'])} | {_cell(row['reward'], sign=True)} | {gain} | "
            f"{_cell(row['kl'])} | {phi} | {'no: collapsed' if row['collapsed'] else 'yes'} | "
            f"{_cell(row['perplexity'], 2)} | {row['distinct_2']:.3f} | {_cell(row['rejection_rate'])} | "
            f"{row['forwards_per_response']:.1f} | {row['wall_s_per_response']:.3f} | {int(row['trainable_params']):,} | "
            f"{_cell(float(train_s), 0)} |"
        )
    if not first.per_prompt:
        lines += ["", "(This run saved no per-prompt results: no paired CIs or φ intervals.)"]
    failed = [t for t in trained if t.error]
    if failed:
        lines += ["", "Agents that did not train:", "", "| agent | seed | error |", "|---|---|---|"]
        lines += [f"| {t.name} | {t.seed} | {(t.error or '').replace('|', '/')} |" for t in failed]
    lines += ["", f"![reward–KL, {task.env_id}]({task.name}/seed{cfg.seed}/reward_kl.png)", ""]
    if task.name == "instructions" and first.per_prompt:
        lines += _instruction_table(rounds)
    return "\n".join(lines) + "\n"


def _instruction_table(rounds: list[Round]) -> list[str]:
    """Share of each instruction type followed, per agent of every round (the instructions task; same prompts)."""
    from proxy_env.tasks.instructions import per_instruction

    merged = {name: a for rnd in rounds for name, a in rnd.per_prompt.items()}  # later rounds repeat always-accept
    agents = [(name, a) for name, a in merged.items() if a["texts"]]
    tables = {name: per_instruction(rounds[0].prompts, a["texts"]) for name, a in agents}
    keys = sorted({k for t in tables.values() for k in t})
    first = set(rounds[0].per_prompt)
    # a later round's agents (second seeds) would repeat the first round's column names: they carry their seed
    names = [
        _trained_name(name) or name if name in first else f"{_trained_name(name) or name}, seed {_seed(name)}"
        for name, _ in agents
    ]
    lines = [
        "Share of each instruction followed (held-out prompts; myopic: rejecting what breaks it suffices):",
        "",
        "| instruction | kind | prompts | " + " | ".join(names) + " |",
        "|---|---|---|" + "---|" * len(names),
    ]
    for key in keys:
        kind, _, total = next(t[key] for t in tables.values() if key in t)
        cells = [f"{tables[name][key][1] / total:.2f}" if key in tables[name] else "—" for name, _ in agents]
        lines.append(f"| {key} | {kind} | {total} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def write_board(
    cfg: LeaderboardConfig,
    rounds: list[Round],
    trained: list[TrainedAgent],
    wall_s: float,
    command: str,
    out: Path,
    note: str = "",
) -> Path:
    """Write the task's section (and ``trained.json``) into ``out``; (re)assemble ``LEADERBOARD.md``."""
    from dataclasses import asdict

    (out / TRAINED).write_text(
        json.dumps(
            {"wall_s": wall_s, "command": command, "note": note, "trained": [asdict(t) for t in trained]}, indent=1
        ),
        encoding="utf-8",
    )
    path = out / SECTION
    path.write_text(section(cfg, rounds, trained, wall_s, command, note), encoding="utf-8")
    assemble(out.parent, Path(cfg.board).expanduser() if cfg.board else None)
    return path


def rebuild(
    cfg: LeaderboardConfig,
    *,
    wall_s: float | None = None,
    command: str | None = None,
    note: str | None = None,
    trained: list[TrainedAgent] | None = None,
) -> Path:
    """Write the task's section again from ``<out>/<task>``: its rounds on disk and its trained agents.

    Agents come from ``trained.json`` when the run got that far, else from the checkpoints under ``agents/``
    (their training seconds from the bench's rows). ``wall_s``/``command`` fill in what an interrupted run
    did not record; ``note`` adds a paragraph under the command; ``trained`` replaces what the folder says.
    """
    task = get_task(cfg.task)
    out = Path(cfg.out).expanduser() / task.name
    rounds = [
        load_round(out / f"seed{s}") for s in (cfg.seed, cfg.seed + 1) if (out / f"seed{s}" / "results.csv").is_file()
    ]
    if not rounds:
        from proxy_env.errors import ConfigError

        raise ConfigError(
            f"{out} holds no seed{cfg.seed}/results.csv; run the leaderboard for task={task.name!r} first."
        )
    saved = json.loads((out / TRAINED).read_text(encoding="utf-8")) if (out / TRAINED).is_file() else {}
    trained = trained if trained is not None else [TrainedAgent(**t) for t in saved.get("trained", [])]
    if not trained:
        for rnd in rounds:
            for row in rnd.rows:
                found = TRAINED_FOLDER.search(row["agent"])
                if row["kind"] == "proxy" and found:
                    folder = out / "agents" / f"{found.group(1)}-s{found.group(2)}"
                    trained.append(TrainedAgent(found.group(1), int(found.group(2)), str(folder), row["train_wall_s"]))
    wall = wall_s if wall_s is not None else float(saved.get("wall_s", math.nan))
    said = note if note is not None else saved.get("note", "")
    return write_board(
        cfg, rounds, trained, wall, command if command is not None else saved.get("command", ""), out, said
    )


def assemble(root: Path, target: Path | None = None) -> Path:
    """``LEADERBOARD.md`` (``target``, default ``<root>/LEADERBOARD.md``) from the sections of every task under ``root``.

    Sections link their figures relative to ``root``; the links are rewritten relative to ``target``'s folder.
    """
    target = target or root / "LEADERBOARD.md"
    parts = [
        "# Leaderboard",
        "",
        "Every agent trained at the same decision budget on each task and evaluated on the task's held-out "
        "prompts (`proxy-rlhf leaderboard`, agents/eval/leaderboard.py). φ is the share of best-of-N's reward gain "
        "reached at the same exact KL from the LLM's sampler; rows that reward-hack (collapsed text) rank last "
        "whatever their reward. Best-of-N is the reference frontier, not a trained agent.",
        "",
    ]
    for name in TASKS:
        part = root / name / SECTION
        if part.is_file():
            text = part.read_text(encoding="utf-8")
            parts.append(re.sub(r"\]\(([^)]+\.png)\)", lambda m: f"]({_relink(root, m.group(1), target)})", text))
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n".join(parts), encoding="utf-8")
    return target


def _relink(root: Path, link: str, target: Path) -> str:
    """``link`` (relative to ``root``) as seen from ``target``'s folder."""
    return Path(os.path.relpath((root / link).resolve(), target.parent.resolve())).as_posix()
