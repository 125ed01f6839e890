"""The configuration of ``proxy-rlhf finetune``: one dataclass, one flag per field, validated before any model loads."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proxy_env.config import EnvConfig
from proxy_env.errors import ConfigError, check_choice

METHODS = ("grpo", "dpo", "online-dpo")
DEFAULT_BETA = {"grpo": 0.04, "dpo": 0.1, "online-dpo": 0.1}  # DPO and online DPO: TRL's default β; GRPO: 0.04
METRICS_FILE = "finetune.json"
TENSORBOARD_SUBDIR = "tensorboard"


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class FinetuneConfig:
    """Everything :func:`agents.finetune.finetune` needs; each field is a ``proxy-rlhf finetune`` flag (``--field-name``)."""

    method: str = field(
        default="grpo",
        metadata=_help(
            "'grpo' (online RL on --reward), 'dpo' (offline, on --pairs from `prefs build`) or 'online-dpo' (two samples "
            "per prompt from the current model, the annotator picks one: OAIF)"
        ),
    )
    model: str = field(
        default="default",
        metadata=_help(
            "LLM to fine-tune: 'default' (SmolLM2-135M-Instruct, converted once into ~/.cache/proxy_env), a local Hugging "
            "Face folder or a cached hub id"
        ),
    )
    reward: str = field(
        default="default",
        metadata=_help(
            "grpo: the reward; online-dpo without --judge-model: the annotator (the higher-scored sample wins). 'default' "
            "(VADER positivity), a `proxy-rlhf rm train` folder, or a reward-model id or path"
        ),
    )
    prompts: str = field(
        default="default",
        metadata=_help(
            "grpo/online-dpo training prompts: 'default' (637 chatterbot prompts), a .txt/.jsonl file or a datasets folder"
        ),
    )
    pairs: tuple[str, ...] = field(
        default=(),
        metadata=_help(
            "dpo: preference JSONL file(s) from `proxy-rlhf prefs build` (prompt, chosen, rejected, ppl_chosen, ppl_rejected)"
        ),
    )
    ppl_quantile: float | None = field(
        default=None,
        metadata=_help(
            "dpo: keep the pairs whose two responses both have perplexity <= this quantile (in (0, 1]) of all responses' "
            "perplexities (Kutalev & Markoff's filter); None: every pair"
        ),
    )
    ppl_random: bool = field(
        default=False,
        metadata=_help(
            "dpo: keep as many pairs as --ppl-quantile would, drawn at random (seeded) from all pairs instead: the "
            "unfiltered arm with the same number of pairs"
        ),
    )
    judge_model: str | None = field(
        default=None,
        metadata=_help(
            "online-dpo: the annotator is this causal LM as judge (answers '1' or '2'; a hub id or a path; answer order "
            "randomised); None: --reward annotates"
        ),
    )
    judge_mode: str = field(
        default="logits",
        metadata=_help(
            "online-dpo with --judge-model: read the judge's '1'/'2' logits ('logits') or parse a short reply ('generate')"
        ),
    )
    out: str = field(
        default="runs/finetune",
        metadata=_help("output folder: the fine-tuned model + tokenizer, finetune.json, tensorboard/"),
    )
    overwrite: bool = field(
        default=False, metadata=_help("replace ``out`` if it exists (otherwise an existing folder is an error)")
    )
    max_new_tokens: int = field(default=32, metadata=_help("response budget in tokens (as the env's max_new_tokens)"))
    top_k: int = field(
        default=EnvConfig.top_k, metadata=_help("sampling during training: top-k (the env's pool default)")
    )
    top_p: float = field(
        default=EnvConfig.top_p, metadata=_help("sampling during training: top-p (the env's pool default)")
    )
    temperature: float = field(
        default=EnvConfig.temperature, metadata=_help("sampling during training: temperature (the env's default)")
    )
    num_generations: int = field(default=4, metadata=_help("grpo: group size, responses sampled per prompt (>= 2)"))
    batch_size: int = field(
        default=8,
        metadata=_help(
            "per optimiser step: grpo, responses (a multiple of num_generations); dpo, pairs; online-dpo, prompts (2 "
            "responses each)"
        ),
    )
    learning_rate: float = field(default=1e-5, metadata=_help("AdamW learning rate (TRL's GRPO default is 1e-6)"))
    lr_scheduler: str = field(
        default="constant",
        metadata=_help(
            "learning-rate schedule ('constant' suits a wall-clock budget; 'linear' decays to 0 at max_steps)"
        ),
    )
    beta: float | None = field(
        default=None,
        metadata=_help(
            "KL coefficient towards the initial model; None: the method's default (grpo 0.04, dpo and online-dpo 0.1, "
            "TRL's); grpo with 0 loads no reference model and logs no KL"
        ),
    )
    time_limit_s: float = field(
        default=0.0, metadata=_help("stop training after this many seconds of wall time (0: no limit)")
    )
    max_steps: int = field(default=1000, metadata=_help("optimiser steps at most"))
    logging_steps: int = field(default=1, metadata=_help("log metrics (reward, kl, ...) every this many steps"))
    tensorboard: bool = field(default=True, metadata=_help("write TensorBoard logs into <out>/tensorboard"))
    device: str = field(
        default="auto", metadata=_help("'auto' (CUDA when available, bf16 there), 'cpu' (fp32) or 'cuda'")
    )
    seed: int = field(
        default=0, metadata=_help("seed of the sampling, the data order, the random pair subset and the initialisation")
    )

    @property
    def beta_value(self) -> float:
        """``beta``, or the method's default when it is None."""
        return DEFAULT_BETA.get(self.method, 0.0) if self.beta is None else float(self.beta)

    def validate(self) -> None:
        """Check every value that does not need a model loaded; raise :class:`ConfigError` naming the field."""
        check_choice("method", self.method, METHODS)
        for name in ("max_new_tokens", "batch_size", "max_steps", "logging_steps"):
            _check_int(name, getattr(self, name), 1)
        _check_int("top_k", self.top_k, 0, "0 disables top-k")
        if self.method == "grpo":
            _check_int(
                "num_generations", self.num_generations, 2, "GRPO needs at least 2 responses per prompt to compare"
            )
            if self.batch_size % self.num_generations:
                raise ConfigError(
                    f"batch_size={self.batch_size} is not a multiple of num_generations={self.num_generations}: each step "
                    f"must hold whole groups; try batch_size={self.num_generations * max(1, self.batch_size // self.num_generations)}."
                )
        _check_float("learning_rate", self.learning_rate, lambda v: v > 0, "> 0")
        _check_float("top_p", self.top_p, lambda v: 0 < v <= 1, "in (0, 1]")
        _check_float("temperature", self.temperature, lambda v: v > 0, "> 0")
        if self.beta is not None:
            low = (
                (lambda v: v >= 0, ">= 0 (0 disables the KL penalty)")
                if self.method == "grpo"
                else (lambda v: v > 0, "> 0")
            )
            _check_float("beta", self.beta, *low)
        _check_float("time_limit_s", self.time_limit_s, lambda v: v >= 0, ">= 0 (0: no limit)")
        check_choice("lr_scheduler", self.lr_scheduler, ["constant", "linear", "cosine", "constant_with_warmup"])
        check_choice("device", self.device, ["auto", "cpu", "cuda"])
        check_choice("judge_mode", self.judge_mode, ["logits", "generate"])
        self._validate_method_fields()
        if not self.out:
            raise ConfigError("out='' is empty; pass the folder to write the fine-tuned model into.")
        out = Path(self.out).expanduser()
        if out.exists() and not self.overwrite:
            raise ConfigError(f"out={self.out!r} already exists; pass another folder or overwrite=True (--overwrite).")
        from proxy_env.folders import check_output_dir

        check_output_dir(
            out, arg="out", markers=(METRICS_FILE,), names=("*",)
        )  # --overwrite replaces a fine-tuned model folder only

    def _validate_method_fields(self) -> None:
        """Fields that belong to one method: required there, refused elsewhere (a silent no-op would mislead)."""
        if isinstance(self.pairs, (str, Path)):
            raise ConfigError(
                f"pairs={self.pairs!r} must be a tuple of JSONL files, e.g. pairs=({str(self.pairs)!r},)."
            )
        dpo_only = {
            "pairs": bool(self.pairs),
            "ppl_quantile": self.ppl_quantile is not None,
            "ppl_random": self.ppl_random,
        }
        if self.method != "dpo":
            for name, given in dpo_only.items():
                if given:
                    raise ConfigError(
                        f"{name} applies to method='dpo' only (got method={self.method!r}); drop --{name.replace('_', '-')}."
                    )
        elif not self.pairs:
            raise ConfigError(
                "method='dpo' needs pairs: pass --pairs FILE.jsonl (build one with `proxy-rlhf prefs build --out FILE.jsonl`)."
            )
        if self.method == "dpo":
            for path in self.pairs:
                if not Path(path).expanduser().is_file():
                    raise ConfigError(
                        f"pairs: {path!r} is not a file; pass a JSONL file from `proxy-rlhf prefs build`."
                    )
            if self.ppl_quantile is not None:
                _check_float("ppl_quantile", self.ppl_quantile, lambda v: 0 < v <= 1, "in (0, 1] (e.g. 0.75)")
            if self.ppl_random and self.ppl_quantile is None:
                raise ConfigError(
                    "ppl_random=True draws as many random pairs as --ppl-quantile keeps; pass --ppl-quantile too."
                )
        if self.judge_model is not None and self.method != "online-dpo":
            raise ConfigError(
                f"judge_model applies to method='online-dpo' only (got method={self.method!r}); drop --judge-model."
            )


def _check_int(name: str, value: Any, low: int, why: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name}={value!r} must be an int >= {low}" + (f" ({why})." if why else "."))


def _check_float(name: str, value: Any, ok: Callable[[float], bool], rule: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not ok(value):
        raise ConfigError(f"{name}={value!r} must be a number {rule}.")
