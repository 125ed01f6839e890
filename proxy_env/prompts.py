"""Prompt sources: the embedded chatterbot-corpus split, lists, text/JSONL files, local datasets.

The default prompts are the user turns of the English conversations in the ``chatterbot-corpus``
wheel (BSD): every even-indexed turn of every conversation, deduplicated. They are split into fixed,
disjoint train and eval sets by a hash of the text (about 30% go to eval, so that at least 200 are held out), so the split
does not depend on file order or on the corpus version's other files.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from proxy_env.corpus import chatterbot_prompts
from proxy_env.errors import ConfigError, ConfigTypeError, DataError, require_package

PROMPT_SETS = ("default", "default-eval")  # the chatterbot user turns; the tasks' sets: proxy_env.tasks.PROMPT_SETS


def prompt_set_names() -> list[str]:
    """Every named prompt set ``load_prompts`` takes: the default ones, then each task's train and held-out set."""
    from proxy_env.tasks import PROMPT_SETS as TASK_SETS

    return [*PROMPT_SETS, *TASK_SETS]


TEXT_SUFFIXES = (".txt", ".text", ".prompts")  # files read one prompt per line


def load_prompts(
    prompts: str | Path | Sequence[str] = "default", *, column: str = "prompt", arg: str = "prompts"
) -> list[str]:
    """Resolve a prompt source into a non-empty list of strings.

    Args:
        prompts: ``"default"`` (chatterbot train split), ``"default-eval"`` (held-out split), a list
            of strings, a ``.txt`` file (one prompt per line), a ``.jsonl`` file (field ``column``),
            or a local ``datasets`` folder saved with ``save_to_disk`` (column ``column``).
        column: the field holding the prompt in JSONL files and datasets.
        arg: the argument errors name (``eval_prompts`` for the held-out prompts of training).

    >>> train, held_out = load_prompts("default"), load_prompts("default-eval")
    >>> len(train) > 500 and len(held_out) >= 200 and not set(train) & set(held_out)
    True
    """
    if isinstance(prompts, str) and prompts in PROMPT_SETS:
        train, held_out = chatterbot_prompts()
        return list(train if prompts == "default" else held_out)
    if isinstance(prompts, str) and prompts in prompt_set_names():
        from proxy_env.tasks import prompt_set

        return prompt_set(prompts)
    if isinstance(prompts, (str, Path)):
        return _load_path(Path(prompts).expanduser(), column, arg)
    if isinstance(prompts, Sequence):
        items = list(prompts)
        bad = [i for i, p in enumerate(items) if not isinstance(p, str) or not p.strip()]
        if bad:
            raise ConfigError(f"prompts[{bad[0]}]={items[bad[0]]!r}: every prompt must be a non-empty string.")
        if not items:
            raise ConfigError("prompts=[] is empty; pass at least one prompt or 'default'.")
        return items
    raise ConfigTypeError(
        f"prompts must be 'default', 'default-eval', a list of strings or a path, got {type(prompts).__name__}."
    )


def _load_path(path: Path, column: str, arg: str) -> list[str]:
    if not path.exists():
        raise ConfigError(
            f"{arg}={str(path)!r}: no such file or folder; expected one of {prompt_set_names()}, a list, or a .txt/.jsonl/datasets path."
        )
    if path.is_dir():
        require_package("datasets", extra="datasets")
        import datasets

        try:
            data = datasets.load_from_disk(str(path))
        except (FileNotFoundError, ValueError) as exc:
            raise DataError(
                f"{arg}={str(path)!r} is a folder but not a saved datasets folder ({exc}); pass a .txt/.jsonl "
                "file or a folder written by Dataset.save_to_disk."
            ) from exc
        if isinstance(data, datasets.DatasetDict):
            data = data["train"] if "train" in data else data[next(iter(data))]
        if column not in data.column_names:
            raise DataError(
                f"dataset {str(path)!r} has no column {column!r}; columns: {data.column_names}. Pass column=."
            )
        return load_prompts([str(x) for x in data[column]])
    if path.suffix == ".jsonl":
        out = []
        for number, line in enumerate(_read_text(path, arg).splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{number}: not valid JSON ({exc.msg}).") from exc
            if not isinstance(record, dict) or not isinstance(record.get(column), str):
                raise DataError(f"{path}:{number}: expected an object with a string field {column!r}.")
            out.append(record[column])
        return _named(out, path, arg)
    if path.suffix not in TEXT_SUFFIXES:  # a .csv's header would become a prompt; a .json would be read as lines
        raise ConfigError(
            f"{arg}={str(path)!r}: a {path.suffix or 'suffix-less'} file is not read as prompts; pass a .txt file "
            "(one prompt per line), a .jsonl file (a 'prompt' field per line) or a saved datasets folder."
        )
    lines = [line.strip() for line in _read_text(path, arg).splitlines()]
    return _named([line for line in lines if line], path, arg)


def _named(items: list[str], path: Path, arg: str) -> list[str]:
    """``load_prompts(items)``, but an empty file is named as the file, not as an empty list."""
    if not items:
        raise ConfigError(
            f"{arg}={str(path)!r} holds no prompt (empty, or blank lines only); pass a file with prompts."
        )
    return load_prompts(items)


def _read_text(path: Path, arg: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{arg}={str(path)!r} is not UTF-8 text (byte {exc.start}: {exc.reason}); pass a .txt file with one "
            "prompt per line or a .jsonl file."
        ) from exc
