"""The full fine-tune peer: RLHF of the LLM itself with TRL's GRPO, on the same reward and prompts.

This is what a user would otherwise pick instead of a proxy: every weight of the LLM is trained
(GRPO, the reward as a plain function) and a KL penalty towards the frozen model keeps it close.
Comparing it with a proxy run of similar wall time checks the paper's claim (comparable alignment
with about 1% of the trainable parameters). TRL and datasets are an optional extra:
``pip install 'proxy-rlhf[finetune]'``.

Prompts are given to TRL in the same format the environment uses: as a one-turn conversation
(the tokenizer's chat template with a generation prompt, as :meth:`proxy_env.lm.FrozenLM.format_prompt`)
when the tokenizer has a template, as plain text otherwise. Sampling uses the env's top-k/top-p/
temperature, so the model at step 0 samples exactly what the always-accept proxy samples.

The final model and tokenizer are written as a plain Hugging Face folder (``from_pretrained``
works) together with ``finetune.json`` and the TensorBoard logs; everything is staged in a hidden
temporary folder that is renamed onto ``out`` at the end, so an interrupted run leaves no
half-written model folder (an existing ``out`` replaced with ``overwrite=True`` is kept until the
new folder is in place). ``finetune.json``'s ``tensorboard_dir`` is relative to the model folder
(``"tensorboard"``, or null without logs): readers resolve it against that folder, so the folder
can be moved.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple

from proxy_env.assets import replace_dir
from proxy_env.errors import ConfigError, require_package
from proxy_env.rewards import RewardFn, reward_name, score

logger = logging.getLogger(__name__)

__all__ = ["FinetuneConfig", "FinetuneResult", "add_subcommands", "finetune", "reward_function", "time_limit_callback"]

_EXTRA = "finetune"
METRICS_FILE = "finetune.json"
TENSORBOARD_SUBDIR = "tensorboard"


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class FinetuneConfig:
    """Everything :func:`finetune` needs; each field is a ``proxy-rlhf finetune`` flag (``--field-name``)."""

    model: str = field(default="default", metadata=_help(
        "LLM to fine-tune: 'default' (SmolLM2-135M-Instruct, converted once into ~/.cache/proxy_env), a local Hugging "
        "Face folder or a cached hub id"))
    reward: str = field(default="default", metadata=_help("reward: 'default' (VADER positivity), a reward-model id or path"))
    prompts: str = field(default="default", metadata=_help(
        "training prompts: 'default' (637 chatterbot prompts), a .txt/.jsonl file or a datasets folder"))
    out: str = field(default="runs/finetune", metadata=_help(
        "output folder: the fine-tuned model + tokenizer, finetune.json, tensorboard/"))
    overwrite: bool = field(default=False, metadata=_help("replace ``out`` if it exists (otherwise an existing folder is an error)"))
    max_new_tokens: int = field(default=32, metadata=_help("response budget in tokens (as the env's max_new_tokens)"))
    top_k: int = field(default=50, metadata=_help("sampling during training: top-k (the env's SKAM default)"))
    top_p: float = field(default=0.95, metadata=_help("sampling during training: top-p (the env's SKAM default)"))
    temperature: float = field(default=1.0, metadata=_help("sampling during training: temperature (the env's default)"))
    num_generations: int = field(default=4, metadata=_help("GRPO group size: responses sampled per prompt (>= 2)"))
    batch_size: int = field(default=8, metadata=_help(
        "responses per optimiser step (per_device_train_batch_size); a multiple of num_generations"))
    learning_rate: float = field(default=1e-5, metadata=_help("AdamW learning rate (TRL's GRPO default is 1e-6)"))
    lr_scheduler: str = field(default="constant", metadata=_help(
        "learning-rate schedule ('constant' suits a wall-clock budget; 'linear' decays to 0 at max_steps)"))
    beta: float = field(default=0.04, metadata=_help(
        "KL coefficient towards the initial model (TRL's default is 0.0: no reference model, no KL logged)"))
    time_limit_s: float = field(default=0.0, metadata=_help("stop training after this many seconds of wall time (0: no limit)"))
    max_steps: int = field(default=1000, metadata=_help("optimiser steps at most"))
    logging_steps: int = field(default=1, metadata=_help("log metrics (reward, kl, ...) every this many steps"))
    tensorboard: bool = field(default=True, metadata=_help("write TensorBoard logs into <out>/tensorboard"))
    device: str = field(default="auto", metadata=_help("'auto' (CUDA when available, bf16 there), 'cpu' (fp32) or 'cuda'"))
    seed: int = field(default=0, metadata=_help("seed of the sampling, the data order and the initialisation"))

    def validate(self) -> None:
        """Check every value that does not need a model loaded; raise :class:`ConfigError` naming the field."""
        for name in ("max_new_tokens", "batch_size", "max_steps", "logging_steps"):
            _check_int(name, getattr(self, name), 1)
        _check_int("num_generations", self.num_generations, 2, "GRPO needs at least 2 responses per prompt to compare")
        _check_int("top_k", self.top_k, 0, "0 disables top-k")
        if self.batch_size % self.num_generations:
            raise ConfigError(
                f"batch_size={self.batch_size} is not a multiple of num_generations={self.num_generations}: each step "
                f"must hold whole groups; try batch_size={self.num_generations * max(1, self.batch_size // self.num_generations)}."
            )
        _check_float("learning_rate", self.learning_rate, lambda v: v > 0, "> 0")
        _check_float("top_p", self.top_p, lambda v: 0 < v <= 1, "in (0, 1]")
        _check_float("temperature", self.temperature, lambda v: v > 0, "> 0")
        _check_float("beta", self.beta, lambda v: v >= 0, ">= 0 (0 disables the KL penalty)")
        _check_float("time_limit_s", self.time_limit_s, lambda v: v >= 0, ">= 0 (0: no limit)")
        from proxy_env.errors import check_choice

        check_choice("lr_scheduler", self.lr_scheduler, ["constant", "linear", "cosine", "constant_with_warmup"])
        check_choice("device", self.device, ["auto", "cpu", "cuda"])
        if not self.out:
            raise ConfigError("out='' is empty; pass the folder to write the fine-tuned model into.")
        out = Path(self.out).expanduser()
        if out.exists() and not self.overwrite:
            raise ConfigError(f"out={self.out!r} already exists; pass another folder or overwrite=True (--overwrite).")
        from proxy_env.folders import check_output_dir

        check_output_dir(out, arg="out", markers=(METRICS_FILE,), names=("*",))  # --overwrite replaces a fine-tuned model folder only


def _check_int(name: str, value: Any, low: int, why: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name}={value!r} must be an int >= {low}" + (f" ({why})." if why else "."))


def _check_float(name: str, value: Any, ok: Callable[[float], bool], rule: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not ok(value):
        raise ConfigError(f"{name}={value!r} must be a number {rule}.")


class FinetuneResult(NamedTuple):
    """What :func:`finetune` returns (also written to ``<output_dir>/finetune.json``)."""

    output_dir: Path  # the fine-tuned model folder (model + tokenizer + finetune.json + tensorboard/)
    wall_s: float  # seconds of training (model loading excluded)
    steps: int  # optimiser steps taken
    trainable_params: int  # parameters that were trained (all of the LLM's)
    samples: int  # responses generated and scored during training
    reward_first: float | None  # mean training reward at the first logged step
    reward_last: float | None  # mean training reward at the last logged step
    kl_last: float | None  # mean per-token KL to the initial model at the last logged step (None when beta=0)
    log_history: list[dict[str, Any]]  # every logged metrics dict (TRL's names: reward, kl, ...)


# ---------------------------------------------------------------------------------------------- reward, prompts
def _text(item: Any) -> str:
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
        return score(fn, [_text(p) for p in prompts], [_text(c) for c in completions]).tolist()

    reward.__name__ = str(reward_name(fn))
    return reward


def _dataset(prompts: list[str], tokenizer: Any) -> Any:
    """A datasets ``Dataset`` with a ``prompt`` column in the format the environment feeds the LLM."""
    from datasets import Dataset

    if getattr(tokenizer, "chat_template", None) is not None:
        return Dataset.from_dict({"prompt": [[{"role": "user", "content": p}] for p in prompts]})
    return Dataset.from_dict({"prompt": list(prompts)})


# ---------------------------------------------------------------------------------------------- model
def _load_model(name: str) -> tuple[Any, Any]:
    """The trainable model (fp32, ``train()``, gradients on) and its tokenizer."""
    import torch

    from proxy_env.lm import _load, resolve_model_path

    # TRL rebuilds the KL reference model from ``config._name_or_path``, so the model must come from a folder or id
    model, tokenizer = _load(resolve_model_path(name), None, torch.float32, False)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.float().train().requires_grad_(True), tokenizer


def _trainable(model: Any) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)  # tied weights are counted once


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


def _grpo_args(cfg: FinetuneConfig, staging: Path) -> Any:
    import torch
    from trl import GRPOConfig

    cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    return GRPOConfig(
        output_dir=str(staging), per_device_train_batch_size=cfg.batch_size, num_generations=cfg.num_generations,
        max_completion_length=cfg.max_new_tokens, temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p,
        learning_rate=cfg.learning_rate, lr_scheduler_type=cfg.lr_scheduler, beta=cfg.beta, max_steps=cfg.max_steps,
        logging_steps=cfg.logging_steps, seed=cfg.seed, data_seed=cfg.seed, use_cpu=not cuda,
        bf16=cuda and torch.cuda.is_bf16_supported(), fp16=False, gradient_checkpointing=False, use_vllm=False,
        save_strategy="no", report_to="none", disable_tqdm=True, dataloader_num_workers=0, disable_dropout=True,
    )


# ---------------------------------------------------------------------------------------------- run
def finetune(cfg: FinetuneConfig, *, reward: RewardFn | None = None, callbacks: list[Any] | None = None) -> FinetuneResult:
    """Fine-tune every weight of ``cfg.model`` on the reward with TRL's GRPO; save it into ``cfg.out``.

    Args:
        cfg: the configuration (validated before anything is loaded).
        reward: a reward callable ``(prompts, responses) -> floats`` used instead of ``cfg.reward``.
        callbacks: extra ``transformers.TrainerCallback`` objects (e.g. a progress printer; the library prints nothing).

    Returns:
        The output folder, wall time, steps, trainable parameters and the logged training metrics.

    Raises:
        MissingDependencyError: trl or datasets is not installed.
        ConfigError: a field is invalid or the model cannot be found.
    """
    cfg.validate()
    require_package("trl", "trl", extra=_EXTRA)
    require_package("datasets", "datasets", extra=_EXTRA)
    from proxy_env.prompts import load_prompts
    from proxy_env.rewards import resolve_reward

    prompts = load_prompts(cfg.prompts)
    reward_fn = reward if reward is not None else resolve_reward(cfg.reward)
    model, tokenizer = _load_model(cfg.model)
    out = Path(cfg.out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        result = _run(cfg, model, tokenizer, prompts, reward_fn, staging, list(callbacks or []))
        replace_dir(staging, out, markers=(METRICS_FILE,), names=("*",))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result._replace(output_dir=out)


def _run(cfg: FinetuneConfig, model: Any, tokenizer: Any, prompts: list[str], reward_fn: RewardFn,
         staging: Path, callbacks: list[Any]) -> FinetuneResult:
    """Train in ``staging`` (model, tokenizer, finetune.json and TensorBoard logs all land there)."""
    from transformers import PrinterCallback
    from trl import GRPOTrainer

    callbacks = [time_limit_callback(cfg.time_limit_s), *callbacks]
    tb_dir = staging / TENSORBOARD_SUBDIR
    if cfg.tensorboard:
        from torch.utils.tensorboard import SummaryWriter
        from transformers.integrations import TensorBoardCallback

        callbacks.append(TensorBoardCallback(SummaryWriter(log_dir=str(tb_dir))))
    trainer = GRPOTrainer(model=model, reward_funcs=reward_function(reward_fn), args=_grpo_args(cfg, staging),
                          train_dataset=_dataset(prompts, tokenizer), processing_class=tokenizer, callbacks=callbacks)
    trainer.remove_callback(PrinterCallback)  # library code does not print; the CLI adds its own
    start = time.perf_counter()
    trainer.train()
    wall_s = time.perf_counter() - start
    trainer.save_model(str(staging))  # model + tokenizer (the trainer's processing_class)
    logs = [dict(entry) for entry in trainer.state.log_history if "reward" in entry or "kl" in entry]
    rewards = [entry["reward"] for entry in logs if "reward" in entry]
    kls = [entry["kl"] for entry in logs if "kl" in entry]
    steps = int(trainer.state.global_step)
    result = FinetuneResult(
        output_dir=staging, wall_s=wall_s, steps=steps, trainable_params=_trainable(trainer.model),
        samples=steps * cfg.batch_size, reward_first=rewards[0] if rewards else None,
        reward_last=rewards[-1] if rewards else None, kl_last=kls[-1] if kls and cfg.beta > 0 else None, log_history=logs,
    )
    meta = {
        "wall_s": wall_s, "steps": steps, "trainable_params": result.trainable_params, "samples": result.samples,
        # relative to the model folder (readers resolve it against the folder holding finetune.json)
        "tensorboard_dir": TENSORBOARD_SUBDIR if cfg.tensorboard else None, "config": asdict(cfg),
        "reward": str(reward_name(reward_fn)), "reward_first": result.reward_first, "reward_last": result.reward_last,
        "kl_last": result.kl_last, "algo": "grpo", "log_history": logs,
    }
    (staging / METRICS_FILE).write_text(json.dumps(meta, indent=2, default=str))
    return result


# ---------------------------------------------------------------------------------------------- CLI
def add_subcommands(sub: Any) -> None:
    """Add ``proxy-rlhf finetune``: one flag per :class:`FinetuneConfig` field."""
    from agents.cli import add_config_flags

    parser = sub.add_parser("finetune", help="full fine-tune of the LLM with TRL GRPO on the same reward (the peer of a proxy)")
    add_config_flags(parser, FinetuneConfig)
    parser.set_defaults(func=_cli)


def _printer() -> Any:
    """A ``TrainerCallback`` that prints one line per log: step, reward, KL, response length, seconds per step."""
    from transformers import TrainerCallback

    class Printer(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
            if logs and "reward" in logs:
                print(f"step {state.global_step:>5}  reward {logs['reward']:+.3f}  kl {logs.get('kl', float('nan')):.4f}  "
                      f"length {logs.get('completions/mean_length', float('nan')):.1f}  {logs.get('step_time', float('nan')):.2f} s/step",
                      flush=True)

    return Printer()


def _cli(args: argparse.Namespace) -> int:
    cfg = FinetuneConfig(**{f.name: getattr(args, f.name) for f in fields(FinetuneConfig)})
    print(f"fine-tuning {cfg.model!r} with GRPO (steps <= {cfg.max_steps}, time limit {cfg.time_limit_s:g} s) ...", flush=True)
    result = finetune(cfg, callbacks=[_printer()])
    print(f"{result.steps} steps, {result.samples} responses in {result.wall_s:.0f} s; {result.trainable_params:,} trainable parameters")
    if result.reward_first is not None:
        print(f"train reward {result.reward_first:+.3f} -> {result.reward_last:+.3f}"
              + (f"; KL {result.kl_last:.4f}" if result.kl_last is not None else ""))
    print(f"model: {result.output_dir}")
    return 0
