"""``proxy-rlhf finetune``: one flag per :class:`~agents.finetune.config.FinetuneConfig` field, a line per logged step."""

from __future__ import annotations

import argparse
from dataclasses import fields
from typing import Any

from agents.finetune.config import FinetuneConfig


def add_subcommands(sub: Any) -> None:
    """Add ``proxy-rlhf finetune``: one flag per :class:`FinetuneConfig` field."""
    from agents.cli.flags import add_config_flags

    parser = sub.add_parser(
        "finetune", help="full fine-tune of the LLM with TRL (grpo, dpo or online-dpo): the peers of a proxy"
    )
    add_config_flags(parser, FinetuneConfig)
    parser.set_defaults(func=_cli)


def _fmt(logs: dict[str, Any], key: str, label: str, spec: str = "+.3f") -> str:
    return f"  {label} {logs[key]:{spec}}" if key in logs else ""


def _printer() -> Any:
    """A ``TrainerCallback`` that prints one line per log: step, loss, reward, KL, response length, seconds per step."""
    from transformers import TrainerCallback

    class Printer(TrainerCallback):
        def on_log(
            self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any
        ) -> None:
            if not logs or "train_runtime" in logs:
                return
            line = (
                f"step {state.global_step:>5}"
                + _fmt(logs, "reward", "reward")
                + _fmt(logs, "objective/scores", "reward")
                + _fmt(logs, "kl", "kl", ".4f")
                + _fmt(logs, "objective/kl", "kl", ".3f")
                + _fmt(logs, "loss", "loss", ".4f")
                + _fmt(logs, "rewards/accuracies", "pair accuracy", ".2f")
                + _fmt(logs, "rewards/margins", "margin", "+.3f")
                + _fmt(logs, "completions/mean_length", "length", ".1f")
                + _fmt(logs, "step_time", "s/step", ".2f")
            )
            print(line, flush=True)

    return Printer()


def _cli(args: argparse.Namespace) -> int:
    values = {f.name: getattr(args, f.name) for f in fields(FinetuneConfig)}
    values["pairs"] = tuple(values["pairs"])
    cfg = FinetuneConfig(**values)
    from agents.finetune.run import finetune

    print(
        f"fine-tuning {cfg.model!r} with {cfg.method} (β {cfg.beta_value:g}, steps <= {cfg.max_steps}, "
        f"time limit {cfg.time_limit_s:g} s) ...",
        flush=True,
    )
    result = finetune(cfg, callbacks=[_printer()])
    unit = "pairs" if cfg.method == "dpo" else "responses"
    print(
        f"{result.steps} steps, {result.samples} {unit} in {result.wall_s:.0f} s; {result.trainable_params:,} trainable parameters"
    )
    if result.reward_first is not None:
        print(
            f"train reward {result.reward_first:+.3f} -> {result.reward_last:+.3f}"
            + (f"; KL {result.kl_last:.4f}" if result.kl_last is not None else "")
        )
    print(f"model: {result.output_dir}")
    return 0
