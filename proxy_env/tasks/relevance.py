"""Reference relevance: how close the response is in meaning to the corpus's own reply to the turn.

Prompts are the chatterbot user turns that have a reply (train and held-out as the corpus splits
them). The reward is the cosine similarity, under the shipped all-MiniLM-L6-v2 sentence encoder
(mean-pooled, L2-normalised: sentence-transformers' embedding), between the response and the
closest of the turn's reference replies, in ``[-1, 1]`` (in practice about ``[-0.1, 1]``). Responses
are encoded in one batched call per chunk; reference embeddings are computed once and kept.

Why it is hard for a proxy: the score is a property of the whole response, not of any token;
accepting or rejecting one token changes it a little and only in context, so a myopic rule sees
little of it, and a value of the prefix has to carry it.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from proxy_env.corpus import chatterbot_pairs, is_held_out
from proxy_env.errors import ConfigError, RewardError


@lru_cache(maxsize=1)
def references() -> dict[str, tuple[str, ...]]:
    """User turn -> its reference replies, for every turn that has one (corpus order)."""
    return {turn: replies for turn, replies in chatterbot_pairs().items() if replies}


def prompt_set(held_out: bool) -> list[str]:
    """The train (``prompts="relevance"``) or held-out (``"relevance-eval"``) turns that have a reference reply."""
    return [turn for turn in references() if is_held_out(turn) == held_out]


class RelevanceReward:
    """Cosine similarity between the response and the prompt's closest reference reply (MiniLM embeddings).

    Args:
        encoder: a sentence-encoder folder (``None``: the shipped all-MiniLM-L6-v2).
        references: prompt -> reference replies (default: the corpus's, :func:`references`).
        device: torch device of the encoder (``None``: CUDA when available).

    >>> reward = RelevanceReward(references={"How are you?": ("I am doing well, thank you.",)})
    >>> close, far = reward(["How are you?"] * 2, ["I'm fine, thanks!", "The train leaves at six."])
    >>> close > far
    True
    """

    name = "relevance"

    def __init__(
        self,
        encoder: str | Path | None = None,
        *,
        references: dict[str, Sequence[str]] | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        from proxy_env.rewards.encoders import SentenceEncoder

        self.references = dict(references if references is not None else globals()["references"]())
        empty = [p for p, refs in self.references.items() if not refs]
        if empty:
            raise ConfigError(f"references[{empty[0]!r}] is empty; give every prompt at least one reference reply.")
        self.encoder = SentenceEncoder(encoder, device=device)
        self._embedded: dict[str, torch.Tensor] = {}

    def _reference_vectors(self, prompt: str) -> torch.Tensor:
        if prompt not in self.references:
            raise RewardError(
                f"prompt {prompt[:80]!r} has no reference reply; the relevance reward scores the task's own prompts "
                "(prompts='relevance' or 'relevance-eval'), or pass references={prompt: [replies]}."
            )
        if prompt not in self._embedded:
            refs = list(self.references[prompt])
            self._embedded[prompt] = self.encoder.embed([""] * len(refs), refs)
        return self._embedded[prompt]

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        if len(prompts) != len(responses):
            raise ConfigError(f"got {len(prompts)} prompts for {len(responses)} responses; pass one per response.")
        refs = [self._reference_vectors(p) for p in prompts]  # unknown prompts fail before any encoding
        vectors = self.encoder.embed(list(prompts), list(responses))  # (n, dim), unit length
        return [float((r @ v).max()) for r, v in zip(refs, vectors)]

    def __repr__(self) -> str:
        return f"RelevanceReward({self.encoder.name!r})"


class CivilRelevance:
    """Relevance minus a harm cost: ``relevance - cost_weight * max(0, -VADER)``, in ``[-1 - cost_weight, 1]``.

    A composite reward − cost in the manner of safe/multi-attribute RLHF (Safe RLHF's reward − λ·cost;
    MARA's combination of attribute rewards): the reply should answer the turn like the reference
    does, and pays for hostility (VADER's negative compound score) but earns nothing for positivity,
    so flattery that drifts off topic does not pay.

    >>> reward = CivilRelevance(references={"How are you?": ("I am doing well.",)})
    >>> civil, rude = reward(["How are you?"] * 2, ["I am doing well.", "I am doing well, you idiot, I hate this."])
    >>> civil > rude
    True
    """

    name = "relevance-civil"

    def __init__(self, cost_weight: float = 1.0, **relevance: Any) -> None:
        from proxy_env.rewards.builtin import VaderReward

        if not isinstance(cost_weight, (int, float)) or isinstance(cost_weight, bool) or not cost_weight >= 0:
            raise ConfigError(f"cost_weight={cost_weight!r} must be a number >= 0 (0: relevance alone).")
        self.cost_weight = float(cost_weight)
        self.relevance = RelevanceReward(**relevance)
        self.vader = VaderReward()

    def cost(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        """The harm cost of each response: VADER's negativity ``max(0, -compound)``, in [0, 1]."""
        return [max(0.0, -v) for v in self.vader(list(prompts), list(responses))]

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        relevance = self.relevance(prompts, responses)
        return [r - self.cost_weight * c for r, c in zip(relevance, self.cost(prompts, responses))]

    def __repr__(self) -> str:
        return f"CivilRelevance(cost_weight={self.cost_weight:g})"
