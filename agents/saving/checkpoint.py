"""Checkpoints of a trained proxy: a folder written atomically, read without unpickling anything.

Format 2 (the default, :mod:`agents.saving.format`): ``model.safetensors`` (the policy's tensors),
``optimizer.safetensors`` and ``proxy_config.json`` (what rebuilds the policy, the environment's
keyword arguments, the LLM's fingerprint, the seed, the package and format versions). Loading it
rebuilds the policy from the JSON and copies the tensors in: a checkpoint from anywhere runs no code.

Format 1 (``format="sb3"``, and folders written before format 2): ``proxy.zip`` (SB3's
``model.save``) + ``meta.json``. SB3's zip holds cloudpickled objects, so loading one can run
arbitrary code: :func:`load_checkpoint` refuses it unless ``trust=True`` (CLI ``--trust-checkpoint``)
and then logs a warning.

Saving is atomic: everything is written to a temporary sibling folder which then replaces the old
checkpoint by renames, so an interrupted save leaves the previous checkpoint intact. An existing
folder is replaced only when it is a checkpoint (see :func:`proxy_env.folders.foreign_entries`):
a folder holding anything else is refused, never emptied.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import proxy_env
from agents.algos import ALGOS, algo_name, get_algo
from agents.saving import format as proxy_format
from proxy_env.errors import DataError, ProxyEnvError
from proxy_env.folders import FolderLock, check_output_dir, held_here, match_modes, recover_and_clean

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2
SB3_FORMAT_VERSION = 1
READ_VERSIONS = (1, 2)
FORMATS = ("safetensors", "sb3")
MODEL_FILE = "proxy.zip"  # format 1
META_FILE = "meta.json"  # format 1
CONFIG_FILE = proxy_format.CONFIG_FILE
WEIGHTS_FILE = proxy_format.WEIGHTS_FILE
# what a checkpoint folder may hold (a folder holding anything else is not replaced)
MARKERS = (CONFIG_FILE, META_FILE)
CARD_FILE = "README.md"  # the model card proxy-rlhf export writes
NAMES = (CONFIG_FILE, WEIGHTS_FILE, proxy_format.OPTIMIZER_FILE, META_FILE, MODEL_FILE, CARD_FILE)


class CheckpointError(DataError):
    """A checkpoint folder is missing, corrupted, or written by an incompatible version (a ``ValueError``)."""


@dataclass
class CheckpointMeta:
    """What a checkpoint says about itself (format 2: from ``proxy_config.json``; format 1: ``meta.json``)."""

    algo: str
    env_kwargs: dict[str, Any]
    seed: int | None = None
    num_timesteps: int = 0
    package_version: str = proxy_env.__version__
    format_version: int = FORMAT_VERSION
    config: dict[str, Any] = field(default_factory=dict)  # the TrainConfig that produced it, if any
    llm: dict[str, Any] = field(default_factory=dict)  # name and fingerprint of the LLM it was trained on (format 2)


# field: (type check, what it must be), for the error naming a damaged field
_META_TYPES: dict[str, tuple[Any, str]] = {
    "algo": (lambda v: isinstance(v, str), "a string"),
    "env_kwargs": (lambda v: isinstance(v, dict), "an object"),
    "seed": (lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)), "an int or null"),
    "num_timesteps": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "an int >= 0"),
    "package_version": (lambda v: isinstance(v, str), "a string"),
    "format_version": (lambda v: isinstance(v, int), "an int"),
    "config": (lambda v: isinstance(v, dict), "an object"),
    "llm": (lambda v: isinstance(v, dict), "an object"),
}
_REQUIRED = ("algo", "env_kwargs", "format_version")


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


def check_save_dir(path: str | Path, *, arg: str = "save_dir") -> Path:
    """Check, before training, that a checkpoint can be written to the folder ``path`` without destroying anything.

    Raises :class:`proxy_env.errors.OutputPathError` for a file, a folder that holds anything but a
    checkpoint, the current folder, or an unwritable parent (see :func:`proxy_env.folders.check_output_dir`).
    """
    return check_output_dir(path, arg=arg, markers=MARKERS, names=NAMES)


def lock_save_dir(path: str | Path, *, arg: str = "save_dir") -> FolderLock:
    """:func:`check_save_dir`, then an exclusive lock on the folder for one run (a ``with`` block or ``release()``)."""
    path = check_save_dir(path, arg=arg)
    return FolderLock(path, arg=arg).acquire()


def save_checkpoint(
    model: Any,
    path: str | Path,
    *,
    env_kwargs: dict[str, Any],
    seed: int | None = None,
    config: dict[str, Any] | None = None,
    lm: Any = None,
    format: str = "safetensors",
    llm: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` and its metadata to the folder ``path``, atomically; return ``path``.

    Args:
        model: a trained SB3 algorithm of the registry (:data:`agents.algos.ALGOS`).
        path: the checkpoint folder; an existing checkpoint there is replaced only once the new
            one is completely written. A folder holding anything else is refused (never emptied).
        env_kwargs: the environment's keyword arguments (made plain with :func:`plain`).
        seed: the training seed.
        config: the training configuration, recorded for reference.
        lm: the :class:`~proxy_env.engine.lm.FrozenLM` it was trained on (its fingerprint is recorded);
            by default ``env_kwargs["model"]`` when that is one.
        format: ``"safetensors"`` (format 2, pickle-free, the default) or ``"sb3"`` (format 1: SB3's
            ``proxy.zip``, for policies format 2 cannot describe; loading it needs ``trust=True``).
        llm: the recorded LLM (``{"name", "fingerprint"}``, as in a checkpoint's ``meta.llm``) to keep
            when ``lm`` is not given: what re-saving a loaded checkpoint (``proxy-rlhf export``) passes.
    """
    from proxy_env.errors import check_choice

    check_choice("format", format, FORMATS)
    path = check_save_dir(path, arg="checkpoint path")
    bad = [name for name, p in model.policy.named_parameters() if not bool(p.detach().isfinite().all())]
    if bad:
        raise CheckpointError(
            f"the policy has NaN or inf parameters ({bad[0]}...): training diverged, so it is not saved "
            f"(any checkpoint at {str(path)!r} is kept). Lower learning_rate or check the rewards."
        )
    lm = lm if lm is not None else env_kwargs.get("model")
    recorded = dict(llm or {})
    llm = {"name": plain(env_kwargs.get("model"))}
    if hasattr(lm, "tokenizer") and hasattr(lm, "hidden_size"):
        llm["fingerprint"] = proxy_format.llm_fingerprint(lm)
    elif recorded.get("fingerprint"):
        llm = {"name": recorded.get("name", llm["name"]), "fingerprint": recorded["fingerprint"]}
    record = {
        "algo": algo_name(model),
        "env_kwargs": plain(env_kwargs),
        "seed": seed,
        "num_timesteps": int(model.num_timesteps),
        "package_version": proxy_env.__version__,
        "config": plain(config or {}),
    }
    lock = None if held_here(path) else FolderLock(path, arg="checkpoint path").acquire()
    recover_and_clean(path)  # the lock is ours: no other save of this folder is running
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        if format == "sb3":
            model.save(tmp / MODEL_FILE)
            proxy_format._write_json(
                tmp / META_FILE, asdict(CheckpointMeta(**record, format_version=SB3_FORMAT_VERSION))
            )
        else:
            from agents.policies import count_trainable
            from agents.saving.folder import summary

            extra = {**summary(record["env_kwargs"]), "param_count": count_trainable(model), "llm": llm}
            proxy_format.write(model, tmp, {**record, "format_version": FORMAT_VERSION, **extra})
        match_modes(tmp, path)
        _swap(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if lock is not None:
            lock.release()
    return path


def _swap(new: Path, path: Path) -> None:
    """Put folder ``new`` at ``path``; the old folder (a checkpoint: checked first) is moved aside first and deleted last."""
    if not path.exists():
        os.replace(new, path)
        return
    check_save_dir(path, arg="checkpoint path")  # files may have appeared since training started
    old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
    os.replace(path, old / path.name)
    try:
        os.replace(new, path)
    except BaseException:
        os.replace(old / path.name, path)  # put the previous checkpoint back
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def _read_json(file: Path, where: str) -> dict[str, Any]:
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{where}: {file.name} is not valid JSON ({exc}); the checkpoint is corrupted.") from exc
    if not isinstance(raw, dict):
        raise CheckpointError(
            f"{where}: {file.name} holds a {type(raw).__name__}, not an object; the checkpoint is corrupted."
        )
    return raw


def _read_raw(path: Path) -> tuple[dict[str, Any], Path]:
    """The checkpoint's JSON (``proxy_config.json``, else ``meta.json``) and the file it came from."""
    where = f"checkpoint={str(path)!r}"
    if not path.is_dir():
        aside = sorted(path.parent.glob(f".{path.name}.old-*/{path.name}"))
        hint = (
            f" A save interrupted mid-swap left the previous checkpoint at {str(aside[-1])!r}: move it back."
            if aside
            else ""
        )
        raise CheckpointError(
            f"{where} is not a folder; pass a folder written by save_checkpoint (proxy-rlhf train --save-dir).{hint}"
        )
    for name in (CONFIG_FILE, META_FILE):
        if (path / name).is_file():
            return _read_json(path / name, where), path / name
    raise CheckpointError(
        f"{where} has no {CONFIG_FILE} (nor a format-1 {META_FILE}): it is incomplete or not a checkpoint; "
        "re-save it or pass another checkpoint."
    )


def _validated(raw: dict[str, Any], file: Path, path: Path) -> CheckpointMeta:
    where = f"checkpoint={str(path)!r}: {file.name}"
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        raise CheckpointError(f"{where} lacks {missing}; the checkpoint is corrupted or was not written by proxy-rlhf.")
    if raw["format_version"] not in READ_VERSIONS:
        raise CheckpointError(
            f"checkpoint={str(path)!r} has format_version={raw['format_version']!r}, but this proxy_env "
            f"{proxy_env.__version__} reads format_version={list(READ_VERSIONS)} only; load it with the proxy-rlhf "
            f"version that wrote it ({raw.get('package_version', 'unknown')}) or retrain."
        )
    if raw["algo"] not in ALGOS:
        raise CheckpointError(
            f"checkpoint={str(path)!r} names algo={raw['algo']!r}, which is not in the registry {list(ALGOS)}."
        )
    for key, (ok, what) in _META_TYPES.items():
        if key in raw and not ok(raw[key]):
            raise CheckpointError(f"{where}: {key}={raw[key]!r} must be {what}; the checkpoint is corrupted.")
    known = set(CheckpointMeta.__dataclass_fields__)
    return CheckpointMeta(**{k: v for k, v in raw.items() if k in known})


def read_meta(path: str | Path) -> CheckpointMeta:
    """Read and validate the metadata of the checkpoint folder ``path`` (either format); nothing is unpickled."""
    path = Path(path).expanduser()
    raw, file = _read_raw(path)
    meta = _validated(raw, file, path)
    if meta.package_version != proxy_env.__version__:
        logger.warning(
            "checkpoint %s was written by proxy_env %s; this is %s", path, meta.package_version, proxy_env.__version__
        )
    return meta


def load_checkpoint(path: str | Path, *, env: Any = None, device: str = "auto", trust: bool = False) -> Checkpoint:
    """Load a checkpoint folder written by :func:`save_checkpoint`.

    Args:
        path: the checkpoint folder.
        env: an SB3 ``VecEnv`` to attach (needed to continue training); ``None`` for inference.
        device: torch device of the policy (``"auto"``, ``"cpu"``, ``"cuda"``).
        trust: also load a format-1 folder (SB3's ``proxy.zip``), which unpickles Python objects
            and so can run arbitrary code: only for checkpoints from a source you trust.

    Raises:
        CheckpointError: the folder or one of its files is missing or corrupted, the format version
            is not one this package reads, or it is a format-1 folder and ``trust`` is False.
    """
    if device != "auto":
        from proxy_env.engine.lm import resolve_device

        resolve_device(device)
    path = Path(path).expanduser()
    raw, file = _read_raw(path)
    meta = _validated(raw, file, path)
    where = f"checkpoint={str(path)!r}"
    if meta.format_version == FORMAT_VERSION:
        if raw.get("format") != proxy_format.FORMAT:
            raise CheckpointError(
                f"{where}: {CONFIG_FILE} has format={raw.get('format')!r}, expected {proxy_format.FORMAT!r}."
            )
        if not (path / WEIGHTS_FILE).is_file():
            raise CheckpointError(
                f"{where} has no {WEIGHTS_FILE}: it is incomplete; re-save it or pass another checkpoint."
            )
        try:
            model = proxy_format.build(raw, path, env=env, device=device, where=where)
        except DataError as exc:
            raise CheckpointError(str(exc)) from exc
        return Checkpoint(model, meta)
    return Checkpoint(_load_sb3_zip(path, meta, env=env, device=device, trust=trust), meta)


def _load_sb3_zip(path: Path, meta: CheckpointMeta, *, env: Any, device: str, trust: bool) -> Any:
    zip_path = path / MODEL_FILE
    where = f"checkpoint={str(path)!r}"
    if not trust:
        raise CheckpointError(
            f"{where} is an SB3 {MODEL_FILE} (format 1): loading it unpickles Python objects, which can run arbitrary code. "
            "Load it only if you trust where it came from: pass trust=True (CLI: --trust-checkpoint); saving it again "
            "(save_checkpoint, or train --resume) writes the pickle-free format."
        )
    if not zipfile.is_zipfile(zip_path):
        raise CheckpointError(f"{where}: {MODEL_FILE} is missing or not a zip archive; the checkpoint is corrupted.")
    logger.warning(
        "loading %s with trust: SB3's zip unpickles Python objects, which can run arbitrary code; "
        "do this only for files from a source you trust",
        zip_path,
    )
    cls = get_algo(meta.algo).load_class()
    try:
        return cls.load(zip_path, env=env, device=device)
    except Exception as exc:  # SB3 raises many kinds (KeyError, ValueError, pickle errors) for a bad archive
        raise CheckpointError(
            f"{where}: {MODEL_FILE} could not be loaded as {meta.algo} ({type(exc).__name__}: {exc})."
        ) from exc


def check_lm(meta: CheckpointMeta, lm: Any, path: str | Path) -> None:
    """Refuse an LLM whose fingerprint differs from the one the checkpoint was trained on (format 2 only)."""
    from agents.saving.folder import ProxyFolderError, check_llm

    if lm is None:
        return
    try:
        check_llm(meta.llm, lm.model, lm.tokenizer, where=f"checkpoint={str(path)!r}", name=getattr(lm, "name", None))
    except ProxyFolderError as exc:
        raise CheckpointError(str(exc)) from exc


def periodic_save(save: Any, agent: Any) -> Path | None:
    """A periodic save that fails is logged, not fatal: training goes on and the final save rescues the proxy."""
    try:
        return save(agent)
    except (OSError, ProxyEnvError) as exc:
        logger.warning("periodic checkpoint at %s steps failed (%s); training continues", agent.num_timesteps, exc)
        return None


def save_or_rescue(save: Any, agent: Any, path: str) -> Path:
    """The final save; if it fails, the trained proxy goes to a fresh sibling folder and the error names it.

    A failure is the disk's (``OSError``: full, read-only, a file-size limit), ours (``ProxyEnvError``) or the
    tensor writer's (``SafetensorError``, e.g. "File too large"): all three are rescued.
    """
    from safetensors import SafetensorError

    try:
        return save(agent)
    except (OSError, ProxyEnvError, SafetensorError) as exc:
        target = Path(path).expanduser()
        rescue = target.with_name(f"{target.name}.rescued-{time.strftime('%Y%m%d-%H%M%S')}")
        try:
            save(agent, path=str(rescue))
        except (OSError, ProxyEnvError, SafetensorError):
            logger.exception("could not save the trained proxy to %s either", rescue)
            raise exc from None
        raise CheckpointError(
            f"save_dir={path!r} could not be written ({exc}); the trained proxy was saved to {str(rescue)!r} instead."
        ) from exc
