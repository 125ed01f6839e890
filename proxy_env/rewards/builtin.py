"""Reward sources: plain callables ``(prompts, responses) -> list[float]``.

* :class:`VaderReward` — the default: VADER's compound positivity score in [-1, 1] of the response.
* :class:`HFRewardModel` — any ``AutoModelForSequenceClassification`` (batched, truncated).
* any callable with the :class:`RewardFn` signature (:func:`proxy_env.rewards.resolve.resolve_reward`
  turns the env's ``reward=`` argument into one).

:func:`score` calls a source and checks that it returned one finite float per response, naming the
source in the error otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from proxy_env.errors import ConfigError, ConfigTypeError, RewardError, require_package


@runtime_checkable
class RewardFn(Protocol):
    """A reward source: one float per (prompt, response) pair."""

    def __call__(self, prompts: list[str], responses: list[str]) -> Sequence[float]: ...


class VaderReward:
    """VADER compound sentiment of the response, in [-1, 1] (positivity).

    >>> VaderReward()(["q", "q"], ["What a wonderful, happy day!", "This is awful and sad."])[0] > 0.5
    True
    """

    name = "vader"

    def __init__(self) -> None:
        require_package("vaderSentiment", "vadersentiment")
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self._analyzer = SentimentIntensityAnalyzer()

    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        return [float(self._analyzer.polarity_scores(text)["compound"]) for text in responses]

    def __repr__(self) -> str:
        return "VaderReward()"


class HFRewardModel:
    """A Hugging Face sequence-classification model used as a reward.

    Args:
        model: hub id, local folder, or a loaded ``PreTrainedModel`` (then ``tokenizer`` is required).
        tokenizer: its tokenizer (loaded from ``model`` when that is a name).
        label: which logit is the reward: an index, or a label name from ``config.label2id``.
        input_format: ``"pair"`` encodes (prompt, response) as a text pair; ``"response"`` the response alone.
        batch_size: texts per forward.
        max_length: truncation length in tokens.
        device: ``None`` (CUDA when available), ``"cpu"``, ``"cuda"``...
    """

    def __init__(
        self,
        model: str | Path | Any,
        tokenizer: Any = None,
        *,
        label: int | str = 0,
        input_format: str = "pair",
        batch_size: int = 32,
        max_length: int = 512,
        device: str | torch.device | None = None,
    ) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel

        from proxy_env.engine.lm import resolve_device, resolve_model_path
        from proxy_env.errors import check_choice

        check_choice("input_format", input_format, ["pair", "response"])
        if batch_size < 1 or max_length < 1:
            raise ConfigError(f"batch_size={batch_size}, max_length={max_length}: both must be >= 1.")
        self.device = resolve_device(device)
        if isinstance(model, (str, Path)):
            self.name = str(model)
            source = resolve_model_path(str(model))
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(source)
            model = AutoModelForSequenceClassification.from_pretrained(source)
        elif isinstance(model, PreTrainedModel):
            if tokenizer is None:
                raise ConfigError("HFRewardModel got a model object, so tokenizer= is required too.")
            self.name = getattr(model.config, "_name_or_path", "") or type(model).__name__
        else:
            raise ConfigTypeError(f"model must be a hub id, a path or a PreTrainedModel, got {type(model).__name__}.")
        # transformers wraps PreTrainedModel.to with functools.wraps, whose stub drops the bound self
        self.model = model.to(self.device).eval().requires_grad_(False)  # type: ignore[arg-type]
        self.tokenizer = tokenizer
        num_labels = int(self.model.config.num_labels)
        if isinstance(label, str):
            label2id = dict(getattr(self.model.config, "label2id", {}) or {})
            if label not in label2id:
                raise ConfigError(f"label={label!r} is not a label of {self.name}; labels: {list(label2id)}.")
            label = int(label2id[label])
        if not 0 <= label < num_labels:
            raise ConfigError(f"label={label} is out of range for {self.name}, which has {num_labels} logits.")
        self.label, self.input_format = label, input_format
        self.batch_size, self.max_length = batch_size, max_length

    @torch.no_grad()
    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        out: list[float] = []
        for start in range(0, len(responses), self.batch_size):
            chunk = slice(start, start + self.batch_size)
            args = (prompts[chunk], responses[chunk]) if self.input_format == "pair" else (responses[chunk],)
            enc = self.tokenizer(*args, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
            logits = self.model(**enc.to(self.device)).logits  # (n, num_labels)
            out.extend(logits[:, self.label].float().cpu().tolist())
        return out

    def __repr__(self) -> str:
        return f"HFRewardModel({self.name!r}, label={self.label})"


def reward_name(fn: Any) -> str:
    """A readable name for a reward source, for errors and logs."""
    return getattr(fn, "name", None) or getattr(fn, "__name__", None) or type(fn).__name__


_REAL = object()  # a marker: every value was a real number


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def score(fn: RewardFn, prompts: list[str], responses: list[str]) -> np.ndarray:
    """Call a reward source and validate: one finite float per response, as a float64 array (n,)."""
    try:
        values = fn(list(prompts), list(responses))
    except RewardError:
        raise
    except Exception as exc:  # the source's own failure, named (the caller adds what it means for the env)
        raise RewardError(f"reward source {reward_name(fn)!r} raised {type(exc).__name__}: {exc}.") from exc
    if values is None or isinstance(values, (str, bytes, dict)) or np.ndim(values) == 0:
        raise RewardError(
            f"reward source {reward_name(fn)!r} returned {type(values).__name__}, not a list of floats "
            f"(one per response)."
        )
    odd = next((v for v in np.asarray(values, dtype=object).reshape(-1) if not _is_real(v)), _REAL)
    if odd is not _REAL:  # "0.5" or True would be coerced to a float without a word
        raise RewardError(
            f"reward source {reward_name(fn)!r} returned {odd!r} ({type(odd).__name__}) among its values; "
            "return one int or float per response (not strings or bools)."
        )
    try:
        array = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise RewardError(
            f"reward source {reward_name(fn)!r} returned {type(values).__name__}, not a list of floats."
        ) from exc
    if array.shape[0] != len(responses):
        raise RewardError(
            f"reward source {reward_name(fn)!r} returned {array.shape[0]} values for {len(responses)} responses; "
            "it must return exactly one float per response."
        )
    bad = [i for i, v in enumerate(array) if not math.isfinite(v)]
    if bad:
        raise RewardError(
            f"reward source {reward_name(fn)!r} returned {array[bad[0]]} for response {bad[0]} "
            f"({responses[bad[0]][:60]!r}); rewards must be finite."
        )
    return array
