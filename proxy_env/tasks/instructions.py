"""Instruction following with verifiable rewards: IFEval's instructions on the chatterbot user turns.

Each prompt is a chatterbot user turn with one or two instructions appended, chosen and filled in
deterministically from a hash of the turn (so a prompt's instructions never change, and the train
and held-out prompts keep the corpus split). The instruction text and its checker both come from
IFEval's registry in ``lm-eval`` (``lm_eval.tasks.ifeval``, Apache-2.0): nothing is checked by a
checker of ours. The reward is the fraction of the prompt's instructions the response follows, in
``[0, 1]``.

Offline: lm-eval's ``instructions_util`` fetches NLTK's ``punkt_tab`` when it is imported. Only
instructions whose checkers need no NLTK data are used (sentence counts need punkt; word counts use
a regular expression), and the import runs with ``nltk.download`` disabled, so nothing is fetched.
``langdetect`` (the English check of the case instructions) is seeded (``DetectorFactory.seed = 0``:
its detector is random otherwise) so that a reward never changes between calls.

:data:`KINDS` says which instructions a proxy can follow myopically (every violating token is
visible when it is offered, so rejecting it suffices) and which need lookahead (something must be
written, or the response must end in time).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from proxy_env.corpus import chatterbot_prompts
from proxy_env.errors import ConfigError, MissingDependencyError, RewardError

INSTALL = "pip install 'lm-eval[ifeval]==0.4.13'"

# instruction id -> "myopic" (rejecting what violates it suffices) or "lookahead" (it asks for something to be written)
KINDS: dict[str, str] = {
    "punctuation:no_comma": "myopic",
    "change_case:english_lowercase": "myopic",
    "change_case:english_capital": "myopic",
    "keywords:forbidden_words": "myopic",
    "keywords:letter_frequency": "myopic",  # "less than" is myopic; "at least" needs lookahead (see kind())
    "keywords:existence": "lookahead",
    "length_constraints:number_words": "lookahead",
    "detectable_content:postscript": "lookahead",
    "startend:end_checker": "lookahead",
    "startend:quotation": "lookahead",
    "detectable_format:title": "lookahead",
    "detectable_format:number_highlighted_sections": "lookahead",
}
COMMON_WORDS = ("the", "you", "is", "and", "to", "it", "of", "that", "are", "my", "what", "can", "have", "not")
EVERYDAY_WORDS = ("friend", "happy", "music", "time", "world", "help", "today", "love", "idea", "learn", "people")
END_PHRASES = ("Is there anything else I can help with?", "Any other questions?", "Thank you.", "Have a nice day!")


@lru_cache(maxsize=1)
def registry() -> Any:
    """lm-eval's IFEval instruction registry module, imported without its NLTK download."""
    try:
        import nltk
    except ImportError as exc:
        raise MissingDependencyError(f"the instructions task needs lm-eval's IFEval checkers: {INSTALL}") from exc
    real = nltk.download
    nltk.download = lambda *args, **kwargs: False  # no checker we use needs punkt
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # it prints "Downloaded punkt_tab" whatever happened
            from lm_eval.tasks.ifeval import instructions_registry
    except ImportError as exc:
        raise MissingDependencyError(f"the instructions task needs lm-eval's IFEval checkers: {INSTALL}") from exc
    finally:
        nltk.download = real
    import langdetect

    langdetect.DetectorFactory.seed = 0
    return instructions_registry


def _conflict(a: str, b: str) -> bool:
    conflicts = registry().INSTRUCTION_CONFLICTS
    return a == b or b in conflicts.get(a, ()) or a in conflicts.get(b, ())


def instruction_args(base: str) -> list[tuple[str, dict[str, Any]]]:
    """The instructions attached to the user turn ``base``: 1 or 2 (id, checker kwargs), from a hash of the turn."""
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(base.encode("utf-8")).digest()[:8], "little"))
    ids = list(KINDS)
    chosen = [ids[int(rng.integers(len(ids)))]]
    if rng.random() < 0.5:
        rest = [i for i in ids if not _conflict(chosen[0], i)]
        chosen.append(rest[int(rng.integers(len(rest)))])
    return [(name, _draw_args(name, rng)) for name in chosen]


def _draw_args(name: str, rng: np.random.Generator) -> dict[str, Any]:
    """Arguments sized for a ~48-token response (IFEval's own ranges ask for hundreds of words)."""
    pick = lambda options: options[int(rng.integers(len(options)))]  # noqa: E731
    if name == "keywords:forbidden_words":
        return {"forbidden_words": [str(w) for w in rng.choice(COMMON_WORDS, 2, replace=False)]}
    if name == "keywords:existence":
        return {"keywords": [str(w) for w in rng.choice(EVERYDAY_WORDS, int(rng.integers(1, 3)), replace=False)]}
    if name == "keywords:letter_frequency":
        relation = pick(("less than", "at least"))
        low, high = (3, 7) if relation == "less than" else (6, 13)
        return {"letter": pick("etaoinsr"), "let_frequency": int(rng.integers(low, high)), "let_relation": relation}
    if name == "length_constraints:number_words":
        relation = pick(("less than", "at least"))
        low, high = (8, 21) if relation == "less than" else (20, 33)
        return {"num_words": int(rng.integers(low, high)), "relation": relation}
    if name == "detectable_content:postscript":
        return {"postscript_marker": "P.S."}
    if name == "startend:end_checker":
        return {"end_phrase": pick(END_PHRASES)}
    if name == "detectable_format:number_highlighted_sections":
        return {"num_highlights": int(rng.integers(1, 3))}
    return {}


def kind(name: str, args: dict[str, Any]) -> str:
    """``"myopic"`` or ``"lookahead"`` for an instruction with its arguments."""
    if name == "keywords:letter_frequency" and args.get("let_relation") == "at least":
        return "lookahead"
    return KINDS[name]


def checker(name: str, args: dict[str, Any]) -> tuple[Any, str]:
    """IFEval's checker object for ``name`` built with ``args``, and the instruction text it generates."""
    instruction = registry().INSTRUCTION_DICT[name](name)
    return instruction, str(instruction.build_description(**args))


def with_instructions(base: str) -> str:
    """The prompt: the user turn, then the text of each of its instructions."""
    text = base if base[-1] in ".?!" else base + "."
    return " ".join([text] + [checker(name, args)[1] for name, args in instruction_args(base)])


@lru_cache(maxsize=1)
def instruction_prompts() -> dict[str, tuple[str, bool]]:
    """Every instruction prompt -> (its user turn, held out?), in corpus order (train turns first)."""
    train, held_out = chatterbot_prompts()
    out: dict[str, tuple[str, bool]] = {}
    for base, is_eval in [(t, False) for t in train] + [(t, True) for t in held_out]:
        out.setdefault(with_instructions(base), (base, is_eval))
    return out


def prompt_set(held_out: bool) -> list[str]:
    """The train (``prompts="instructions"``) or held-out (``"instructions-eval"``) instruction prompts."""
    return [prompt for prompt, (_, is_eval) in instruction_prompts().items() if is_eval == held_out]


class InstructionReward:
    """The fraction of a prompt's IFEval instructions that the response follows, in [0, 1].

    The prompt must be one of the task's (``prompts="instructions"`` or ``"instructions-eval"``): its
    instructions are looked up, not parsed out of the text.

    >>> reward = InstructionReward()
    >>> prompt = next(p for p in reward.prompts if "commas" in p and len(reward.instructions(p)) == 1)
    >>> reward([prompt, prompt], ["Yes I think so.", "Yes, I think so."])
    [1.0, 0.0]
    """

    name = "instructions"

    def __init__(self) -> None:
        registry()  # fail now, naming the install, not at the first score
        self.prompts = instruction_prompts()

    def instructions(self, prompt: str) -> list[tuple[str, dict[str, Any]]]:
        """The (id, arguments) of each instruction of ``prompt``; a clear error for a prompt not of this task."""
        if prompt not in self.prompts:
            raise RewardError(
                f"prompt {prompt[:80]!r} is not one of the instructions task's prompts, so its instructions are "
                "unknown; use prompts='instructions' or 'instructions-eval' with reward='instructions'."
            )
        return instruction_args(self.prompts[prompt][0])

    def followed(self, prompt: str, response: str) -> list[tuple[str, str, bool]]:
        """(instruction id, its kind, followed?) of each instruction of ``prompt``."""
        out = []
        for name, args in self.instructions(prompt):
            instruction, _ = checker(name, args)
            ok = bool(response.strip()) and bool(instruction.check_following(response))
            out.append((name, kind(name, args), ok))
        return out

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        if len(prompts) != len(responses):
            raise ConfigError(f"got {len(prompts)} prompts for {len(responses)} responses; pass one per response.")
        return [float(np.mean([ok for *_, ok in self.followed(p, r)])) for p, r in zip(prompts, responses)]

    def __repr__(self) -> str:
        return "InstructionReward()"


def per_instruction(prompts: Sequence[str], responses: Sequence[str]) -> dict[str, tuple[str, int, int]]:
    """Instruction id (and ``id [at least]`` for letter counts) -> (kind, followed, total) over the responses."""
    reward = InstructionReward()
    table: dict[str, list[Any]] = {}
    for prompt, response in zip(prompts, responses):
        for (name, args), (_, how, ok) in zip(reward.instructions(prompt), reward.followed(prompt, response)):
            key = f"{name} [{args['let_relation']}]" if name == "keywords:letter_frequency" else name
            row = table.setdefault(key, [how, 0, 0])
            row[1], row[2] = row[1] + int(ok), row[2] + 1
    return {key: (how, followed, total) for key, (how, followed, total) in sorted(table.items())}
