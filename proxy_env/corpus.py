"""The embedded conversation corpus: ``chatterbot-corpus``'s English conversations (BSD), read once.

Two views, split the same way into fixed, disjoint train and held-out parts by a hash of the user turn
(about 30% held out), so that the split does not depend on file order or on the corpus version's
other files, and a held-out turn is held out in every task built on it:

* :func:`chatterbot_prompts`: the user turns (every even-indexed turn of every conversation),
  deduplicated: the default prompts.
* :func:`chatterbot_pairs`: each user turn with the bot replies that follow it anywhere in the corpus
  (the references of the relevance task).
"""

from __future__ import annotations

import hashlib
import importlib.util
from functools import lru_cache
from pathlib import Path

from proxy_env.errors import ConfigError

MIN_CHARS, MAX_CHARS = 4, 200  # user turns outside this length are not prompts


def corpus_dir() -> Path:
    """The ``data/english`` folder of the installed ``chatterbot-corpus`` wheel."""
    spec = importlib.util.find_spec("chatterbot_corpus")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "prompts='default' needs the package 'chatterbot-corpus': pip install chatterbot-corpus==1.3.3"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "english"


def is_held_out(text: str) -> bool:
    """Whether a user turn belongs to the held-out split (a hash of its text: ~30%)."""
    return hashlib.sha1(text.encode("utf-8")).digest()[0] % 10 < 3


def _clean(turn: object) -> str:
    return " ".join(str(turn).split())


@lru_cache(maxsize=1)
def _conversations() -> tuple[tuple[str, ...], ...]:
    import yaml

    out = []
    for path in sorted(corpus_dir().glob("*.yml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        out += [tuple(_clean(t) for t in conversation) for conversation in data.get("conversations") or []]
    return tuple(out)


@lru_cache(maxsize=1)
def chatterbot_pairs() -> dict[str, tuple[str, ...]]:
    """Every user turn (even index, ``MIN_CHARS``–``MAX_CHARS`` long) -> the distinct replies that follow it.

    A turn with no reply (a conversation's last) maps to ``()``; insertion order is the corpus order.
    """
    pairs: dict[str, dict[str, None]] = {}
    for conversation in _conversations():
        for i in range(0, len(conversation), 2):  # user turns; odd turns are the bot's answers
            text = conversation[i]
            if MIN_CHARS <= len(text) <= MAX_CHARS:
                replies = pairs.setdefault(text, {})
                if i + 1 < len(conversation) and conversation[i + 1]:
                    replies.setdefault(conversation[i + 1], None)
    return {text: tuple(replies) for text, replies in pairs.items()}


@lru_cache(maxsize=1)
def chatterbot_prompts() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The (train, held-out) user turns of chatterbot-corpus/english, disjoint and deterministic."""
    texts = list(chatterbot_pairs())
    return tuple(t for t in texts if not is_held_out(t)), tuple(t for t in texts if is_held_out(t))
