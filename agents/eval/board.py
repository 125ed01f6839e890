"""The leaderboard's tables: one task's section (``<out>/<task>/board.md``) and ``LEADERBOARD.md`` from all of them.

A task's section ranks the trained agents on the reward–KL plane: by φ (the share of best-of-N's
reward gain reached at the same KL, with a bootstrap 95% CI over prompts), agents whose text
collapsed last, agents beyond best-of-N's KL range (φ undefined) after those with a φ, by reward.
Failed trainings are rows with their error. The instructions task adds the share of each
instruction type followed, per agent.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from agents.eval.compare import paired_gain
from agents.eval.report import result_rows
from agents.eval.results import AgentEval, BenchResult
from proxy_env.tasks import TASKS, get_task

if TYPE_CHECKING:
    from agents.eval.leaderboard import TaskBoard, TrainedAgent

BOOTSTRAP = 1000
SECTION = "board.md"


def phi_ci(agent: AgentEval, base: AgentEval, bon: list[AgentEval], seed: int = 0) -> tuple[float, float]:
    """A bootstrap 95% CI of φ over prompts (resampled together for the agent, always-accept and best-of-N)."""
    if not bon:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    n = len(agent.rewards)
    draws = []
    for _ in range(BOOTSTRAP):
        idx = rng.integers(0, n, n)
        kl = np.maximum.accumulate(np.array([0.0] + [max(float(b.kl[idx].mean()), 0.0) for b in bon]))
        reward = np.array([base.rewards[idx].mean()] + [b.rewards[idx].mean() for b in bon])
        row_kl = max(float(agent.kl[idx].mean()), 0.0)
        frontier = float(np.interp(row_kl, kl, reward))
        ok = row_kl <= kl[-1] and frontier > reward[0]
        draws.append((agent.rewards[idx].mean() - reward[0]) / (frontier - reward[0]) if ok else math.nan)
    values = np.array(draws)
    if np.isnan(values).mean() > 0.05:  # undefined in more than 5% of resamples: no interval
        return math.nan, math.nan
    lo, hi = np.nanpercentile(values, [2.5, 97.5])
    return float(lo), float(hi)


def _trained_name(agent_name: str) -> str | None:
    """``ppo proxy (ppo-kl-s0)`` -> ``ppo-kl`` (the folder the leaderboard saved it in: ``<name>-s<seed>``)."""
    found = re.search(r"\(([^()]+)-s\d+\)", agent_name)
    return found.group(1) if found else None


def _order(row: dict[str, Any]) -> tuple[int, float]:
    if row["collapsed"]:
        return (2, -row["reward"])
    return (0, -row["phi"]) if not math.isnan(row["phi"]) else (1, -row["reward"])


def ranked(bench: BenchResult, trained: list[TrainedAgent]) -> list[str]:
    """Names of the trained agents of ``bench``, best first (φ; then φ undefined by reward; collapsed last)."""
    rows = [r for r in result_rows(bench) if r["kind"] == "proxy" and _trained_name(r["agent"])]
    return [str(_trained_name(r["agent"])) for r in sorted(rows, key=_order)]


def _cell(value: float, digits: int = 3, sign: bool = False) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "—"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def section(board: TaskBoard, figure: str) -> str:
    """The markdown section of one task: settings, the ranked table, failures, the figure, per-instruction rates."""
    cfg, task = board.config, get_task(board.config.task)
    first = board.benches[0]
    base = next(a for a in first.agents if a.name == "always-accept")
    bon = sorted((a for a in first.agents if a.kind == "best-of-n"), key=lambda a: int(a.name.rsplit("-", 1)[1]))
    lines = [
        f"## {task.env_id}",
        "",
        f"{task.what[0].upper()}{task.what[1:]}. Hard: {task.hard}.",
        "",
        f"Budget: {cfg.decisions:,} decisions per agent, {cfg.num_envs} envs (tilt: 32), model {cfg.model!r}, "
        f"max_new_tokens={cfg.max_new_tokens}; evaluated on {len(first.prompts)} held-out prompts "
        f"(``{task.eval_prompts}``), sampled actions, seed {cfg.seed}. Wall time of the whole run "
        f"(training, evaluation, second seeds): {board.wall_s:.0f} s. Machine: {first.machine}.",
        f"Command: `{board.command or 'proxy-rlhf leaderboard --task ' + task.name}`",
        "",
        "| rank | agent | seed | reward | gain vs always-accept [95% CI] | KL (nats) | φ [95% CI] | aligned | "
        "perplexity | distinct-2 | rejection rate | LLM forwards / response | s / response | trainable params | training s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    evals = {a.name: a for bench in board.benches for a in bench.agents}
    trained_rows: list[tuple[int, dict[str, Any]]] = []
    other_rows: list[tuple[int, dict[str, Any]]] = []
    for bench_index, bench in enumerate(board.benches):
        for row in result_rows(bench):
            if bench_index and row["kind"] != "proxy":
                continue  # the second round repeats always-accept and reads best-of-N from the first
            (trained_rows if row["kind"] == "proxy" and _trained_name(row["agent"]) else other_rows).append(
                (bench_index, row)
            )
    wall = {f"{t.name}-s{t.seed}": t.wall_s for t in board.trained}
    for rank, (index, row) in enumerate([*sorted(trained_rows, key=lambda x: _order(x[1])), *other_rows], start=1):
        agent = evals.get(row["agent"])
        gain = "—"
        if agent is not None and row["agent"] != "always-accept":
            d, lo, hi, _ = paired_gain(agent.rewards, base.rewards)
            gain = f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]"
        lo, hi = phi_ci(agent, base, bon) if agent is not None and index == 0 and row["kind"] == "proxy" else (0, 0)
        phi = _cell(row["phi"], 2) + (f" [{_cell(lo, 2)}, {_cell(hi, 2)}]" if (lo, hi) != (0, 0) else "")
        folder = re.search(r"\(([^()]+)\)", row["agent"])
        name = _trained_name(row["agent"]) or row["agent"]
        seed = folder.group(1).rsplit("-s", 1)[1] if folder and _trained_name(row["agent"]) else "—"
        train_s = wall.get(folder.group(1), math.nan) if folder else math.nan
        lines.append(
            f"| {rank if row['kind'] == 'proxy' else ''} | {name} | {seed} | {_cell(row['reward'], sign=True)} | {gain} | "
            f"{_cell(row['kl'])} | {phi} | {'no: collapsed' if row['collapsed'] else 'yes'} | "
            f"{_cell(row['perplexity'], 2)} | {row['distinct_2']:.3f} | {_cell(row['rejection_rate'])} | "
            f"{row['forwards_per_response']:.1f} | {row['wall_s_per_response']:.3f} | {row['trainable_params']:,} | "
            f"{_cell(train_s, 0)} |"
        )
    failed = [t for t in board.trained if t.error]
    if failed:
        lines += ["", "Agents that did not train:", "", "| agent | seed | error |", "|---|---|---|"]
        lines += [f"| {t.name} | {t.seed} | {t.error.replace('|', '/')} |" for t in failed if t.error]
    lines += ["", f"![reward–KL, {task.env_id}]({figure})", ""]
    if task.name == "instructions":
        lines += _instruction_table(first)
    return "\n".join(lines) + "\n"


def _instruction_table(bench: BenchResult) -> list[str]:
    """Share of each instruction type followed, per agent (the instructions task)."""
    from proxy_env.tasks.instructions import per_instruction

    agents = [a for a in bench.agents if a.texts]
    tables = {a.name: per_instruction(bench.prompts, a.texts) for a in agents}
    keys = sorted({k for t in tables.values() for k in t})
    names = [_trained_name(a.name) or a.name for a in agents]
    lines = [
        "Share of each instruction followed (held-out prompts; myopic: rejecting what breaks it suffices):",
        "",
        "| instruction | kind | prompts | " + " | ".join(names) + " |",
        "|---|---|---|" + "---|" * len(names),
    ]
    for key in keys:
        kind, _, total = next(t[key] for t in tables.values() if key in t)
        cells = [f"{tables[a.name][key][1] / total:.2f}" if key in tables[a.name] else "—" for a in agents]
        lines.append(f"| {key} | {kind} | {total} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def write_board(board: TaskBoard, out: Path) -> Path:
    """Write the task's section into ``out`` and (re)assemble ``LEADERBOARD.md`` from every task's section."""
    path = out / SECTION
    path.write_text(section(board, f"{out.name}/seed{board.config.seed}/reward_kl.png"), encoding="utf-8")
    assemble(out.parent, Path(board.config.board).expanduser() if board.config.board else None)
    return path


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
