"""Online pairwise reward: a judge compares the proxy-steered response with the unsteered LLM's.

``reward = 1`` when the judge prefers the steered response, ``0`` when it prefers the LLM's own,
``0.5`` for a tie. The unsteered response for a prompt is the LLM's greedy answer (cached per
prompt) or a fresh sample, drawn from a seeded, forked RNG (the ``k``-th call uses ``seed + k``, so a
run's rewards are reproducible and the caller's global RNG is left alone). The judge sees each pair in both orders and the two verdicts are
averaged, which cancels its position bias; a pair is a tie when the averaged probability is within
``tie_band`` of 0.5 (or the texts are identical, or every reply failed to parse).

In the env: ``reward="pairwise"`` builds this reward with the env's own LLM as judge and reference
(``max_new_tokens``, ``top_k``... of the env).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from proxy_env.config import EnvConfig
from proxy_env.errors import ConfigError, check_choice
from proxy_env.rewards.judge import LLMJudge

REFERENCES = ("greedy", "sample")


class PairwiseJudgeReward:
    """Win (1) / tie (0.5) / loss (0) of a response against the unsteered LLM's response, by an LLM judge.

    Args:
        lm: the frozen LLM that produces the unsteered response.
        judge: an :class:`LLMJudge` (default: ``lm`` judging itself, ``mode="logits"``).
        reference: ``"greedy"`` (cached per prompt) or ``"sample"`` (a fresh sample per call).
        max_new_tokens, top_k, top_p, temperature: how the unsteered response is generated.
        tie_band: |P(steered better) − 0.5| below this is a tie.
        batch_size: prompts per reference ``generate`` call.
        seed: seed of the ``"sample"`` references (call ``k`` draws with ``seed + k``).
    """

    def __init__(
        self,
        lm: Any,
        judge: LLMJudge | None = None,
        *,
        reference: str = "greedy",
        max_new_tokens: int = 32,
        top_k: int = EnvConfig.top_k,
        top_p: float = EnvConfig.top_p,
        temperature: float = EnvConfig.temperature,
        tie_band: float = 0.05,
        batch_size: int = 16,
        seed: int = 0,
    ) -> None:
        check_choice("reference", reference, REFERENCES)
        if not 0.0 <= tie_band < 0.5:
            raise ConfigError(f"tie_band={tie_band!r} must be in [0, 0.5).")
        self.lm, self.judge = lm, judge if judge is not None else LLMJudge(lm, randomize_order=False)
        self.reference, self.tie_band, self.batch_size = reference, float(tie_band), batch_size
        self.sampling = {"max_new_tokens": max_new_tokens, "top_k": top_k, "top_p": top_p, "temperature": temperature}
        self.cache: dict[str, str] = {}
        self.seed, self.sample_calls = int(seed), 0
        self.name = f"pairwise({self.judge.name} vs {reference})"

    def references(self, prompts: list[str]) -> list[str]:
        """The unsteered LLM's response to each prompt."""
        if self.reference == "sample":
            return self._samples(prompts)
        todo = sorted({p for p in prompts if p not in self.cache})
        for s in range(0, len(todo), self.batch_size):
            chunk = todo[s : s + self.batch_size]
            texts = self.lm.generate(chunk, max_new_tokens=self.sampling["max_new_tokens"], do_sample=False)
            self.cache.update(zip(chunk, texts))
        return [self.cache[p] for p in prompts]

    def _samples(self, prompts: list[str]) -> list[str]:
        """One fresh sample per prompt, seeded with ``seed + k`` on the ``k``-th call, inside a forked RNG."""
        device = torch.device(getattr(self.lm, "device", "cpu"))
        with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
            torch.manual_seed(self.seed + self.sample_calls)
            self.sample_calls += 1
            return [
                t
                for s in range(0, len(prompts), self.batch_size)
                for t in self.lm.generate(prompts[s : s + self.batch_size], do_sample=True, **self.sampling)
            ]

    def prob_better(self, prompts: list[str], responses: list[str], others: list[str]) -> np.ndarray:
        """P(response better than other), averaged over both presentation orders; NaN when no reply parsed."""
        forward = self.judge.prob_first(prompts, responses, others)
        backward = self.judge.prob_first(prompts, others, responses)
        out = []
        for f, b in zip(forward, backward):
            votes = [v for v in (f, None if b is None else 1.0 - b) if v is not None]
            out.append(float(np.mean(votes)) if votes else float("nan"))
        return np.array(out)

    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        others = self.references(list(prompts))
        prob = self.prob_better(list(prompts), list(responses), others)
        rewards = np.where(prob > 0.5 + self.tie_band, 1.0, np.where(prob < 0.5 - self.tie_band, 0.0, 0.5))
        rewards[np.isnan(prob) | np.array([a == b for a, b in zip(responses, others)], dtype=bool)] = 0.5
        return rewards.tolist()

    def __repr__(self) -> str:
        return f"PairwiseJudgeReward({self.name!r})"
