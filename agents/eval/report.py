"""The benchmark's outputs: the Markdown table, the CSV, the reward–KL plot and the training curves."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from agents.eval.compare import mean_ci
from agents.eval.metrics import distinct_n

if TYPE_CHECKING:
    from agents.eval.results import AgentEval, BenchResult

# the CSV's columns; "_lo"/"_hi" are the bounds of a 95% CI (normal approximation, agents.eval.compare.mean_ci)
COLUMNS = [
    "agent",
    "kind",
    "prompts",
    "reward",
    "reward_lo",
    "reward_hi",
    "win_rate",
    "win_rate_lo",
    "win_rate_hi",
    "rejection_rate",
    "rejection_rate_lo",
    "rejection_rate_hi",
    "length",
    "length_lo",
    "length_hi",
    "distinct_1",
    "distinct_2",
    "perplexity",
    "perplexity_lo",
    "perplexity_hi",
    "kl",
    "kl_lo",
    "kl_hi",
    "kl_method",
    "kl_bound",
    "kl_untruncated",
    "kl_untruncated_lo",
    "kl_untruncated_hi",
    "forwards_per_response",
    "wall_s_per_response",
    "trainable_params",
    "train_wall_s",
    "phi",
    "phi_lo",
    "phi_hi",
    "collapsed",
    "curve",
    "point",
]
# text quality below which a response set counts as reward hacking, not alignment, whatever its reward: distinct-2
# more than 10% below the unsteered LLM's own (always-accept's), or perplexity above best-of-16's + 1. (A fixed
# distinct-2 floor of 0.75 marked the LLM itself on 32-token responses: its own is 0.71 on default-eval.)
MAX_DISTINCT_2_DROP = 0.10
MAX_PERPLEXITY_OVER_BON16 = 1.0
BOOTSTRAP = 1000  # resamples of the prompts behind φ's interval
TIMING_COLUMNS = ("wall_s_per_response", "train_wall_s")  # the only columns that differ between seeded runs
PREFERRED_TAGS = (
    "rollout/ep_rew_mean",
    "rollout/reward_raw",
    "rollout/rejection_rate",
    "train/reward",
    "train/kl",
    "rollout/response_length",
    "train/loss",
    "tilt/kl_per_position",
    "tilt/gain_per_position",
)


def _ci(prefix: str, values: np.ndarray) -> dict[str, float]:
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0 or np.isnan(values).any():
        return {prefix: math.nan, f"{prefix}_lo": math.nan, f"{prefix}_hi": math.nan}
    m, lo, hi = mean_ci(values)
    return {prefix: m, f"{prefix}_lo": lo, f"{prefix}_hi": hi}


def summarize(agents: list[AgentEval], reference: str = "always-accept") -> list[dict[str, Any]]:
    """One row per agent with the columns of :data:`COLUMNS`."""
    base = next((a for a in agents if a.name == reference), None)
    rows = []
    for a in agents:
        wins = (
            np.where(a.rewards > base.rewards, 1.0, np.where(a.rewards == base.rewards, 0.5, 0.0))
            if base is not None
            else np.full(len(a.rewards), np.nan)
        )
        lengths = np.array([len(x) for x in a.token_ids], dtype=float)
        ppl = np.exp(a.nll / np.maximum(lengths, 1))
        row: dict[str, Any] = {"agent": a.name, "kind": a.kind, "prompts": len(a.rewards)}
        row.update(
            _ci("reward", a.rewards)
            | _ci("win_rate", wins)
            | _ci("rejection_rate", a.rejection_rates)
            | _ci("length", lengths)
        )
        row.update(distinct_1=distinct_n(a.token_ids, 1), distinct_2=distinct_n(a.token_ids, 2))
        row.update(_ci("perplexity", ppl) | _ci("kl", a.kl))
        row.update(kl_method=a.kl_method, kl_bound=a.kl_bound)
        row.update(_ci("kl_untruncated", a.kl_untruncated))
        row.update(
            forwards_per_response=float(np.mean(a.forwards)),
            wall_s_per_response=a.wall_s / len(a.rewards),
            trainable_params=int(a.trainable_params),
            train_wall_s=a.train_wall_s,
        )
        row.update(curve=a.curve or "", point=a.point or "")
        rows.append(row)
    frontier_scores(rows)
    bon = sorted((a for a in agents if a.kind == "best-of-n"), key=lambda a: int(a.name.rsplit("-", 1)[1]))
    curve = [(b.rewards, b.kl) for b in bon]
    for a, row in zip(agents, rows):  # φ's interval needs the curve's per-prompt results: this run's best-of-N
        row["phi_lo"], row["phi_hi"] = (
            phi_ci(a.rewards, a.kl, base.rewards, curve)
            if base is not None and a.kind not in ("best-of-n", "finetune") and not math.isnan(row["phi"])
            else (math.nan, math.nan)
        )
    return rows


def bon_frontier(rows: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Best-of-N's (KL, reward) points with always-accept at (0, R_base), KL increasing (a running max keeps it so).

    The KL of each best-of-N is its empirical estimate (the conservative choice: it lies below the
    bound ``log N - (N-1)/N`` when rewards tie, which makes the frontier harder to reach).
    """
    base = next((r for r in rows if r["agent"] == "always-accept"), None)
    bon = sorted((r for r in rows if r["kind"] == "best-of-n"), key=lambda r: int(r["agent"].rsplit("-", 1)[1]))
    if base is None or not bon:
        return np.zeros(0), np.zeros(0)
    kl = np.maximum.accumulate(np.array([0.0] + [max(r["kl"], 0.0) for r in bon]))
    return kl, np.array([base["reward"]] + [r["reward"] for r in bon])


def phi(row: dict[str, Any], kl: np.ndarray, reward: np.ndarray) -> float:
    """φ = (R - R_base) / (R_BoN(KL) - R_base) of ``row`` on the curve ``bon_frontier`` returns; NaN where undefined.

    Undefined for best-of-N and fine-tuned rows, without a KL, beyond the curve's last KL, or where
    the curve is not above always-accept at the row's KL.
    """
    if len(kl) < 2 or row["kind"] in ("best-of-n", "finetune") or math.isnan(row["kl"]) or row["kl"] > kl[-1]:
        return math.nan
    frontier = float(np.interp(max(row["kl"], 0.0), kl, reward))
    return (row["reward"] - reward[0]) / (frontier - reward[0]) if frontier > reward[0] else math.nan


def phi_ci(
    rewards: np.ndarray, kl: np.ndarray, base: np.ndarray, bon: list[tuple[np.ndarray, np.ndarray]], seed: int = 0
) -> tuple[float, float]:
    """A bootstrap 95% CI of φ over prompts (resampled together for the agent, always-accept and best-of-N's (rewards, kl))."""
    if not bon:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    n = len(rewards)
    draws = []
    for _ in range(BOOTSTRAP):
        idx = rng.integers(0, n, n)
        curve_kl = np.maximum.accumulate(np.array([0.0] + [max(float(k[idx].mean()), 0.0) for _, k in bon]))
        curve_r = np.array([base[idx].mean()] + [r[idx].mean() for r, _ in bon])
        row_kl = max(float(kl[idx].mean()), 0.0)
        frontier = float(np.interp(row_kl, curve_kl, curve_r))
        ok = row_kl <= curve_kl[-1] and frontier > curve_r[0]
        draws.append((rewards[idx].mean() - curve_r[0]) / (frontier - curve_r[0]) if ok else math.nan)
    values = np.array(draws)
    if np.isnan(values).mean() > 0.05:  # undefined in more than 5% of resamples: no interval
        return math.nan, math.nan
    lo, hi = np.nanpercentile(values, [2.5, 97.5])
    return float(lo), float(hi)


def frontier_scores(rows: list[dict[str, Any]]) -> None:
    """φ (:func:`phi`) of every row, and the collapse flag."""
    kl, reward = bon_frontier(rows)
    bon16 = next((r for r in rows if r["agent"] == "best-of-16"), None)
    base = next((r for r in rows if r["agent"] == "always-accept"), None)
    ppl_cap = bon16["perplexity"] + MAX_PERPLEXITY_OVER_BON16 if bon16 is not None else math.inf
    d2_floor = base["distinct_2"] * (1 - MAX_DISTINCT_2_DROP) if base is not None else -math.inf
    for row in rows:
        row["collapsed"] = bool(row["distinct_2"] < d2_floor or row["perplexity"] > ppl_cap)
        row["phi"] = phi(row, kl, reward)


def _fmt(row: dict[str, Any], key: str, digits: int = 3) -> str:
    m = row[key]
    if isinstance(m, float) and math.isnan(m):
        return "—"

    def num(v: float) -> str:  # no "-0.000" for a rounding-level negative (always-accept's KL is ~ -1e-12)
        return f"{v if round(v, digits) != 0 else 0.0:.{digits}f}"

    if f"{key}_lo" in row and not math.isnan(row[f"{key}_lo"]):
        return f"{num(m)} [{num(row[f'{key}_lo'])}, {num(row[f'{key}_hi'])}]"
    return num(m)


def _seconds(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.0f}"


def markdown(result: BenchResult, rows: list[dict[str, Any]], command: str) -> str:
    """The results table with its footnotes, the machine, the command and the wall time."""
    cfg = result.config
    lines = [
        f"# proxy-rlhf bench: {len(result.prompts)} prompts ({cfg.prompts}), model {cfg.model!r}, "
        f"max_new_tokens={cfg.max_new_tokens}, top_k={cfg.top_k}, top_p={cfg.top_p}, T={cfg.temperature}, seed={cfg.seed}",
        "",
        "| agent | reward | win rate vs always-accept | rejection rate | tokens | distinct-1 | distinct-2 | perplexity | "
        "KL (nats) | KL bound | KL vs untruncated LLM | φ | aligned | LLM forwards / response | s / response | trainable params | training s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        mark = "¹" if r["kind"] == "finetune" else ("²" if r["kind"] == "best-of-n" else "")
        lines.append(
            f"| {r['agent']} | {_fmt(r, 'reward')} | {_fmt(r, 'win_rate', 2)} | {_fmt(r, 'rejection_rate')} | "
            f"{_fmt(r, 'length', 1)} | {r['distinct_1']:.3f} | {r['distinct_2']:.3f} | {_fmt(r, 'perplexity', 2)} | "
            f"{_fmt(r, 'kl')}{mark} | {_fmt(r, 'kl_bound')} | {_fmt(r, 'kl_untruncated')} | {_fmt(r, 'phi', 2)} | "
            f"{'no: collapsed' if r['collapsed'] else 'yes'} | "
            f"{r['forwards_per_response']:.1f} | {r['wall_s_per_response']:.3f} | {r['trainable_params']:,} | "
            f"{_seconds(r['train_wall_s'])} |"
        )
    lines += [
        "",
        "Means with 95% CIs (normal approximation over prompts); distinct-n pooled over all responses (no CI). "
        "KL: exact Σ_i KL(π_i‖q_i) of the steered sampler from the unsteered one (q = the LLM's truncated pool), "
        "summed along each response (agents/eval/kl.py). Perplexity under the frozen LLM (T=1, untruncated). "
        "Forwards: tokens fed through the LLM per response (offered candidates; all N samples for best-of-N); "
        "the KL pass is not counted. φ = (R − R_base)/(R_BoN(KL) − R_base): the share of best-of-N's reward gain "
        "reached at the same KL (best-of-N interpolated linearly between its points, always-accept at KL 0; — beyond "
        f"its range); its 95% CI: {BOOTSTRAP} bootstrap resamples of the prompts, the agent's, always-accept's and "
        "best-of-N's results resampled together (none when the curve is another run's). "
        f"Aligned: no where the text collapsed (distinct-2 more than {MAX_DISTINCT_2_DROP:.0%} below "
        f"always-accept's, or perplexity > best-of-16's + {MAX_PERPLEXITY_OVER_BON16:g}), whatever the reward.",
        "",
        "¹ Fine-tuned model: KL of its sampler (own top-k/top-p pool) from the frozen LLM's *untruncated* "
        "tempered distribution (KL from the truncated pool is infinite when it samples outside it); compare "
        "with the 'KL vs untruncated LLM' column of the other agents.",
        "² Best-of-N: empirical estimate mean(log (π/q)(y*)) from the reward CDF F̂ of the response among "
        f"{cfg.bon_reference} independent reference samples per prompt: log N + (N-1) log F̂ where no reference "
        "ties it, log((F̂^N - F̂⁻^N)/(F̂ - F̂⁻)) where some do (all tied: 0) (agents/eval/metrics.py). The bound "
        "log N - (N-1)/N is exact only for continuous rewards (ties, frequent with VADER, lower the true KL). Samples are nested (best-of-N uses "
        "the first N of one sampling pass); its s/response is apportioned by N. Its KL vs the untruncated LLM adds "
        "Σ_t log q/p of the chosen response (q the pool, p the untruncated LLM; taken while sampling, agents/eval/metrics.py sample; truncation_log_ratio recomputes it), "
        "since KL(π‖p) = KL(π‖q) + E_π[log q/p].",
        "",
        f"Machine: {result.machine}. Command: `{command}`. Benchmark wall time: {result.wall_s:.0f} s.",
    ]
    lines += [f"Note: {n}" for n in result.notes]
    return "\n".join(lines) + "\n"


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (f"{v:.10g}" if isinstance(v, float) else v) for k, v in r.items()})


def read_scalars(logdir: str | Path) -> dict[str, list[tuple[float, int, float]]]:
    """Every scalar series (wall_time, step, value) under a TensorBoard folder, keyed by ``run/tag``."""
    out: dict[str, list[tuple[float, int, float]]] = {}
    runs = sorted({p.parent for p in Path(logdir).expanduser().rglob("events.out.tfevents.*")})
    for run in runs:
        prefix = "" if len(runs) == 1 else f"{run.name}:"
        out.update({prefix + tag: series for tag, series in scalar_series(run).items()})
    return out


def scalar_series(path: str | Path) -> dict[str, list[tuple[float, int, float]]]:
    """The scalar series (wall_time, step, value) of one TensorBoard run folder or one event file, keyed by tag."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(path))
    acc.Reload()
    return {tag: [(e.wall_time, e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags().get("scalars", [])}


def plot_reward_kl(rows: list[dict[str, Any]], path: Path) -> None:
    """Reward against KL from the unsteered sampler, best-of-N as the frontier; with fine-tuned rows a
    second panel puts every agent on the KL fine-tuned models are measured with (vs the untruncated LLM)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    finetuned = any(r["kind"] == "finetune" for r in rows)
    fig, axes = plt.subplots(1, 2 if finetuned else 1, figsize=(15 if finetuned else 7, 5.5), squeeze=False)
    ax = axes[0][0]
    bon = sorted((r for r in rows if r["kind"] == "best-of-n"), key=lambda r: r["kl_bound"])
    if bon:
        draw_bon_line(ax, bon, "kl", "best-of-N frontier (empirical KL)")
        ax.plot(
            [r["kl_bound"] for r in bon],
            [r["reward"] for r in bon],
            "--",
            color="gray",
            label="best-of-N at the bound log N - (N-1)/N",
        )
    _points(ax, [r for r in rows if r["kind"] not in ("best-of-n", "finetune")], "kl")
    ax.set_xscale("symlog", linthresh=0.05, linscale=0.5)  # log above 0.05 nats, linear below: always-accept sits at 0
    ax.set_xlabel("KL from the unsteered sampler (truncated pool), nats / response (log scale above 0.05)")
    ax.set_title("reward vs KL")
    if finetuned:  # fine-tuned KL is measured against the untruncated LLM: compare like with like
        right = axes[0][1]
        if bon and not any(math.isnan(r["kl_untruncated"]) for r in bon):
            draw_bon_line(right, bon, "kl_untruncated", "best-of-N (empirical KL + truncation)")
        on_curve = [r for r in rows if r["kind"] == "finetune" and r.get("curve")]
        _points(right, [r for r in rows if r["kind"] != "best-of-n" and r not in on_curve], "kl_untruncated")
        draw_curves(right, on_curve)
        right.set_xlabel("KL from the untruncated LLM, nats / response")
        right.set_title("reward vs KL from the untruncated LLM (fine-tuned models)")
    for a in axes[0]:
        a.set_ylabel("mean reward (95% CI)")
        a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _points(ax: Any, rows: list[dict[str, Any]], key: str) -> None:
    """One point with reward and KL error bars per row; ``key`` is ``kl`` or ``kl_untruncated``."""
    for r in rows:
        x = (
            r["kl"] if r["kind"] == "finetune" else r[key]
        )  # a fine-tuned row's ``kl`` is already vs the untruncated LLM
        lo, hi = (
            (r["kl_lo"], r["kl_hi"]) if r["kind"] == "finetune" or key == "kl" else (r[f"{key}_lo"], r[f"{key}_hi"])
        )
        if math.isnan(x):
            continue
        ax.errorbar(
            [x],
            [r["reward"]],
            yerr=_yerr([r]),
            xerr=[[x - lo], [hi - x]],
            fmt="s" if r["kind"] == "finetune" else "o",
            capsize=3,
            label=r["agent"],
        )


def draw_bon_line(ax: Any, bon: list[dict[str, Any]], key: str, label: str) -> None:
    ax.errorbar(
        [r[key] for r in bon],
        [r["reward"] for r in bon],
        yerr=_yerr(bon),
        fmt="-o",
        color="black",
        label=label,
        capsize=3,
    )
    for r in bon:
        ax.annotate(
            r["agent"].replace("best-of-", "N="),
            (r[key], r["reward"]),
            textcoords="offset points",
            xytext=(4, -10),
            fontsize=8,
        )


def draw_curves(ax: Any, rows: list[dict[str, Any]]) -> None:
    """Fine-tuned rows as one line per ``curve`` (e.g. a method's β sweep), KL increasing, each point labelled."""
    for curve in dict.fromkeys(r["curve"] for r in rows):
        points = sorted((r for r in rows if r["curve"] == curve and not math.isnan(r["kl"])), key=lambda r: r["kl"])
        if not points:
            continue
        xerr = [[r["kl"] - r["kl_lo"] for r in points], [r["kl_hi"] - r["kl"] for r in points]]
        ax.errorbar(
            [r["kl"] for r in points],
            [r["reward"] for r in points],
            xerr=xerr,
            yerr=_yerr(points),
            fmt="-s",
            capsize=3,
            label=curve,
        )
        for r in points:
            ax.annotate(
                r["point"] or r["agent"], (r["kl"], r["reward"]), textcoords="offset points", xytext=(4, 4), fontsize=7
            )


def _yerr(rows: list[dict[str, Any]]) -> list[list[float]]:
    return [[r["reward"] - r["reward_lo"] for r in rows], [r["reward_hi"] - r["reward"] for r in rows]]


def plot_training_curves(agents: list[AgentEval], path: Path) -> bool:
    """One panel per preferred scalar tag, one line per agent with logs; False when no agent has logs."""
    series = {a.name: read_scalars(a.tensorboard_dir) for a in agents if a.tensorboard_dir}
    series = {k: v for k, v in series.items() if v}
    if not series:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tags = [t for t in PREFERRED_TAGS if any(any(k.endswith(t) for k in s) for s in series.values())]
    tags = tags or sorted({k for s in series.values() for k in s})[:4]
    fig, axes = plt.subplots(1, len(tags[:4]), figsize=(4.5 * len(tags[:4]), 3.5), squeeze=False)
    for ax, tag in zip(axes[0], tags[:4]):
        for name, s in series.items():
            for key, points in s.items():
                if key.endswith(tag):
                    ax.plot([p[1] for p in points], [p[2] for p in points], label=f"{name} {key[: -len(tag)]}".strip())
        ax.set_title(tag)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def read_frontier(path: str | Path, rows: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """The best-of-N rows of an earlier ``results.csv``, once its always-accept row is checked against this run's ``rows``.

    The same prompts, seed and pool settings give always-accept the same responses; its mean reward,
    prompt count, mean length, distinct-2 and perplexity must agree (to 1e-6), else the frontier is not this run's.
    ``rows`` None: only check that the file holds those rows (before a run starts).
    """
    from proxy_env.errors import ConfigError

    parsed = read_rows(path, argument="frontier_from")
    old = next((r for r in parsed if r.get("agent") == "always-accept"), None)
    new = next((r for r in rows or [] if r["agent"] == "always-accept"), None)
    bon = [r for r in parsed if r.get("kind") == "best-of-n"]
    if old is None or (new is None and rows is not None) or not bon:
        raise ConfigError(
            f"frontier_from={str(path)!r} holds no always-accept and best-of-N rows; pass the results.csv of a bench run with --n."
        )
    if new is not None:  # rows None: nothing to compare against yet
        for key in ("prompts", "reward", "length", "distinct_2", "perplexity"):
            if not math.isclose(float(old[key]), float(new[key]), rel_tol=1e-6, abs_tol=1e-9):
                raise ConfigError(
                    f"frontier_from={str(path)!r} is another run's: always-accept {key} {old[key]} there vs "
                    f"{new[key]} here (different prompts, seed or settings); run best-of-N here (--n 2 4 8 16) instead."
                )
    return bon


def read_rows(path: str | Path, argument: str = "results") -> list[dict[str, Any]]:
    """The rows of a ``results.csv`` that ``proxy-rlhf bench`` wrote, numbers parsed; ``argument`` names it in errors."""
    from proxy_env.errors import ConfigError

    try:
        with open(Path(path).expanduser(), newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            rows = []
            for r in reader:
                if None in r or None in r.values():  # a row cut short (or run over) by a copy or a full disk
                    raise ConfigError(
                        f"{argument}={str(path)!r}, line {reader.line_num}: {_fields(r)} fields where the "
                        f"header has {len(reader.fieldnames or [])}; the file is cut or damaged. Run the bench again."
                    )
                rows.append({k: _parse(k, v) for k, v in r.items()})
            return rows
    except OSError as exc:
        raise ConfigError(
            f"{argument}={str(path)!r} cannot be read ({exc}); pass the results.csv of an earlier `proxy-rlhf bench`."
        ) from exc


def _fields(row: dict[Any, Any]) -> int:
    """How many fields a ``csv.DictReader`` row really had (missing ones are None, extra ones under the key None)."""
    return sum(v is not None for k, v in row.items() if k is not None) + len(row.get(None) or [])


def _parse(key: str, value: str) -> Any:
    if key in ("agent", "kind", "kl_method", "curve", "point"):
        return value
    if value in ("True", "False"):
        return value == "True"
    try:
        return float(value) if value != "" else math.nan
    except ValueError:
        return value


def result_rows(result: BenchResult) -> list[dict[str, Any]]:
    """The table's rows (:func:`summarize`), with an earlier run's best-of-N rows (``frontier_from``) and φ."""
    rows = summarize(result.agents)
    if result.config.frontier_from:
        names = {r["agent"] for r in rows}
        rows[2:2] = [r for r in read_frontier(result.config.frontier_from, rows) if r["agent"] not in names]
        frontier_scores(rows)
        for row in rows:  # another run's curve, whose per-prompt results are not here: φ without an interval
            row["phi_lo"] = row["phi_hi"] = math.nan
    return rows


def write_outputs(result: BenchResult, out: str | Path, *, command: str = "proxy-rlhf bench") -> list[Path]:
    """Write results.md, results.csv, reward_kl.png and (with logs) training_curves.png into ``out``."""
    out = Path(out).expanduser()
    rows = result_rows(result)
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "results.md", out / "results.csv", out / "reward_kl.png"]
    files[0].write_text(markdown(result, rows, command), encoding="utf-8")
    write_csv(rows, files[1])
    plot_reward_kl(rows, files[2])
    if plot_training_curves(result.agents, out / "training_curves.png"):
        files.append(out / "training_curves.png")
    return files
