"""Online DPO with AI feedback (OAIF, Guo et al., arXiv 2402.04792) through TRL's experimental ``OnlineDPOTrainer``.

Each step samples two responses per prompt from the current model, the annotator picks one and a
DPO update follows. TRL 1.16's trainer takes reward functions only (its judge interface is gone):
it scores both samples and the higher score is ``chosen`` (a tie: the first). The annotator is

* a reward callable or a ``proxy-rlhf rm train`` folder (``--reward``): its scores, as TRL uses them;
* an LLM judge (``--judge-model``, :class:`feedback.LLMJudge`, answer order randomised):
  :func:`pairwise_reward` turns its verdict on each pair into scores 1 (winner) and 0 (loser), 0.5
  each for a tie or an unparsable reply (TRL then trains on the pair in sampled order; such pairs
  are counted in ``finetune.json``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from agents.finetune.common import MetricKeys, TrainData, message_text, prompt_dataset, trainer_kwargs
from agents.finetune.config import FinetuneConfig
from feedback.sources import FeedbackSource
from proxy_env.errors import StateError

if TYPE_CHECKING:
    from trl.experimental.online_dpo import OnlineDPOConfig, OnlineDPOTrainer

KEYS = MetricKeys(reward="objective/scores", kl="objective/kl")  # kl: summed over the response, per sample
JUDGE_KEYS = MetricKeys(reward=None, kl="objective/kl")  # a judge's 1/0 scores always average 0.5


@dataclass
class AnnotatorStats:
    """How the pairwise annotator answered (written to ``finetune.json``)."""

    pairs: int = 0
    first_wins: int = 0  # the first sample won (the judge saw the pair in a random order)
    ties: int = 0  # tied, identical or unparsable: no preference (TRL keeps the sampled order)

    def to_json(self) -> dict[str, Any]:
        return {
            "pairs": self.pairs,
            "first_wins": self.first_wins,
            "ties": self.ties,
            "tie_rate": self.ties / self.pairs if self.pairs else None,
        }


class PairwiseAnnotator:
    """A feedback source (e.g. :class:`~feedback.LLMJudge`) as the reward function TRL's ``OnlineDPOTrainer`` calls.

    TRL calls it with ``prompts = 2 * batch`` and the two samples of prompt ``i`` at rows ``i`` and
    ``i + batch``; it returns 1 for the preferred sample of each pair and 0 for the other.
    """

    def __init__(self, source: FeedbackSource) -> None:
        self.source, self.stats = source, AnnotatorStats()
        self.__name__ = str(getattr(source, "name", "annotator"))

    def __call__(self, prompts: list[Any], completions: list[Any], **_: Any) -> list[float]:
        texts, responses = [message_text(p) for p in prompts], [message_text(c) for c in completions]
        half = len(texts) // 2
        if len(texts) != 2 * half or len(responses) != len(texts) or texts[:half] != texts[half:]:
            raise StateError(
                f"OnlineDPOTrainer passed {len(texts)} prompts that are not two copies of one batch; this TRL "
                "version lays out its samples differently: pin trl==1.16.* (pip install 'proxy-rlhf[finetune]')."
            )
        labels = self.source.label(texts[:half], responses[:half], responses[half:])
        first = [0.5 if label.first_wins is None else float(label.first_wins) for label in labels]
        self.stats.pairs += half
        self.stats.first_wins += sum(f == 1.0 for f in first)
        self.stats.ties += sum(f == 0.5 for f in first)
        return first + [1.0 - f for f in first]


def pairwise_reward(source: FeedbackSource) -> PairwiseAnnotator:
    """The TRL reward function of a pairwise feedback source (see :class:`PairwiseAnnotator`)."""
    return PairwiseAnnotator(source)


def judge_annotator(cfg: FinetuneConfig) -> PairwiseAnnotator:
    """``cfg.judge_model`` loaded as a frozen LLM judge (answer order randomised with ``cfg.seed``)."""
    from proxy_env.engine.models import as_frozen_lm
    from proxy_env.rewards.judge import LLMJudge

    device = None if cfg.device == "auto" else cfg.device
    return pairwise_reward(LLMJudge(as_frozen_lm(cfg.judge_model, device=device), mode=cfg.judge_mode, seed=cfg.seed))


def _trainer_class() -> tuple[type[OnlineDPOConfig], type[OnlineDPOTrainer]]:
    # the experimental warning is TRL's, for every import; we chose this trainer knowingly and say so in the docs
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*trl.experimental.*")
        from trl.experimental.online_dpo import OnlineDPOConfig, OnlineDPOTrainer
    return OnlineDPOConfig, OnlineDPOTrainer


def build_trainer(
    cfg: FinetuneConfig, model: Any, tokenizer: Any, data: TrainData, staging: Path, callbacks: list[Any]
) -> Any:
    """An ``OnlineDPOTrainer`` sampling with the env's pool, ``batch_size`` prompts (2 samples each) per step."""
    config_cls, trainer_cls = _trainer_class()
    args = config_cls(
        **trainer_kwargs(cfg, staging),
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_k=cfg.top_k,
        top_p=cfg.top_p,
        beta=cfg.beta_value,  # type: ignore[arg-type]  # TRL documents float or list[float]; its field says list
        use_vllm=False,
    )
    # TRL's RewardFunc returns list[float | None], and list is invariant: a list[float] reward is one too
    reward = cast("Callable[..., list[float | None]] | None", data.reward)
    return trainer_cls(
        model=model,
        reward_funcs=reward,
        args=args,
        train_dataset=prompt_dataset(data.prompts, tokenizer),
        processing_class=tokenizer,
        callbacks=callbacks,
    )


def keys(data: TrainData) -> MetricKeys:
    return JUDGE_KEYS if isinstance(data.annotator, PairwiseAnnotator) else KEYS


def labels(cfg: FinetuneConfig, data: TrainData) -> tuple[str, str]:
    """(curve, point): one curve per annotator, one point per β."""
    return f"online-dpo ({data.source})", f"β={cfg.beta_value:g}"
