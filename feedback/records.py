"""Preference records and their JSONL files.

A preference record is one line of JSON::

    {"prompt": str, "chosen": str, "rejected": str, "source": str,
     "margin": float | null, "ppl_chosen": float | null, "ppl_rejected": float | null}

``margin`` is how strongly the source preferred ``chosen`` (a reward difference, a judge's
probability gap; ``null`` when the source gives none, e.g. a parsed judge answer or a human label).
``ppl_*`` are the responses' perplexities under the target LLM (``null`` when not measured or when a
response is empty). Reading raises :class:`~proxy_env.errors.DataError` naming the file and line;
writing goes through a temporary file and a rename, so a failure leaves nothing behind.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from proxy_env.errors import ConfigError, DataError

FIELDS = ("prompt", "chosen", "rejected", "source", "margin", "ppl_chosen", "ppl_rejected")


@dataclass(frozen=True)
class PreferencePair:
    """One labelled comparison: ``chosen`` was preferred to ``rejected`` for ``prompt``."""

    prompt: str
    chosen: str
    rejected: str
    source: str
    margin: float | None = None
    ppl_chosen: float | None = None
    ppl_rejected: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for every non-blank line; :class:`DataError` names a bad line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file; pass an existing JSONL file (one JSON object per line).")
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:  # a latin-1 export, say: name the line, not "a bug"
                raise DataError(
                    f"{path}, line {number}: not UTF-8 text (byte {exc.start}: {exc.reason}); re-save the file as UTF-8."
                ) from exc
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(
                    f"{path}, line {number}: not valid JSON ({exc.msg}); each line must be one JSON object."
                ) from exc
            if not isinstance(record, dict):
                raise DataError(f"{path}, line {number}: expected a JSON object, got {type(record).__name__}.")
            yield number, record


def _text(record: dict[str, Any], key: str, where: str) -> str:
    value = record.get(key)
    if not isinstance(value, str):
        got = "missing" if key not in record else f"{type(value).__name__} {value!r}"[:80]
        raise DataError(f"{where}: field {key!r} must be a string, got {got}.")
    return value


def _number(record: dict[str, Any], key: str, where: str) -> float | None:
    value = record.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError(f"{where}: field {key!r} must be a number or null, got {value!r}.")
    return float(value)


def parse_record(record: dict[str, Any], where: str, default_source: str = "human") -> PreferencePair:
    """One preference record from either accepted layout.

    * ``{prompt, chosen, rejected, [source, margin, ppl_chosen, ppl_rejected]}``;
    * ``{prompt, response_1, response_2, preferred}`` with ``preferred`` 1 or 2 (a human label).
    """
    prompt = _text(record, "prompt", where)
    if "chosen" in record or "rejected" in record:
        chosen, rejected = _text(record, "chosen", where), _text(record, "rejected", where)
    elif "response_1" in record:
        first, second = _text(record, "response_1", where), _text(record, "response_2", where)
        preferred = record.get("preferred")
        if preferred not in (1, 2, "1", "2") or isinstance(preferred, bool):
            raise DataError(f"{where}: field 'preferred' must be 1 or 2, got {preferred!r}.")
        chosen, rejected = (first, second) if int(preferred) == 1 else (second, first)
    else:
        raise DataError(
            f"{where}: a preference record needs 'prompt', 'chosen' and 'rejected' (or 'response_1', 'response_2' "
            f"and 'preferred'); got keys {sorted(record)}."
        )
    source = record.get("source", default_source)
    if not isinstance(source, str):
        raise DataError(f"{where}: field 'source' must be a string, got {source!r}.")
    numbers = {key: _number(record, key, where) for key in ("margin", "ppl_chosen", "ppl_rejected")}
    return PreferencePair(prompt, chosen, rejected, source, **numbers)


def load_pairs(path: str | Path, default_source: str = "human") -> list[PreferencePair]:
    """All preference records of a JSONL file (see :func:`parse_record` for the layouts)."""
    pairs = [parse_record(record, f"{path}, line {number}", default_source) for number, record in read_jsonl(path)]
    if not pairs:
        raise DataError(f"{path}: holds no preference records; expected one JSON object per line.")
    return pairs


def load_pair_files(paths: Sequence[str | Path], default_source: str = "human") -> list[PreferencePair]:
    """The records of several JSONL files, in order (e.g. preference sets built with different seeds)."""
    if isinstance(paths, (str, Path)) or not paths:
        raise ConfigError(f"paths={paths!r} must be a non-empty list of JSONL files.")
    return [pair for path in paths for pair in load_pairs(path, default_source)]


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any] | PreferencePair]) -> int:
    """Write records atomically (temporary file + rename); return how many were written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    count = 0
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            for record in records:
                data = record.to_json() if isinstance(record, PreferencePair) else record
                handle.write(json.dumps(data, ensure_ascii=False, allow_nan=False) + "\n")
                count += 1
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return count
