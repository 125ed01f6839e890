"""Run one fine-tune (any method) into a staging folder and move it onto ``out``: the model, ``finetune.json``, logs."""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, NamedTuple

from agents.finetune import dpo, grpo, online_dpo
from agents.finetune.common import TrainData, load_model, reward_function, time_limit_callback, trainable
from agents.finetune.config import METRICS_FILE, TENSORBOARD_SUBDIR, FinetuneConfig
from feedback.sources import FeedbackSource
from proxy_env.errors import require_package
from proxy_env.folders import replace_dir
from proxy_env.rewards import RewardFn, reward_name

_EXTRA = "finetune"
METHOD_MODULES = {"grpo": grpo, "dpo": dpo, "online-dpo": online_dpo}


class FinetuneResult(NamedTuple):
    """What :func:`finetune` returns (also written to ``<output_dir>/finetune.json``)."""

    output_dir: Path  # the fine-tuned model folder (model + tokenizer + finetune.json + tensorboard/)
    wall_s: float  # seconds of training (model loading excluded)
    steps: int  # optimiser steps taken
    trainable_params: int  # parameters that were trained (all of the LLM's)
    samples: int  # grpo/online-dpo: responses generated and scored; dpo: pairs seen (with repeats)
    reward_first: float | None  # mean training reward at the first logged step (None for dpo and a judge)
    reward_last: float | None  # mean training reward at the last logged step
    kl_last: float | None  # KL to the initial model at the last logged step (grpo: per token; online-dpo: per response)
    log_history: list[dict[str, Any]]  # every logged metrics dict (TRL's names: reward, kl, loss, ...)


def finetune(
    cfg: FinetuneConfig,
    *,
    reward: RewardFn | None = None,
    judge: FeedbackSource | None = None,
    callbacks: list[Any] | None = None,
) -> FinetuneResult:
    """Fine-tune every weight of ``cfg.model`` with ``cfg.method`` (TRL underneath); save it into ``cfg.out``.

    Args:
        cfg: the configuration (validated before anything is loaded).
        reward: a reward callable ``(prompts, responses) -> floats`` used instead of ``cfg.reward`` (grpo:
            the reward; online-dpo: the annotator).
        judge: online-dpo: a pairwise feedback source (``label(prompts, first, second)``, e.g. an
            :class:`~feedback.LLMJudge`) as the annotator, instead of ``cfg.judge_model``.
        callbacks: extra ``transformers.TrainerCallback`` objects (e.g. a progress printer; the library prints nothing).

    Returns:
        The output folder, wall time, steps, trainable parameters and the logged training metrics.

    Raises:
        MissingDependencyError: trl or datasets is not installed.
        ConfigError: a field is invalid or the model cannot be found.
        DataError: a pairs file is malformed or empty (the message names the file and line).
    """
    cfg.validate()
    require_package("trl", "trl", extra=_EXTRA)
    require_package("datasets", "datasets", extra=_EXTRA)
    data = _inputs(cfg, reward, judge)  # data errors surface before the model loads
    model, tokenizer = load_model(cfg.model)
    out = Path(cfg.out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        result = _run(cfg, model, tokenizer, data, staging, list(callbacks or []))
        replace_dir(staging, out, markers=(METRICS_FILE,), names=("*",))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result._replace(output_dir=out)


def _inputs(cfg: FinetuneConfig, reward: RewardFn | None, judge: FeedbackSource | None) -> TrainData:
    """Prompts and reward (grpo), pairs (dpo), or prompts and annotator (online-dpo)."""
    from proxy_env.prompts import load_prompts
    from proxy_env.rewards import resolve_reward

    if cfg.method == "dpo":
        selection = dpo.load_selection(cfg)
        sources = sorted({p.source for p in selection.pairs})
        return TrainData([], None, ",".join(sources), pairs=selection)
    prompts = load_prompts(cfg.prompts)
    if cfg.method == "online-dpo" and (judge is not None or cfg.judge_model is not None):
        annotator = online_dpo.pairwise_reward(judge) if judge is not None else online_dpo.judge_annotator(cfg)
        return TrainData(prompts, annotator, annotator.__name__, annotator=annotator)
    reward_fn = reward if reward is not None else resolve_reward(cfg.reward)
    return TrainData(prompts, reward_function(reward_fn), str(reward_name(reward_fn)))


def _callbacks(cfg: FinetuneConfig, staging: Path, extra: list[Any]) -> list[Any]:
    callbacks = [time_limit_callback(cfg.time_limit_s), *extra]
    if cfg.tensorboard:
        from torch.utils.tensorboard import SummaryWriter
        from transformers.integrations import TensorBoardCallback

        callbacks.append(TensorBoardCallback(SummaryWriter(log_dir=str(staging / TENSORBOARD_SUBDIR))))
    return callbacks


def _run(
    cfg: FinetuneConfig, model: Any, tokenizer: Any, data: TrainData, staging: Path, callbacks: list[Any]
) -> FinetuneResult:
    """Train in ``staging`` (model, tokenizer, finetune.json and TensorBoard logs all land there)."""
    from transformers import PrinterCallback

    method = METHOD_MODULES[cfg.method]
    trainer = method.build_trainer(cfg, model, tokenizer, data, staging, _callbacks(cfg, staging, callbacks))
    trainer.remove_callback(PrinterCallback)  # library code does not print; the CLI adds its own
    start = time.perf_counter()
    trainer.train()
    wall_s = time.perf_counter() - start
    trainer.save_model(str(staging))  # model + tokenizer (the trainer's processing_class)
    keys = online_dpo.keys(data) if cfg.method == "online-dpo" else method.KEYS
    logs = [dict(entry) for entry in trainer.state.log_history if "step" in entry and "train_runtime" not in entry]
    rewards = [entry[keys.reward] for entry in logs if keys.reward in entry]
    kls = [entry[keys.kl] for entry in logs if keys.kl in entry]
    steps = int(trainer.state.global_step)
    per_step = {"grpo": cfg.batch_size, "dpo": cfg.batch_size, "online-dpo": 2 * cfg.batch_size}[cfg.method]
    result = FinetuneResult(
        output_dir=staging,
        wall_s=wall_s,
        steps=steps,
        trainable_params=trainable(trainer.model),
        samples=steps * per_step,
        reward_first=rewards[0] if rewards else None,
        reward_last=rewards[-1] if rewards else None,
        kl_last=kls[-1] if kls and cfg.beta_value > 0 else None,
        log_history=logs,
    )
    _write_meta(cfg, data, result, staging)
    return result


def _write_meta(cfg: FinetuneConfig, data: TrainData, result: FinetuneResult, staging: Path) -> None:
    curve, point = METHOD_MODULES[cfg.method].labels(cfg, data)
    meta = {
        "wall_s": result.wall_s,
        "steps": result.steps,
        "trainable_params": result.trainable_params,
        "samples": result.samples,
        # relative to the model folder (readers resolve it against the folder holding finetune.json)
        "tensorboard_dir": TENSORBOARD_SUBDIR if cfg.tensorboard else None,
        "config": asdict(replace(cfg, beta=cfg.beta_value)),
        "method": cfg.method,
        "algo": cfg.method,
        "curve": curve,
        "point": point,  # how `proxy-rlhf bench` draws it: one line per curve, a label per point
        "reward": data.source,
        "reward_first": result.reward_first,
        "reward_last": result.reward_last,
        "kl_last": result.kl_last,
        "log_history": result.log_history,
    }
    if data.pairs is not None:
        meta["pairs"] = data.pairs.summary(cfg.pairs)
    if data.annotator is not None:
        meta["annotator"] = data.annotator.stats.to_json()
    (staging / METRICS_FILE).write_text(json.dumps(meta, indent=2, default=str))
