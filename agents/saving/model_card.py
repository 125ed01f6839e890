"""The ``README.md`` model card of a proxy folder: what the proxy does, for which LLM and reward, how it scored, how to load it."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from proxy_env.errors import DataError

_REWARDS = {
    "default": "VADER positivity (compound score) of the response",
    "pairwise": "the LLM itself judging the steered response against its own greedy one (1 / 0.5 / 0)",
}
# bench CSV columns shown in the card: (column, header, format)
_BENCH_COLUMNS = (
    ("reward", "reward", "{:+.3f}"),
    ("win_rate", "win rate vs always-accept", "{:.2f}"),
    ("kl", "KL from the LLM (nats)", "{:.3f}"),
    ("rejection_rate", "rejection rate", "{:.2f}"),
    ("distinct_2", "distinct-2", "{:.2f}"),
    ("perplexity", "perplexity", "{:.2f}"),
)


def read_bench(path: str | Path) -> list[dict[str, str]]:
    """Rows of a ``proxy-rlhf bench`` ``results.csv`` (one per agent)."""
    path = Path(path).expanduser()
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(
            f"bench={str(path)!r} could not be read ({exc}); pass the results.csv that proxy-rlhf bench wrote."
        ) from exc
    if not rows or "agent" not in rows[0] or "reward" not in rows[0]:
        raise DataError(
            f"bench={str(path)!r} has no 'agent' and 'reward' columns: pass the results.csv that proxy-rlhf bench wrote."
        )
    return rows


def _cell(row: dict[str, str], column: str, fmt: str) -> str:
    try:
        value = float(row.get(column, ""))
    except ValueError:
        return "—"
    if value != value:  # nan
        return "—"
    text = fmt.format(value)
    lo, hi = row.get(f"{column}_lo"), row.get(f"{column}_hi")
    try:
        return (
            f"{text} [{fmt.format(float(lo))}, {fmt.format(float(hi))}]" if lo and hi and column == "reward" else text
        )
    except ValueError:
        return text


def _bench_table(rows: list[dict[str, str]]) -> str:
    header = "| agent | " + " | ".join(h for _, h, _ in _BENCH_COLUMNS) + " |"
    lines = [header, "|" + "---|" * (len(_BENCH_COLUMNS) + 1)]
    for row in rows:
        lines.append(f"| {row['agent']} | " + " | ".join(_cell(row, c, f) for c, _, f in _BENCH_COLUMNS) + " |")
    return "\n".join(lines)


def render(config: dict[str, Any], *, bench: list[dict[str, str]] | None = None, bench_source: str = "") -> str:
    """The model card (Markdown with Hub metadata) of the proxy described by ``proxy_config.json``'s ``config``."""
    llm = config.get("llm") or {}
    name = str(llm.get("name", "unknown"))
    fp = llm.get("fingerprint") or {}
    env = config.get("env_kwargs") or {}
    reward = env.get("reward", "default")
    skam = config.get("skam") or {}
    train = config.get("config") or {}
    hub_model = name if name.count("/") == 1 and not name.startswith((".", "/", "<")) else None
    front = ["---", "library_name: proxy-rlhf", "tags:", "- proxy-rlhf", "- rlhf", "- logits-processor"]
    front += [f"base_model: {hub_model}"] if hub_model else []
    rows = [
        (
            "algorithm",
            f"{str(config.get('algo', '?')).upper()} ({config.get('policy', '')}), {int(config.get('num_timesteps', 0)):,} decisions, seed {config.get('seed')}",
        ),
        ("trainable parameters", f"{int(config.get('param_count', 0)):,}"),
        (
            "LLM",
            f"`{name}`"
            + (
                f" ({fp.get('model_type')}, hidden {fp.get('hidden_size')}, {fp.get('num_layers')} layers, "
                f"vocab {fp.get('vocab_size'):,}, fingerprint `{fp.get('config_hash')}`)"
                if fp
                else " (no fingerprint recorded)"
            ),
        ),
        ("reward", _REWARDS.get(str(reward), f"`{reward}`")),
        (
            "observation",
            f"`{config.get('observation', env.get('observation', 'candidate'))}`, hidden layer {config.get('hidden_layer', -1)}",
        ),
        ("pool (SKAM)", ", ".join(f"{k}={v}" for k, v in skam.items()) or "env defaults"),
        ("KL penalty", f"β = {train.get('kl_coef', env.get('kl_coef', 0.0))}"),
        (
            "format",
            f"{config.get('format')} version {config.get('format_version')}, written by proxy-rlhf {config.get('package_version')}",
        ),
    ]
    body = [
        f"# Proxy-RLHF proxy for `{name}`",
        "",
        "A small policy that steers a frozen LLM without changing it (Proxy-RLHF, Zhu et al., arXiv 2403.04283): at each "
        "position the LLM's next-token pool (top-k ∩ top-p) is offered one candidate at a time and the proxy accepts or "
        "rejects each. The resulting next-token distribution π is known in closed form, so the proxy also runs inside "
        "Hugging Face's `generate` as a logits processor.",
        "",
        "| | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in rows],
        "",
        "## Benchmark",
        "",
        (
            f"From `{bench_source}` (`proxy-rlhf bench`), on held-out prompts:\n\n{_bench_table(bench)}"
            if bench
            else "No benchmark figures were given at export (`proxy-rlhf export ... --bench results.csv` adds them)."
        ),
        "",
        "## How to load",
        "",
        "Loading reads `model.safetensors` and `proxy_config.json` only: nothing is unpickled and stable-baselines3 is not "
        "needed. The LLM must have the fingerprint above (loading refuses another, naming both).",
        "",
        "```python",
        "from agents.logits_processor import ProxyLogitsProcessor   # pip install proxy-rlhf",
        'processor = ProxyLogitsProcessor("path/to/this/folder", model, tokenizer)  # model: the LLM above',
        "out = model.generate(**inputs, max_new_tokens=64, **processor.generate_kwargs())  # do_sample, top_k=0, top_p=1, T=1",
        "```",
        "",
        "The processor applies the pool settings above itself; `generate` must not truncate again (hence `top_k=0, "
        'top_p=1.0, temperature=1.0`). With the package\'s own generator: `proxy-rlhf generate --checkpoint path/to/this/folder "Hi!"`.',
        "",
        "## Files",
        "",
        "`model.safetensors` (the policy's tensors), `proxy_config.json` (algorithm, policy, hyper-parameters, environment "
        "settings, LLM fingerprint), `optimizer.safetensors` (optimizer state, for `train --resume`; not needed to steer), "
        "this `README.md`.",
    ]
    return "\n".join(front + ["---", ""] + body) + "\n"
