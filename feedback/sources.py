"""Feedback sources: who says which of two responses is better.

A source has a ``name`` and ``label(prompts, first, second) -> list[Preference]``. Three ship:

* :class:`RewardFeedback` — any reward callable: the higher-scored response wins, ``margin`` is the
  score difference ``|r1 - r2|``. Exact ties (margin <= ``tie_tolerance``, 0 by default) are
  labelled ``None`` and the builder drops them (and counts them).
* :class:`proxy_env.rewards.judge.LLMJudge` — an LLM asked which answer is better (OAIF).
* :func:`human_pairs` — labels imported from a JSONL file (see :mod:`feedback.records`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from feedback.records import PreferencePair, load_pairs
from proxy_env.errors import ConfigError
from proxy_env.rewards import RewardFn, reward_name, score
from proxy_env.rewards.judge import LLMJudge, Preference  # Preference: re-exported, the label every source returns


@runtime_checkable
class FeedbackSource(Protocol):
    """Labels pairs of responses to the same prompts."""

    name: str

    def label(self, prompts: list[str], first: list[str], second: list[str]) -> list[Preference]: ...


class RewardFeedback:
    """Preferences from a reward callable: the higher reward wins.

    >>> src = RewardFeedback(lambda prompts, responses: [len(r) for r in responses])
    >>> src.label(["q", "q"], ["long answer", "a"], ["short", "a"])
    [Preference(first_wins=True, margin=6.0, failed=False), Preference(first_wins=None, margin=0.0, failed=False)]
    """

    def __init__(self, reward_fn: RewardFn, *, tie_tolerance: float = 0.0, name: str | None = None) -> None:
        if not tie_tolerance >= 0.0:
            raise ConfigError(f"tie_tolerance={tie_tolerance!r} must be >= 0 (0: only exact ties are dropped).")
        self.reward_fn, self.tie_tolerance = reward_fn, float(tie_tolerance)
        self.name = name or f"reward:{reward_name(reward_fn)}"

    def label(self, prompts: list[str], first: list[str], second: list[str]) -> list[Preference]:
        if not len(prompts) == len(first) == len(second):
            raise ConfigError(
                f"label() got {len(prompts)} prompts, {len(first)} and {len(second)} responses; they must match."
            )
        values = score(self.reward_fn, list(prompts) * 2, list(first) + list(second))
        r1, r2 = values[: len(first)], values[len(first) :]
        out = []
        for a, b in zip(r1, r2):
            margin = float(abs(a - b))
            out.append(Preference(None if margin <= self.tie_tolerance else bool(a > b), margin))
        return out


def human_pairs(path: str | Path) -> list[PreferencePair]:
    """Human labels from a JSONL file; ``source`` defaults to ``"human"`` (raises DataError naming the line)."""
    return load_pairs(path, default_source="human")


def to_pairs(
    prompts: Sequence[str], first: Sequence[str], second: Sequence[str], labels: Sequence[Preference], source: str
) -> tuple[list[PreferencePair], int, int]:
    """Labelled pairs as records; returns (pairs, ties dropped, failures dropped)."""
    pairs, ties, failures = [], 0, 0
    for prompt, a, b, pref in zip(prompts, first, second, labels):
        if pref.failed:
            failures += 1
        elif pref.first_wins is None:
            ties += 1
        else:
            chosen, rejected = (a, b) if pref.first_wins else (b, a)
            pairs.append(PreferencePair(prompt, chosen, rejected, source, pref.margin))
    return pairs, ties, failures


def judge_agreement(judge: LLMJudge, pairs: Sequence[PreferencePair], margin_threshold: float = 0.3) -> dict[str, Any]:
    """How often ``judge`` prefers each pair's ``chosen`` response: its agreement with the source that labelled the pairs.

    Returns agreement over the pairs the judge decided (not tied, parsed) and over those whose source
    margin is >= ``margin_threshold``, with the judge's parse failure rate and position-1 rate (its
    :attr:`LLMJudge.stats`, which count every judgment it has made: pass a fresh judge for figures of
    these pairs alone).
    """
    labels = judge.label([p.prompt for p in pairs], [p.chosen for p in pairs], [p.rejected for p in pairs])
    decided = [
        (bool(label.first_wins), p.margin is not None and p.margin >= margin_threshold)
        for label, p in zip(labels, pairs)
        if label.first_wins is not None
    ]
    strong = [agree for agree, is_strong in decided if is_strong]
    return {
        "agreement": sum(a for a, _ in decided) / len(decided) if decided else None,
        "decided": len(decided),
        "agreement_margin": sum(strong) / len(strong) if strong else None,
        "pairs_margin": len(strong),
        "parse_failure_rate": judge.stats.parse_failure_rate,
        "position1_rate": judge.stats.position1_rate,
    }
