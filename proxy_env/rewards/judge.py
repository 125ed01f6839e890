"""An LLM as judge (online AI feedback, OAIF): shown a prompt and two responses, it answers "1" or "2".

Two ways to read the answer:

* ``mode="logits"`` (default): the next-token logits of ``"1"`` and ``"2"`` after the judge prompt;
  ``P(1) = softmax(l1, l2)[0]``. Never fails to parse; the margin is ``|P(1) - P(2)|``.
* ``mode="generate"``: a short greedy answer, parsed for the first ``1`` or ``2`` standing alone as a
  word (``"Answer: 2."`` is 2; the digits of ``"10/10"`` are not an answer). A reply with neither is a
  *parse failure*: counted in :attr:`LLMJudge.stats` and the pair is dropped.

Which response is shown first is drawn at random (seeded) per pair and mapped back, so the judge's
position bias cancels on average; :attr:`JudgeStats.position1_rate` reports how often the response
shown first won (0.5 for an unbiased judge).
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

from proxy_env.errors import ConfigError, check_choice


class Preference(NamedTuple):
    """One label: does the first response win? ``None``: a tie or an unusable answer (dropped)."""

    first_wins: bool | None
    margin: float | None  # strength of the preference; None when the source gives none
    failed: bool = False  # the source could not answer (e.g. a judge's unparsable reply)


DEFAULT_TEMPLATE = (
    "Compare two replies to a user's message.\n\nUser message: {prompt}\n\nReply 1: {response_1}\n\n"
    "Reply 2: {response_2}\n\nWhich reply is more positive, friendly and helpful? Answer with one digit: 1 or 2."
)
TEMPLATE_FIELDS = {"prompt", "response_1", "response_2"}
MODES = ("logits", "generate")
_ANSWER = re.compile(r"\b[12]\b")  # a lone digit: not the "1" of "10/10" or "12"


@dataclass
class JudgeStats:
    """Running counts over every judgment the judge has made."""

    judgments: int = 0
    parse_failures: int = 0
    position1_wins: int = 0  # judgments won by the response shown first

    @property
    def parse_failure_rate(self) -> float:
        return self.parse_failures / self.judgments if self.judgments else 0.0

    @property
    def position1_rate(self) -> float:
        answered = self.judgments - self.parse_failures
        return self.position1_wins / answered if answered else float("nan")


def check_template(template: str) -> str:
    """The template must use exactly the fields {prompt}, {response_1} and {response_2}."""
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise ConfigError(
            f"judge template is not a valid format string ({exc}); write literal braces as '{{{{' and '}}}}'."
        ) from exc
    if fields != TEMPLATE_FIELDS:
        raise ConfigError(
            f"judge template fields are {sorted(fields)}; it must contain exactly {sorted(TEMPLATE_FIELDS)} "
            "(e.g. '... {prompt} ... {response_1} ... {response_2} ... Answer 1 or 2.')."
        )
    return template


class LLMJudge:
    """A frozen LLM that says which of two responses is better.

    Args:
        lm: the judge, a :class:`~proxy_env.engine.lm.FrozenLM` (any size; tests use the tiny model).
        template: the judge prompt with ``{prompt}``, ``{response_1}``, ``{response_2}``.
        mode: ``"logits"`` or ``"generate"`` (see the module docstring).
        batch_size: judge prompts per forward.
        max_new_tokens: reply length in ``"generate"`` mode.
        randomize_order: show the two responses in a random (seeded) order.
        seed: seed of the order.
    """

    def __init__(
        self,
        lm: Any,
        *,
        template: str = DEFAULT_TEMPLATE,
        mode: str = "logits",
        batch_size: int = 8,
        max_new_tokens: int = 4,
        randomize_order: bool = True,
        seed: int = 0,
    ) -> None:
        check_choice("mode", mode, MODES)
        self.template = check_template(template)
        if batch_size < 1 or max_new_tokens < 1:
            raise ConfigError(f"batch_size={batch_size}, max_new_tokens={max_new_tokens}: both must be >= 1.")
        self.lm, self.mode, self.batch_size, self.max_new_tokens = lm, mode, batch_size, max_new_tokens
        self.randomize_order = randomize_order
        self.rng = np.random.default_rng(seed)
        self.stats = JudgeStats()
        self.name = f"judge:{getattr(lm, 'name', 'lm') or 'lm'}"
        # only logits mode reads the digits' logits; generate mode parses text with any tokenizer
        self.answer_ids = [_single_token(lm.tokenizer, digit) for digit in ("1", "2")] if mode == "logits" else []

    def _prompts(self, prompts: list[str], first: list[str], second: list[str]) -> list[str]:
        return [self.template.format(prompt=p, response_1=a, response_2=b) for p, a, b in zip(prompts, first, second)]

    @torch.no_grad()
    def prob_first(self, prompts: list[str], first: list[str], second: list[str]) -> list[float | None]:
        """P(the response shown first is better) per pair, in the order given; None: unparsable reply."""
        texts = self._prompts(prompts, first, second)
        out: list[float | None] = []
        for start in range(0, len(texts), self.batch_size):
            chunk = texts[start : start + self.batch_size]
            out.extend(self._logit_probs(chunk) if self.mode == "logits" else self._parsed(chunk))
        return out

    def _logit_probs(self, texts: list[str]) -> list[float]:
        lm = self.lm
        logits = lm.forward_padded([lm.encode_prompt(t) for t in texts], last_only=True).logits  # (n, 1, V)
        pair = logits[:, -1, self.answer_ids]  # (n, 2): logits of "1" and "2"
        return torch.softmax(pair, dim=-1)[:, 0].tolist()

    def _parsed(self, texts: list[str]) -> list[float | None]:
        replies = self.lm.generate(texts, max_new_tokens=self.max_new_tokens, do_sample=False)
        out: list[float | None] = []
        for reply in replies:
            match = _ANSWER.search(reply)
            out.append(None if match is None else (1.0 if match.group() == "1" else 0.0))
        return out

    def label(self, prompts: list[str], first: list[str], second: list[str]) -> list[Preference]:
        """Judge each pair with a random presentation order, mapped back to ``first``/``second``."""
        if not len(prompts) == len(first) == len(second):
            raise ConfigError(
                f"label() got {len(prompts)} prompts, {len(first)} and {len(second)} responses; they must match."
            )
        n = len(prompts)
        swap = self.rng.random(n) < 0.5 if self.randomize_order else np.zeros(n, dtype=bool)
        shown_a = [b if s else a for a, b, s in zip(first, second, swap)]
        shown_b = [a if s else b for a, b, s in zip(first, second, swap)]
        probs = self.prob_first(list(prompts), shown_a, shown_b)
        out = []
        for p, s in zip(probs, swap):
            self.stats.judgments += 1
            if p is None:
                self.stats.parse_failures += 1
                out.append(Preference(None, None, failed=True))
                continue
            self.stats.position1_wins += int(p > 0.5)
            p_first = 1.0 - p if s else p  # P(``first`` is better)
            margin = abs(2.0 * p - 1.0) if self.mode == "logits" else None
            out.append(Preference(None if p == 0.5 else bool(p_first > 0.5), margin))
        return out


def _single_token(tokenizer: Any, text: str) -> int:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ConfigError(
            f"the judge's tokenizer encodes {text!r} as {len(ids)} tokens; mode='logits' needs one. Use mode='generate'."
        )
    return int(ids[0])
