"""What every fine-tune method shares: the reward as a TRL reward function, the prompt format, the model, the clock."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NamedTuple

from agents.finetune.config import FinetuneConfig
from proxy_env.rewards import RewardFn, reward_name, score


def message_text(item: Any) -> str:
    """A prompt or completion as plain text: a string as is, a conversation -> its last message's content."""
    if isinstance(item, str):
        return item
    return str(item[-1]["content"])


def reward_function(fn: RewardFn) -> Callable[..., list[float]]:
    """Wrap a reward source ``(prompts, responses) -> floats`` as a TRL reward function.

    TRL calls it with ``prompts`` and ``completions`` (plain strings, or one-turn conversations
    when the dataset is conversational) and more keyword arguments, which are ignored. The reward
    source sees the raw user prompt and the response text, as in the environment.
    """

    def reward(prompts: list[Any], completions: list[Any], **_: Any) -> list[float]:
        return score(fn, [message_text(p) for p in prompts], [message_text(c) for c in completions]).tolist()

    reward.__name__ = str(reward_name(fn))
    return reward


def conversational(tokenizer: Any) -> bool:
    """Prompts go to TRL as one-turn conversations when the tokenizer has a chat template (as FrozenLM formats them)."""
    return getattr(tokenizer, "chat_template", None) is not None


def prompt_turn(prompt: str, tokenizer: Any) -> Any:
    """One prompt in the format the environment feeds the LLM: a user turn, or the plain text without a template."""
    return [{"role": "user", "content": prompt}] if conversational(tokenizer) else prompt


def prompt_dataset(prompts: list[str], tokenizer: Any) -> Any:
    """A datasets ``Dataset`` with a ``prompt`` column in the format the environment feeds the LLM."""
    from datasets import Dataset

    return Dataset.from_dict({"prompt": [prompt_turn(p, tokenizer) for p in prompts]})


def load_model(name: str) -> tuple[Any, Any]:
    """The trainable model (fp32, ``train()``, gradients on) and its tokenizer."""
    import torch

    from proxy_env.engine.lm import load_pretrained, resolve_model_path

    # TRL rebuilds the KL reference model from ``config._name_or_path``, so the model must come from a folder or id
    model, tokenizer = load_pretrained(resolve_model_path(name), None, torch.float32, False)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.float().train().requires_grad_(True), tokenizer


def trainable(model: Any) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)  # tied weights are counted once


def use_cuda(cfg: FinetuneConfig) -> bool:
    import torch

    return cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())


def trainer_kwargs(cfg: FinetuneConfig, staging: Any) -> dict[str, Any]:
    """The ``TrainingArguments`` every method shares: the budget, the schedule, the seed, CPU/CUDA, no saving, no printing."""
    import torch

    cuda = use_cuda(cfg)
    return dict(
        output_dir=str(staging),
        per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        max_steps=cfg.max_steps,
        logging_steps=cfg.logging_steps,
        seed=cfg.seed,
        data_seed=cfg.seed,
        use_cpu=not cuda,
        bf16=cuda and torch.cuda.is_bf16_supported(),
        fp16=False,
        gradient_checkpointing=False,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        disable_dropout=True,
    )


def time_limit_callback(seconds: float) -> Any:
    """A ``transformers.TrainerCallback`` that stops training once ``seconds`` of wall time have passed (0: never).

    The check runs after each optimiser step, so a run overshoots the budget by at most one step.
    """
    from transformers import TrainerCallback

    class TimeLimit(TrainerCallback):
        def __init__(self) -> None:
            self.start = time.perf_counter()

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.start = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if seconds > 0 and time.perf_counter() - self.start >= seconds:
                control.should_training_stop = True

    return TimeLimit()


class TrainData(NamedTuple):
    """What a method trains on, loaded (and checked) before the model: prompts and a reward, or preference pairs."""

    prompts: list[str]  # grpo / online-dpo training prompts (empty for dpo)
    reward: Callable[..., list[float]] | None  # the TRL reward function (grpo: the reward; online-dpo: the annotator)
    source: str  # what scores or labels the data: the reward's name, the judge's, or the pairs' sources
    pairs: Any = None  # dpo: an agents.finetune.dpo.PairSelection
    annotator: Any = None  # online-dpo: the annotator object (its stats go into finetune.json)


class MetricKeys(NamedTuple):
    """Which of TRL's logged metrics are the training reward and the KL to the initial model (None: not logged)."""

    reward: str | None
    kl: str | None
