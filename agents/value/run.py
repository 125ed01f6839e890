"""``proxy-rlhf value``: collect the value data (resumable) and fit the distributional value head, from one config."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from agents.training import check_int, check_number, help_text
from proxy_env.config import EnvConfig, check_pool
from proxy_env.errors import ConfigError


@dataclass
class ValueConfig:
    """One value run: the data (prompts, samples, positions) and the head (bins, epochs); each field is a flag."""

    model: str = field(default="default", metadata=help_text("frozen LLM ('default', 'tiny', a hub id or a path)"))
    reward: str = field(default="default", metadata=help_text("reward source, by name (the env's reward=)"))
    prompts: str = field(default="default", metadata=help_text("training prompts (a prompt set name or path)"))
    num_prompts: int | None = field(default=None, metadata=help_text("first N prompts only (None: all)"))
    samples: int = field(default=64, metadata=help_text("responses per prompt: its reward CDF and its rollouts"))
    positions: int = field(default=4, metadata=help_text("labelled positions kept per response"))
    max_new_tokens: int = field(default=32, metadata=help_text("response budget"))
    top_k: int = field(default=EnvConfig.top_k, metadata=help_text("the pool: top-k"))
    top_p: float = field(default=EnvConfig.top_p, metadata=help_text("the pool: top-p"))
    temperature: float = field(default=EnvConfig.temperature, metadata=help_text("the pool: temperature"))
    hidden_layer: int = field(default=-1, metadata=help_text("which hidden state the features hold"))
    seed: int = field(default=0, metadata=help_text("sampling and split seed"))
    batch_prompts: int = field(default=4, metadata=help_text("prompts sampled at once (x samples rows)"))
    data: str = field(default="runs/value/data.pt", metadata=help_text("the data file (resumed when it exists)"))
    out: str = field(default="runs/value/head", metadata=help_text("folder of the fitted head and its report"))
    bins: int = field(default=24, metadata=help_text("histogram bins of u"))
    epochs: int = field(default=8, metadata=help_text("passes over the training positions"))
    learning_rate: float = field(default=1e-3, metadata=help_text("AdamW learning rate"))
    collect_only: bool = field(default=False, metadata=help_text("collect the data, fit nothing"))
    curve: tuple[float, ...] = field(
        default=(),
        metadata=help_text(
            "also fit on these shares of the training prompts (e.g. 0.125 0.25 0.5): the learning curve"
        ),
    )

    def validate(self) -> None:
        for name, minimum in (("samples", 2), ("positions", 1), ("max_new_tokens", 1), ("batch_prompts", 1)):
            check_int(name, getattr(self, name), minimum=minimum)
        check_int("bins", self.bins, minimum=2)
        check_int("epochs", self.epochs, minimum=1)
        check_number("learning_rate", self.learning_rate, lambda v: 0 < v <= 1, "in (0, 1]")
        check_pool(self.top_k, self.top_p, self.temperature, min_top_k=2)
        if self.num_prompts is not None:
            check_int("num_prompts", self.num_prompts, minimum=2)
        if any(not isinstance(x, (int, float)) or isinstance(x, bool) or not 0 < x <= 1 for x in self.curve):
            raise ConfigError(
                f"curve={self.curve!r}: each share of the training prompts must be in (0, 1] (--curve 0.25 0.5)."
            )
        if Path(self.data).expanduser().is_dir():
            raise ConfigError(f"data={self.data!r} is a folder; pass the path of a file to collect into.")


def run_value(cfg: ValueConfig, *, log: Any = print) -> dict[str, Any]:
    """Collect (or resume) the data, then fit and save the head; returns the report (also ``<out>/report.json``)."""
    from agents.value.data import DATA_VERSION, ValueDataKey, collect_value_data
    from agents.value.head import (
        ValueHead,
        ValueHeadConfig,
        curve_point,
        fit_value_head,
        learning_curve,
        save_value_head,
    )
    from proxy_env.engine.models import as_frozen_lm
    from proxy_env.prompts import load_prompts
    from proxy_env.rewards import resolve_reward

    cfg.validate()
    prompts = load_prompts(cfg.prompts)[: cfg.num_prompts]
    lm = as_frozen_lm(cfg.model)
    key = ValueDataKey(
        DATA_VERSION,
        getattr(lm, "name", cfg.model),
        cfg.reward,
        cfg.prompts if cfg.num_prompts is None else f"{cfg.prompts}[:{cfg.num_prompts}]",
        cfg.samples,
        cfg.positions,
        cfg.max_new_tokens,
        cfg.top_k,
        cfg.top_p,
        cfg.temperature,
        cfg.hidden_layer,
        cfg.seed,
    )
    start = time.perf_counter()
    data = collect_value_data(
        lm,
        prompts,
        resolve_reward(cfg.reward, device=lm.device, lm=lm),
        key,
        path=cfg.data,
        batch_prompts=cfg.batch_prompts,
        progress=lambda done, total: log(f"value data: {done}/{total} prompts, {time.perf_counter() - start:.0f} s"),
    )
    report: dict[str, Any] = {
        "config": asdict(cfg),
        "data": {"positions": len(data), "responses": len(prompts) * cfg.samples, "prompts": len(prompts)},
        "collect_s": time.perf_counter() - start,
    }
    if cfg.collect_only:
        return report
    head = ValueHead(
        ValueHeadConfig(obs_dim=3 * lm.hidden_size + 2, bins=cfg.bins, model=lm.name, hidden_layer=cfg.hidden_layer)
    )
    fit_start = time.perf_counter()
    trained = fit_value_head(head, lm, data, epochs=cfg.epochs, lr=cfg.learning_rate, seed=cfg.seed, log=log)
    report.update(trained=trained, fit_s=time.perf_counter() - fit_start, parameters=head.num_parameters)
    if cfg.curve:
        fit = {"epochs": cfg.epochs, "lr": cfg.learning_rate}
        smaller = tuple(share for share in cfg.curve if share < 1)  # the whole share is the fit above
        report["curve"] = learning_curve(head.config, lm, data, smaller, seed=cfg.seed, **fit)
        report["curve"].append(curve_point(1.0, trained))
        for point in report["curve"]:
            log(
                f"value curve: {point['responses']:,} responses ({point['share']:g} of the training prompts): "
                f"held-out cross-entropy {point['held_out_ce']:.4f}, corr E[u^7] {point['corr E[u^7]']:.3f}"
            )
    summary = {"data": report["data"], "held_out_ce": trained["held_out_ce"][-1], "marginal_ce": trained["marginal_ce"]}
    head.config = replace(head.config, trained=summary)
    out = save_value_head(head, cfg.out)
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    log(
        f"value head: {head.num_parameters:,} parameters, held-out cross-entropy {trained['held_out_ce'][-1]:.4f} "
        f"(marginal {trained['marginal_ce']:.4f}); wrote {out}"
    )
    return report
