"""``proxy-rlhf value``: collect the value data (resumable) and fit the distributional value head, from one config."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.training import check_int, check_number, help_text
from proxy_env.config import EnvConfig, check_pool
from proxy_env.errors import ConfigError

if TYPE_CHECKING:
    from agents.value.data import ValueDataKey


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
    epochs: int = field(
        default=4, metadata=help_text("passes over the training positions (the best on validation prompts is kept)")
    )
    learning_rate: float = field(default=1e-4, metadata=help_text("AdamW learning rate"))
    collect_only: bool = field(default=False, metadata=help_text("collect the data, fit nothing"))
    roll_in: str | None = field(
        default=None,
        metadata=help_text(
            "Q♯'s second round: a value head folder whose guide rolls in (agents/value/rollin.py); the head is then "
            "fitted on both rounds"
        ),
    )
    roll_in_n: int = field(default=4, metadata=help_text("the N of the rolling-in guide"))
    roll_in_rule: str = field(default="distribution", metadata=help_text("the rolling-in guide's rule"))
    roll_ins: int = field(default=8, metadata=help_text("guided roll-ins per training prompt"))
    roll_in_data: str = field(
        default="runs/value/rollin.pt", metadata=help_text("the roll-in round's data file (resumed when it exists)")
    )
    train_share: float = field(
        default=1.0,
        metadata=help_text(
            "fit the head on this share of the training prompts only (same held-out prompts): a point of the "
            "learning curve saved as a head that `bench --value-head` can steer with"
        ),
    )
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
        check_number("train_share", self.train_share, lambda v: 0 < v <= 1, "in (0, 1] (--train-share 0.25)")
        if any(not isinstance(x, (int, float)) or isinstance(x, bool) or not 0 < x <= 1 for x in self.curve):
            raise ConfigError(
                f"curve={self.curve!r}: each share of the training prompts must be in (0, 1] (--curve 0.25 0.5)."
            )
        for name in ("data", "roll_in_data"):
            if Path(getattr(self, name)).expanduser().is_dir():
                raise ConfigError(
                    f"{name}={getattr(self, name)!r} is a folder; pass the path of a file to collect into."
                )
        if self.roll_in is not None:
            from agents.value import VALUE_RULES
            from agents.value.head import CONFIG_FILE

            if not (Path(self.roll_in).expanduser() / CONFIG_FILE).is_file():
                raise ConfigError(
                    f"roll_in={self.roll_in!r} is not a value head folder; pass the --out of a `proxy-rlhf value` run."
                )
            check_int("roll_in_n", self.roll_in_n, minimum=1)
            check_int("roll_ins", self.roll_ins, minimum=1)
            if self.hidden_layer != -1:
                raise ConfigError(
                    f"hidden_layer={self.hidden_layer} with roll_in: the guide reads the last layer's state (its "
                    "pool is rebuilt through the output head); pass --hidden-layer -1."
                )
            if self.roll_in_rule not in VALUE_RULES:
                raise ConfigError(f"roll_in_rule={self.roll_in_rule!r} must be one of {list(VALUE_RULES)}.")
            if Path(self.roll_in).expanduser().resolve() == Path(self.out).expanduser().resolve():
                raise ConfigError(
                    f"out={self.out!r} is the rolling-in head's folder: the second round's head would overwrite the "
                    "guide it was collected with; pass another --out."
                )

    def data_key(self, model_name: str) -> ValueDataKey:
        """The :class:`agents.value.data.ValueDataKey` of the data these settings collect with the model ``model_name``."""
        from agents.value.data import DATA_VERSION, ValueDataKey

        return ValueDataKey(
            DATA_VERSION,
            model_name,
            self.reward,
            self.prompts if self.num_prompts is None else f"{self.prompts}[:{self.num_prompts}]",
            self.samples,
            self.positions,
            self.max_new_tokens,
            self.top_k,
            self.top_p,
            self.temperature,
            self.hidden_layer,
            self.seed,
        )


def run_value(cfg: ValueConfig, *, log: Any = print) -> dict[str, Any]:
    """Collect (or resume) the data, then fit and save the head; returns the report (also ``<out>/report.json``)."""
    from agents.value.data import collect_value_data
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
    key = cfg.data_key(getattr(lm, "name", cfg.model))
    start = time.perf_counter()
    reward = resolve_reward(cfg.reward, device=lm.device, lm=lm)
    data = collect_value_data(
        lm,
        prompts,
        reward,
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
    if cfg.roll_in is not None:
        data = _roll_in(cfg, lm, prompts, reward, key, data, report, log)
    if cfg.collect_only:
        return report
    head = ValueHead(
        ValueHeadConfig(obs_dim=3 * lm.hidden_size + 2, bins=cfg.bins, model=lm.name, hidden_layer=cfg.hidden_layer)
    )
    fit_start = time.perf_counter()
    trained = fit_value_head(
        head, lm, data, epochs=cfg.epochs, lr=cfg.learning_rate, seed=cfg.seed, train_share=cfg.train_share, log=log
    )
    report.update(trained=trained, fit_s=time.perf_counter() - fit_start, parameters=head.num_parameters)
    if cfg.curve:
        fit = {"epochs": cfg.epochs, "lr": cfg.learning_rate}
        others = tuple(share for share in cfg.curve if share != cfg.train_share)  # the head's own share: fitted above
        report["curve"] = learning_curve(head.config, lm, data, others, seed=cfg.seed, **fit)
        report["curve"].append(curve_point(cfg.train_share, trained))
        report["curve"].sort(key=lambda point: point["share"])
        for point in report["curve"]:
            log(
                f"value curve: {point['responses']:,} responses ({point['share']:g} of the training prompts): "
                f"held-out cross-entropy {point['held_out_ce']:.4f}, corr E[u^7] {point['corr E[u^7]']:.3f}"
            )
    summary = {
        "data": report["data"],
        "train_share": cfg.train_share,
        "held_out_ce": trained["kept_ce"],
        "marginal_ce": trained["marginal_ce"],
    }
    head.config = replace(head.config, trained=summary)
    out = save_value_head(head, cfg.out)
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    (out / "report.md").write_text(report_markdown(report), encoding="utf-8")
    log(
        f"value head: {head.num_parameters:,} parameters, held-out cross-entropy {trained['kept_ce']:.4f} "
        f"(marginal {trained['marginal_ce']:.4f}); wrote {out}"
    )
    return report


def _roll_in(
    cfg: ValueConfig,
    lm: Any,
    prompts: list[str],
    reward: Any,
    key: Any,
    first: Any,
    report: dict[str, Any],
    log: Any,
) -> Any:
    """Collect (or resume) the roll-in round on top of ``first``; both rounds, joined, are what the head fits."""
    from agents.baselines import PowerProxy
    from agents.eval.cache import folder_fingerprint
    from agents.value.data import join_value_data
    from agents.value.guide import ValueGuide
    from agents.value.head import load_value_head
    from agents.value.rollin import collect_rollin_data, rollin_key

    guide_head = load_value_head(str(cfg.roll_in), lm, hidden_layer=cfg.hidden_layer)
    rule = ValueGuide(
        guide_head,
        lm,
        cfg.roll_in_n,
        rule=cfg.roll_in_rule,
        top_k=cfg.top_k,
        top_p=cfg.top_p,
        temperature=cfg.temperature,
    )
    rkey = rollin_key(
        key,
        folder_fingerprint(str(cfg.roll_in)),
        cfg.roll_in_n,
        cfg.roll_in_rule,
        cfg.roll_ins,
        cfg.positions,
        cfg.batch_prompts,
    )
    start = time.perf_counter()
    second = collect_rollin_data(
        lm,
        prompts,
        reward,
        rkey,
        first,
        lambda seed: PowerProxy(rule, 1.0, seed=seed),
        path=cfg.roll_in_data,
        progress=lambda done, total: log(f"roll-in data: {done}/{total} prompts, {time.perf_counter() - start:.0f} s"),
    )
    report["roll_in"] = {
        "head": cfg.roll_in,
        "n": cfg.roll_in_n,
        "rule": cfg.roll_in_rule,
        "roll_ins": len(prompts) * cfg.roll_ins,
        "positions": len(second),
        "collect_s": time.perf_counter() - start,
    }
    both = join_value_data([first, second])
    report["data"]["positions"] = len(both)
    return both


def report_markdown(report: dict[str, Any]) -> str:
    """``report.json`` as read by a person: data, fit, learning curve and held-out calibration by decile."""
    cfg, data, trained = report["config"], report["data"], report["trained"]
    lines = [
        f"# proxy-rlhf value: {data['prompts']} prompts ({cfg['prompts']}) x {cfg['samples']} responses, "
        f"model {cfg['model']!r}, reward {cfg['reward']!r}, seed {cfg['seed']}",
        "",
        f"- Data: {data['positions']:,} labelled positions ({cfg['positions']} per response) from {data['responses']:,} "
        f"responses; collected in {report['collect_s']:.0f} s (a resumed run counts this invocation only).",
        f"- Head: {report['parameters']:,} parameters, a histogram of u over {cfg['bins']} bins; fitted in "
        f"{report['fit_s']:.0f} s ({cfg['epochs']} epochs on {trained['positions']['train']:,} positions of "
        f"{trained['prompts']['train']} prompts; {trained['prompts']['held_out']} prompts held out).",
        f"- Held-out cross-entropy per epoch: {', '.join(f'{x:.4f}' for x in trained['held_out_ce'])}; kept: epoch "
        f"{trained['kept_epoch']} (lowest on the validation prompts), {trained['kept_ce']:.4f} (the prefix-blind "
        f"marginal: {trained['marginal_ce']:.4f}).",
    ]
    if "roll_in" in report:
        r = report["roll_in"]
        lines.append(
            f"- Roll-in round: {r['roll_ins']:,} roll-ins by {r['head']} (N {r['n']}, rule {r['rule']}), "
            f"{r['positions']:,} positions, collected in {r['collect_s']:.0f} s; the head fits both rounds."
        )
    if report.get("curve"):
        lines += [
            "",
            "## Learning curve (same held-out prompts)",
            "",
            "| share of training prompts | prompts | responses | positions | held-out cross-entropy | marginal | "
            "corr E[u^3] | corr E[u^7] | corr E[u^15] |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {c['share']:g} | {c['prompts']} | {c['responses']:,} | {c['positions']:,} | {c['held_out_ce']:.4f} | "
            f"{c['marginal_ce']:.4f} | {c['corr E[u^3]']:.3f} | {c['corr E[u^7]']:.3f} | {c['corr E[u^15]']:.3f} |"
            for c in report["curve"]
        ]
    cal = trained["calibration"]
    names = list(cal)
    lines += [
        "",
        "## Held-out calibration: mean predicted vs realised, by decile of the prediction",
        "",
        "| decile | " + " | ".join(f"{n} predicted | {n} realised" for n in names) + " |",
        "|---|" + "---|---|" * len(names),
    ]
    for i in range(max(len(cal[n]["deciles"]) for n in names)):
        cells = [
            f"{cal[n]['deciles'][i][0]:.3f} | {cal[n]['deciles'][i][1]:.3f}" if i < len(cal[n]["deciles"]) else "— | —"
            for n in names
        ]
        lines.append(f"| {i + 1} | " + " | ".join(cells) + " |")
    lines.append("| correlation | " + " | ".join(f"{cal[n]['corr']:.3f} | —" for n in names) + " |")
    return "\n".join(lines) + "\n"
