"""``proxy-rlhf leaderboard``: the parser and its handler (the work is :func:`agents.eval.leaderboard.run_leaderboard`)."""

from __future__ import annotations

from typing import Any

from agents.cli.flags import add_config_flags, config_from_args


def _leaderboard(args: Any) -> int:
    from agents.eval.leaderboard import LeaderboardConfig, run_leaderboard
    from proxy_env.tasks import get_task

    cfg = config_from_args(LeaderboardConfig, args).resolved()  # every value checked before the LLM loads
    board = run_leaderboard(cfg, log=lambda line: print(line, flush=True))
    task = get_task(cfg.task)
    print(f"wrote {cfg.out}/{task.name}/board.md and {cfg.out}/LEADERBOARD.md in {board.wall_s:.0f} s")
    return 0


def add_subcommands(sub: Any) -> None:
    """Add ``leaderboard`` to the ``proxy-rlhf`` parser (heavy imports stay in the handler)."""
    from agents.eval.leaderboard import AGENTS, LeaderboardConfig

    p = sub.add_parser(
        "leaderboard",
        help="train every agent at one decision budget on a task, benchmark them against best-of-N: LEADERBOARD.md",
        description=f"Agents: {', '.join(AGENTS)}. Tasks: proxy_env.tasks (sentiment, instructions, relevance, "
        "civil-relevance).",
    )
    add_config_flags(p, LeaderboardConfig)
    p.set_defaults(func=_leaderboard)
