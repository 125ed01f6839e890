"""``proxy-rlhf value``: the parser and its handler (the work is :func:`agents.value.run.run_value`)."""

from __future__ import annotations

from typing import Any

from agents.cli.flags import add_config_flags, config_from_args


def _value(args: Any) -> int:
    from agents.value.run import ValueConfig, run_value

    cfg = config_from_args(ValueConfig, args)
    cfg.validate()  # every value checked before the LLM loads
    run_value(cfg, log=lambda line: print(line, flush=True))
    return 0


def add_subcommands(sub: Any) -> None:
    """Add ``value`` to the ``proxy-rlhf`` parser (heavy imports stay in the handler)."""
    from agents.value.run import ValueConfig

    p = sub.add_parser(
        "value",
        help="collect the LLM's responses and fit the distributional value of prefixes (the head --tilt-value reads)",
        description="Samples --samples responses per training prompt (their reward CDF and their rollouts), labels "
        "--positions positions of each with the response's final quantile u, and fits a histogram of u given the "
        "proxy's observation (agents/value/). The data file is resumed when it exists.",
    )
    add_config_flags(p, ValueConfig)
    p.set_defaults(func=_value)
