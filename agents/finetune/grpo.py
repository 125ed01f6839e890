"""GRPO (TRL's ``GRPOTrainer``): online RL on the reward, a group of samples per prompt, KL penalty β to the initial model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from agents.finetune.common import MetricKeys, TrainData, prompt_dataset, trainer_kwargs
from agents.finetune.config import FinetuneConfig

KEYS = MetricKeys(reward="reward", kl="kl")  # kl: TRL's per-token estimate, logged only when beta > 0


def build_trainer(
    cfg: FinetuneConfig, model: Any, tokenizer: Any, data: TrainData, staging: Path, callbacks: list[Any]
) -> Any:
    """A ``GRPOTrainer`` sampling with the env's pool (top-k/top-p/temperature) on the env's prompt format."""
    from trl import GRPOConfig, GRPOTrainer

    args = GRPOConfig(
        **trainer_kwargs(cfg, staging),
        num_generations=cfg.num_generations,
        max_completion_length=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_k=cfg.top_k,
        top_p=cfg.top_p,
        beta=cfg.beta_value,
        use_vllm=False,
    )
    # TRL's RewardFunc returns list[float | None], and list is invariant: a list[float] reward is one too
    reward = cast("Callable[..., list[float | None]] | None", data.reward)
    return GRPOTrainer(
        model=model,
        reward_funcs=reward,
        args=args,
        train_dataset=prompt_dataset(data.prompts, tokenizer),
        processing_class=tokenizer,
        callbacks=callbacks,
    )


def labels(cfg: FinetuneConfig, data: TrainData) -> tuple[str, str]:
    """(curve, point) of this run on the reward–KL figure: one curve per method, one point per β."""
    return "grpo", f"β={cfg.beta_value:g}"
