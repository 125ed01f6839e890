"""Checkpoints of a trained proxy: a folder with ``proxy.zip`` (SB3's ``model.save``) and ``meta.json``.

``meta.json`` records what is needed to rebuild the environment and the agent: the algorithm's
registry name, the environment's keyword arguments as plain data, the seed, the package version and
the checkpoint format version. Saving is atomic: everything is written to a temporary sibling
folder which then replaces the old checkpoint by renames, so an interrupted save leaves the previous
checkpoint intact.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import proxy_env
from proxy_env.errors import ConfigError, DataError

from agents.algos import ALGOS, algo_name, get_algo

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MODEL_FILE = "proxy.zip"
META_FILE = "meta.json"


class CheckpointError(DataError):
    """A checkpoint folder is missing, corrupted, or written by an incompatible version (a ``ValueError``)."""


@dataclass
class CheckpointMeta:
    """The contents of ``meta.json``."""

    algo: str
    env_kwargs: dict[str, Any]
    seed: int | None = None
    num_timesteps: int = 0
    package_version: str = proxy_env.__version__
    format_version: int = FORMAT_VERSION
    config: dict[str, Any] = field(default_factory=dict)  # the TrainConfig that produced it, if any


class Checkpoint(NamedTuple):
    """A loaded checkpoint: the SB3 model and its metadata."""

    model: Any
    meta: CheckpointMeta


def plain(value: Any) -> Any:
    """``value`` as JSON-able plain data; objects (a loaded model, a reward callable) become ``"<object: name>"``."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    name = getattr(value, "name", None) or getattr(value, "__name__", None) or type(value).__name__
    return f"<object: {name}>"


def save_checkpoint(model: Any, path: str | Path, *, env_kwargs: dict[str, Any], seed: int | None = None,
                    config: dict[str, Any] | None = None) -> Path:
    """Write ``model`` and its metadata to the folder ``path``, atomically; return ``path``.

    Args:
        model: a trained SB3 algorithm of the registry (:data:`agents.algos.ALGOS`).
        path: the checkpoint folder; an existing checkpoint there is replaced only once the new
            one is completely written.
        env_kwargs: the environment's keyword arguments (made plain with :func:`plain`).
        seed: the training seed.
        config: the training configuration, recorded for reference.
    """
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"checkpoint path={str(path)!r} is a file; pass a folder (it will hold {MODEL_FILE} and {META_FILE}).")
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = CheckpointMeta(algo=algo_name(model), env_kwargs=plain(env_kwargs), seed=seed,
                          num_timesteps=int(model.num_timesteps), config=plain(config or {}))
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        model.save(tmp / MODEL_FILE)
        with open(tmp / META_FILE, "w", encoding="utf-8") as fh:
            json.dump(asdict(meta), fh, indent=2, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        _swap(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _swap(new: Path, path: Path) -> None:
    """Put folder ``new`` at ``path``; the old folder is moved aside first and deleted last."""
    if not path.exists():
        os.replace(new, path)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
    os.replace(path, old / path.name)
    try:
        os.replace(new, path)
    except BaseException:
        os.replace(old / path.name, path)  # put the previous checkpoint back
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def read_meta(path: str | Path) -> CheckpointMeta:
    """Read and validate ``meta.json`` of the checkpoint folder ``path``."""
    path = Path(path).expanduser()
    if not path.is_dir():
        aside = sorted(path.parent.glob(f".{path.name}.old-*/{path.name}"))
        hint = f" A save interrupted mid-swap left the previous checkpoint at {str(aside[-1])!r}: move it back." if aside else ""
        raise CheckpointError(
            f"checkpoint={str(path)!r} is not a folder; pass a folder written by save_checkpoint (proxy-rlhf train --save-dir).{hint}"
        )
    meta_path = path / META_FILE
    if not meta_path.is_file():
        raise CheckpointError(f"checkpoint={str(path)!r} has no {META_FILE}: it is incomplete or corrupted; re-save it or pass another checkpoint.")
    try:
        raw = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"checkpoint={str(path)!r}: {META_FILE} is not valid JSON ({exc}); the checkpoint is corrupted.") from exc
    if not isinstance(raw, dict) or "format_version" not in raw or "algo" not in raw:
        raise CheckpointError(f"checkpoint={str(path)!r}: {META_FILE} lacks 'format_version' or 'algo'; the checkpoint is corrupted.")
    if raw["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint={str(path)!r} has format_version={raw['format_version']!r}, but this proxy_env "
            f"{proxy_env.__version__} reads format_version={FORMAT_VERSION} only; load it with the proxy-rlhf "
            f"version that wrote it ({raw.get('package_version', 'unknown')}) or retrain."
        )
    if raw["algo"] not in ALGOS:
        raise CheckpointError(f"checkpoint={str(path)!r} names algo={raw['algo']!r}, which is not in the registry {list(ALGOS)}.")
    known = set(CheckpointMeta.__dataclass_fields__)
    meta = CheckpointMeta(**{k: v for k, v in raw.items() if k in known})
    if meta.package_version != proxy_env.__version__:
        logger.warning("checkpoint %s was written by proxy_env %s; this is %s", path, meta.package_version, proxy_env.__version__)
    return meta


def load_checkpoint(path: str | Path, *, env: Any = None, device: str = "auto") -> Checkpoint:
    """Load a checkpoint folder written by :func:`save_checkpoint`.

    Args:
        path: the checkpoint folder.
        env: an SB3 ``VecEnv`` to attach (needed to continue training); ``None`` for inference.
        device: torch device of the policy (``"auto"``, ``"cpu"``, ``"cuda"``).

    Raises:
        CheckpointError: the folder, ``meta.json`` or ``proxy.zip`` is missing or corrupted, or
            the format version is not this package's.
    """
    path = Path(path).expanduser()
    meta = read_meta(path)
    zip_path = path / MODEL_FILE
    if not zipfile.is_zipfile(zip_path):
        raise CheckpointError(f"checkpoint={str(path)!r}: {MODEL_FILE} is missing or not a zip archive; the checkpoint is corrupted.")
    cls = get_algo(meta.algo).load_class()
    try:
        model = cls.load(zip_path, env=env, device=device)
    except Exception as exc:  # SB3 raises many kinds (KeyError, ValueError, pickle errors) for a bad archive
        raise CheckpointError(f"checkpoint={str(path)!r}: {MODEL_FILE} could not be loaded as {meta.algo} ({type(exc).__name__}: {exc}).") from exc
    return Checkpoint(model, meta)
