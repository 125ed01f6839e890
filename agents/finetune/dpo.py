"""DPO (TRL's ``DPOTrainer``) on preference pairs from ``proxy-rlhf prefs build``, with the perplexity filter or its control.

Kutalev & Markoff (arXiv 2410.01789) build the preference set from the model being aligned and keep
the pairs it would itself plausibly produce. ``--ppl-quantile q`` keeps the pairs whose two responses
both have perplexity <= the ``q`` quantile of all responses' perplexities
(:func:`feedback.filter_by_perplexity`); ``--ppl-random`` keeps the same number of pairs
drawn at random (seeded) from all of them, so the two arms differ only in *which* pairs they see.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from agents.finetune.common import MetricKeys, TrainData, prompt_turn, trainer_kwargs
from agents.finetune.config import FinetuneConfig
from feedback.perplexity import filter_by_perplexity
from feedback.records import PreferencePair
from proxy_env.errors import ConfigError

KEYS = MetricKeys(reward=None, kl=None)  # DPO samples nothing: its logs are the loss and implicit rewards


class PairSelection(NamedTuple):
    """The pairs DPO trains on and how they were chosen."""

    pairs: list[PreferencePair]
    total: int  # pairs in the files
    selection: str  # "all", "ppl-filter" or "random" (as many as the filter keeps)
    quantile: float | None
    threshold: float | None  # the perplexity cut of the quantile (None: no filter)
    filter_kept: int  # pairs the filter keeps (== len(pairs) for both "ppl-filter" and "random")

    def summary(self, files: Sequence[str]) -> dict[str, Any]:
        return {
            "files": [str(f) for f in files],
            "total": self.total,
            "used": len(self.pairs),
            "selection": self.selection,
            "ppl_quantile": self.quantile,
            "ppl_threshold": self.threshold,
            "filter_kept": self.filter_kept,
        }


def select_pairs(
    pairs: Sequence[PreferencePair], *, quantile: float | None = None, random_same_count: bool = False, seed: int = 0
) -> PairSelection:
    """The pairs under the perplexity ``quantile`` (both responses), or as many drawn at random; all without a quantile.

    The random draw (``random_same_count``) is seeded and keeps the files' order, so a run is
    reproducible and the two arms have exactly the same number of pairs.
    """
    pairs = list(pairs)
    if quantile is None:
        if random_same_count:
            raise ConfigError("random_same_count=True draws as many pairs as the quantile keeps; pass quantile too.")
        return PairSelection(pairs, len(pairs), "all", None, None, len(pairs))
    kept = filter_by_perplexity(pairs, quantile=quantile)
    if not kept.pairs:
        raise ConfigError(
            f"ppl_quantile={quantile:g} keeps none of the {len(pairs)} pairs (cut {kept.threshold:.3g}: no pair "
            "has both responses under it); raise --ppl-quantile."
        )
    if not random_same_count:
        return PairSelection(kept.pairs, len(pairs), "ppl-filter", quantile, kept.threshold, len(kept.pairs))
    index = np.sort(np.random.default_rng(seed).choice(len(pairs), size=len(kept.pairs), replace=False))
    return PairSelection([pairs[i] for i in index], len(pairs), "random", quantile, kept.threshold, len(kept.pairs))


def load_selection(cfg: FinetuneConfig) -> PairSelection:
    """The pairs of ``cfg.pairs`` (DataError names a bad file and line), selected as ``cfg`` says."""
    from feedback.records import load_pair_files

    pairs = load_pair_files([str(Path(p).expanduser()) for p in cfg.pairs])
    return select_pairs(pairs, quantile=cfg.ppl_quantile, random_same_count=cfg.ppl_random, seed=cfg.seed)


def pairs_dataset(pairs: Sequence[PreferencePair], tokenizer: Any) -> Any:
    """A datasets ``Dataset`` of ``prompt``/``chosen``/``rejected`` in the env's prompt format (conversational with a template)."""
    from datasets import Dataset

    from agents.finetune.common import conversational

    chosen: list[list[dict[str, str]]] | list[str]  # conversational: one assistant turn each; else plain text
    rejected: list[list[dict[str, str]]] | list[str]
    if conversational(tokenizer):
        chosen = [[{"role": "assistant", "content": p.chosen}] for p in pairs]
        rejected = [[{"role": "assistant", "content": p.rejected}] for p in pairs]
    else:
        chosen, rejected = [p.chosen for p in pairs], [p.rejected for p in pairs]
    return Dataset.from_dict(
        {"prompt": [prompt_turn(p.prompt, tokenizer) for p in pairs], "chosen": chosen, "rejected": rejected}
    )


def build_trainer(
    cfg: FinetuneConfig, model: Any, tokenizer: Any, data: TrainData, staging: Path, callbacks: list[Any]
) -> Any:
    """A ``DPOTrainer`` (sigmoid loss, β = ``cfg.beta_value``; the reference is the initial model, loaded from its folder)."""
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(**trainer_kwargs(cfg, staging), beta=cfg.beta_value)
    return DPOTrainer(
        model=model,
        args=args,
        train_dataset=pairs_dataset(data.pairs.pairs, tokenizer),
        processing_class=tokenizer,
        callbacks=callbacks,
    )


def labels(cfg: FinetuneConfig, data: TrainData) -> tuple[str, str]:
    """(curve, point): one curve per data arm (filtered, random control, all pairs), one point per β."""
    selection: PairSelection = data.pairs
    arm = {
        "all": "all pairs",
        "ppl-filter": f"ppl ≤ q{selection.quantile:g}",
        "random": f"random, as many as q{selection.quantile:g}",
    }[selection.selection]
    return f"dpo ({arm})", f"β={cfg.beta_value:g}"
