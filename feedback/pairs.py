"""The preference-data builder: sample two responses per prompt, label them, record perplexities, filter.

>>> from proxy_env.engine.tiny import tiny_lm
>>> from feedback.sources import RewardFeedback
>>> lm = tiny_lm()
>>> result = build_preferences(lm, ["Hi!", "Hello there"], RewardFeedback(lambda p, r: [len(x) for x in r]),
...                            max_new_tokens=6, seed=0)
>>> result.summary.sampled, all(p.ppl_chosen is None or p.ppl_chosen > 0 for p in result.pairs)
(2, True)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import torch

from feedback.perplexity import filter_by_perplexity, perplexities
from feedback.records import PreferencePair
from feedback.sources import FeedbackSource, human_pairs, to_pairs
from proxy_env.config import EnvConfig, check_pool
from proxy_env.errors import ConfigError


@dataclass
class BuildSummary:
    """What the builder did, for the CLI and benchmarks."""

    source: str = ""
    sampled: int = 0  # pairs of responses sampled (or imported)
    identical: int = 0  # pairs whose two responses were the same text (dropped: nothing to prefer)
    ties: int = 0  # pairs the source scored equal (dropped)
    parse_failures: int = 0  # judge replies with no 1/2 (dropped)
    parse_failure_rate: float = 0.0
    position1_rate: float | None = None  # judge only: how often the response shown first won
    ppl_threshold: float | None = None  # the perplexity cut applied (None: no filter)
    ppl_dropped: int = 0
    kept: int = 0
    seconds: dict[str, float] = field(default_factory=dict)  # per stage: sample, label, perplexity


class BuildResult(NamedTuple):
    pairs: list[PreferencePair]
    summary: BuildSummary


class Samples(NamedTuple):
    """Sampled responses per prompt and their perplexities under the LLM (NaN for an empty response)."""

    texts: list[list[str]]  # (prompts, n)
    ppl: list[list[float]]  # (prompts, n)


def sample_responses(
    lm: Any,
    prompts: Sequence[str],
    *,
    n: int = 2,
    max_new_tokens: int = 32,
    top_k: int = EnvConfig.top_k,
    top_p: float = EnvConfig.top_p,
    temperature: float = EnvConfig.temperature,
    batch_size: int = 32,
    seed: int = 0,
) -> Samples:
    """``n`` sampled responses per prompt from the frozen LLM, batched and seeded (same seed, same texts).

    Sampling runs on the env's per-row KV cache and SKAM pool (what an always-accept proxy samples;
    several times faster than Hugging Face ``generate`` on CPU here). The perplexity of each response
    comes from the same forwards: the LLM's raw (untruncated, untempered) log-probabilities of the
    sampled tokens, up to and excluding the EOS.
    """
    if n < 1 or batch_size < 1:
        raise ConfigError(f"n={n}, batch_size={batch_size}: both must be >= 1.")
    check_pool(top_k, top_p, temperature)  # top_p=0 wrote nothing, temperature=0 raised a NaN error
    per_batch = max(1, batch_size // n)  # prompts per generate call: batch_size sequences in all
    texts: list[list[str]] = []
    ppls: list[list[float]] = []
    for b, start in enumerate(range(0, len(prompts), per_batch)):
        chunk = list(prompts[start : start + per_batch])
        generator = torch.Generator().manual_seed(seed * 1_000_003 + b)  # each batch is reproducible on its own
        rows, ppl = _generate(
            lm,
            chunk,
            n,
            max_new_tokens=max_new_tokens,
            top_k=top_k,
            top_p=top_p,
            temperature=temperature,
            generator=generator,
        )  # prompt-major (len(chunk) * n,)
        texts.extend(rows[i * n : (i + 1) * n] for i in range(len(chunk)))
        ppls.extend(ppl[i * n : (i + 1) * n] for i in range(len(chunk)))
    return Samples(texts, ppls)


@torch.no_grad()
def _generate(
    lm: Any,
    prompts: list[str],
    n: int,
    *,
    max_new_tokens: int,
    top_k: int,
    top_p: float,
    temperature: float,
    generator: torch.Generator,
) -> tuple[list[str], list[float]]:
    """``n`` samples per prompt through the env's own per-row KV-cache engine and SKAM pool, with perplexities.

    Sampling from ``truncate(logits, top_k, top_p, temperature)`` is what an always-accept proxy does,
    so the pairs come from exactly the distribution the proxy steers. The perplexity uses the raw
    (untruncated, untempered) logits of the same forward, up to and excluding the EOS.
    """
    from proxy_env.engine import candidates

    encoded = [lm.encode_prompt(p) for p in prompts for _ in range(n)]  # prompt-major (B,)
    rows = len(encoded)
    cache = lm.new_cache(rows)
    logits = cache.reset_rows(torch.ones(rows, dtype=torch.bool, device=lm.device), encoded).logits  # (B, V)
    eos = torch.tensor(lm.eos_token_ids, device=lm.device)
    live = torch.ones(rows, dtype=torch.bool, device=lm.device)
    nll = torch.zeros(rows, dtype=torch.float64, device=lm.device)
    count = torch.zeros(rows, dtype=torch.long, device=lm.device)
    tokens: list[torch.Tensor] = []
    for t in range(max_new_tokens):
        pool = candidates.truncate(logits, top_k, top_p, temperature)  # (B, K)
        pick = torch.multinomial(pool.logq.exp().cpu(), 1, generator=generator).to(lm.device)  # (B, 1)
        token = pool.tokens.gather(1, pick).squeeze(1)  # (B,)
        ended = live & torch.isin(token, eos)
        kept = live & ~ended
        raw = torch.log_softmax(logits.float(), dim=-1).gather(1, token[:, None]).squeeze(1)  # (B,)
        nll -= torch.where(kept, raw, 0.0).double()
        count += kept.long()
        tokens.append(torch.where(kept, token, -1))
        live = kept
        if not bool(live.any()) or t == max_new_tokens - 1:
            break
        out = cache.step(token, live)
        cache.commit(live)
        logits = torch.where(live[:, None], out.logits, logits)
    ids = torch.stack(tokens, dim=1).tolist() if tokens else [[] for _ in range(rows)]  # (B, T), -1 after the end
    texts = [lm.decode([i for i in row if i >= 0]) for row in ids]
    ppl = [float(torch.exp((v / c).clamp(max=80.0))) if c > 0 else float("nan") for v, c in zip(nll, count)]
    return texts, ppl


def add_perplexities(lm: Any, pairs: list[PreferencePair], batch_size: int = 8) -> list[PreferencePair]:
    """The pairs with ``ppl_chosen``/``ppl_rejected`` measured under ``lm`` (None for an empty response)."""
    prompts = [p.prompt for p in pairs] * 2
    values = perplexities(lm, prompts, [p.chosen for p in pairs] + [p.rejected for p in pairs], batch_size=batch_size)
    clean = [_none(v) for v in values]
    k = len(pairs)
    return [replace(p, ppl_chosen=clean[i], ppl_rejected=clean[k + i]) for i, p in enumerate(pairs)]


def _none(value: float) -> float | None:
    return None if value != value else value  # NaN (an empty response) -> None


def build_preferences(
    lm: Any,
    prompts: Sequence[str],
    source: FeedbackSource,
    *,
    pairs_per_prompt: int = 1,
    max_new_tokens: int = 32,
    top_k: int = EnvConfig.top_k,
    top_p: float = EnvConfig.top_p,
    temperature: float = EnvConfig.temperature,
    batch_size: int = 32,
    seed: int = 0,
    ppl_quantile: float | None = None,
    max_ppl: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> BuildResult:
    """Sample ``2 * pairs_per_prompt`` responses per prompt, label each pair with ``source``, keep a perplexity band.

    Each response's perplexity is read from the sampling pass itself (see :func:`sample_responses`).
    Identical responses and ties are dropped (counted in the summary), as are judge replies that do
    not parse. ``ppl_quantile``/``max_ppl``: see :func:`~feedback.perplexity.filter_by_perplexity`.
    ``progress(done, total)`` is called after each chunk of prompts.
    """
    if pairs_per_prompt < 1:
        raise ConfigError(f"pairs_per_prompt={pairs_per_prompt} must be >= 1.")
    if not prompts:
        raise ConfigError("prompts is empty; pass at least one prompt.")
    summary = BuildSummary(source=source.name)
    pairs: list[PreferencePair] = []
    seconds = {"sample": 0.0, "label": 0.0}  # perplexity comes with the samples
    chunk = max(1, batch_size // (2 * pairs_per_prompt)) * 4  # label and measure in chunks, for progress
    for start in range(0, len(prompts), chunk):
        part = list(prompts[start : start + chunk])
        t0 = time.perf_counter()
        groups = sample_responses(
            lm,
            part,
            n=2 * pairs_per_prompt,
            max_new_tokens=max_new_tokens,
            top_k=top_k,
            top_p=top_p,
            temperature=temperature,
            batch_size=batch_size,
            seed=seed + start,
        )
        t1 = time.perf_counter()
        ppl = {(p, t): v for p, ts, vs in zip(part, groups.texts, groups.ppl) for t, v in zip(ts, vs)}
        rows = [(p, g[2 * j], g[2 * j + 1]) for p, g in zip(part, groups.texts) for j in range(pairs_per_prompt)]
        summary.sampled += len(rows)
        distinct = [r for r in rows if r[1] != r[2]]
        summary.identical += len(rows) - len(distinct)
        if distinct:
            ps, firsts, seconds_ = (list(col) for col in zip(*distinct))
            labelled, ties, failures = to_pairs(ps, firsts, seconds_, source.label(ps, firsts, seconds_), source.name)
            summary.ties, summary.parse_failures = summary.ties + ties, summary.parse_failures + failures
            pairs.extend(
                replace(p, ppl_chosen=_none(ppl[(p.prompt, p.chosen)]), ppl_rejected=_none(ppl[(p.prompt, p.rejected)]))
                for p in labelled
            )
            seconds["label"] += time.perf_counter() - t1
        seconds["sample"] += t1 - t0
        if progress is not None:
            progress(min(start + chunk, len(prompts)), len(prompts))
    judged = summary.sampled - summary.identical
    summary.parse_failure_rate = summary.parse_failures / judged if judged else 0.0
    stats = getattr(source, "stats", None)
    if stats is not None:
        summary.position1_rate = stats.position1_rate
    return _finish(pairs, summary, seconds, ppl_quantile, max_ppl)


def import_human(
    path: str | Path,
    lm: Any = None,
    *,
    ppl_quantile: float | None = None,
    max_ppl: float | None = None,
    ppl_batch_size: int = 8,
) -> BuildResult:
    """Human labels from a JSONL file, with perplexities measured under ``lm`` when one is given."""
    pairs = human_pairs(path)
    summary = BuildSummary(source="human", sampled=len(pairs))
    seconds: dict[str, float] = {}
    if lm is not None:
        t0 = time.perf_counter()
        pairs = add_perplexities(lm, pairs, ppl_batch_size)
        seconds["perplexity"] = time.perf_counter() - t0
    return _finish(pairs, summary, seconds, ppl_quantile, max_ppl)


def _finish(
    pairs: list[PreferencePair],
    summary: BuildSummary,
    seconds: dict[str, float],
    ppl_quantile: float | None,
    max_ppl: float | None,
) -> BuildResult:
    filtered = filter_by_perplexity(pairs, quantile=ppl_quantile, max_ppl=max_ppl)
    if ppl_quantile is not None or max_ppl is not None:
        summary.ppl_threshold, summary.ppl_dropped = filtered.threshold, filtered.dropped
    summary.kept = len(filtered.pairs)
    summary.seconds = seconds
    return BuildResult(filtered.pairs, summary)
