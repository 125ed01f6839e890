"""``proxy-rlhf export``: any proxy checkpoint to the pickle-free proxy folder with its model card; ``push_to_hub``.

>>> sorted(UPLOAD_FILES)
['README.md', 'model.safetensors', 'optimizer.safetensors', 'proxy_config.json']
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from agents.saving import checkpoint as ckpt
from agents.saving import model_card
from proxy_env.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

UPLOAD_FILES = (ckpt.CONFIG_FILE, ckpt.WEIGHTS_FILE, "optimizer.safetensors", ckpt.CARD_FILE)


def export(
    checkpoint: str | Path,
    out: str | Path,
    *,
    trust: bool = False,
    bench: str | Path | None = None,
    lm: Any = None,
    algo: str = "ppo",
    env_kwargs: dict[str, Any] | None = None,
) -> Path:
    """Write the proxy folder (``model.safetensors`` + ``proxy_config.json`` + ``README.md``) of ``checkpoint`` to ``out``.

    Args:
        checkpoint: a checkpoint folder (pickle-free, or SB3's ``proxy.zip`` + ``meta.json`` with
            ``trust``), or a bare SB3 ``.zip`` saved by ``model.save`` (with ``trust``, ``algo`` and ``env_kwargs``).
        out: the new folder; an existing checkpoint folder there is replaced, any other folder refused.
        trust: allow loading SB3 zips, which unpickle Python objects and so can run code.
        bench: a ``proxy-rlhf bench`` ``results.csv`` whose rows go into the model card.
        lm: the :class:`~proxy_env.engine.lm.FrozenLM` the proxy reads, when the checkpoint records no fingerprint
            (format 1); by default its recorded model name is loaded.
        algo: the algorithm of a bare ``.zip``.
        env_kwargs: the environment settings of a bare ``.zip`` (observation, pool...); env defaults otherwise.
    """
    path = Path(checkpoint).expanduser()
    rows = model_card.read_bench(bench) if bench is not None else None  # a bad --bench fails before anything loads
    ckpt.check_save_dir(out, arg="out")
    if path.is_file():
        model, meta = _bare_zip(path, trust=trust, algo=algo, env_kwargs=env_kwargs or {})
    else:
        loaded = ckpt.load_checkpoint(path, device="cpu", trust=trust)
        model, meta = loaded.model, loaded.meta
    if lm is None and not (meta.llm or {}).get("fingerprint"):
        lm = _resolve_lm(meta.env_kwargs.get("model", "default"))
    folder = ckpt.save_checkpoint(
        model, out, env_kwargs=meta.env_kwargs, seed=meta.seed, config=meta.config, lm=lm, llm=meta.llm
    )
    write_card(folder, bench=rows, bench_source=str(bench) if bench else "")
    return folder


def write_card(folder: str | Path, *, bench: list[dict[str, str]] | None = None, bench_source: str = "") -> Path:
    """(Re)write ``README.md`` in the proxy folder from its ``proxy_config.json``; return its path."""
    folder = Path(folder)
    config = json.loads((folder / ckpt.CONFIG_FILE).read_text(encoding="utf-8"))
    card = folder / ckpt.CARD_FILE
    card.write_text(model_card.render(config, bench=bench, bench_source=bench_source), encoding="utf-8")
    return card


def _bare_zip(path: Path, *, trust: bool, algo: str, env_kwargs: dict[str, Any]) -> tuple[Any, ckpt.CheckpointMeta]:
    from agents.algos import get_algo

    where = f"checkpoint={str(path)!r}"
    if path.suffix != ".zip":
        raise ConfigError(
            f"{where} is a file but not an SB3 .zip; pass a checkpoint folder or the .zip SB3's model.save wrote."
        )
    if not trust:
        raise ckpt.CheckpointError(
            f"{where} is an SB3 zip: loading it unpickles Python objects, which can run arbitrary code. "
            "Pass --trust-checkpoint (trust=True) only if you trust where it came from."
        )
    logger.warning("loading %s with trust: SB3's zip unpickles Python objects", path)
    try:
        model = get_algo(algo).load_class().load(path, device="cpu")
    except Exception as exc:  # SB3 raises many kinds for a bad archive or the wrong class
        raise ckpt.CheckpointError(
            f"{where} could not be loaded as algo={algo!r} ({type(exc).__name__}: {exc}); pass --algo."
        ) from exc
    kwargs = {"model": "default", **env_kwargs}
    return model, ckpt.CheckpointMeta(algo=algo, env_kwargs=kwargs, num_timesteps=int(model.num_timesteps))


def _resolve_lm(name: Any) -> Any:
    if not isinstance(name, str) or name.startswith("<object"):
        raise ConfigError(
            f"the checkpoint records no LLM fingerprint and its model is {name!r}: pass lm= (CLI: --model) "
            "with the LLM it was trained on, so the folder can refuse any other."
        )
    from proxy_env.engine.models import as_frozen_lm

    return as_frozen_lm(name, device="cpu")


# ---------------------------------------------------------------------------- the Hub
def hub_files(folder: str | Path) -> list[str]:
    """The files :func:`push_to_hub` uploads: every file of the proxy folder, after checking it loads without SB3.

    Raises:
        DataError: the folder does not load, has no model card, or holds anything else (it is not uploaded as is).
    """
    from agents.saving.folder import load_proxy

    folder = Path(folder).expanduser()
    load_proxy(folder)
    names = sorted(p.name for p in folder.iterdir())
    foreign = [n for n in names if n not in UPLOAD_FILES]
    if foreign:
        raise DataError(
            f"folder={str(folder)!r} holds {foreign}, which are not part of a proxy folder; export to a fresh folder."
        )
    if ckpt.CARD_FILE not in names:
        raise DataError(
            f"folder={str(folder)!r} has no {ckpt.CARD_FILE} model card; write it with `proxy-rlhf export`."
        )
    return names


def push_to_hub(
    folder: str | Path,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    commit_message: str = "Upload Proxy-RLHF proxy",
    api: Any = None,
) -> list[str]:
    """Upload exactly the proxy folder to the Hugging Face Hub model repo ``repo_id`` (created if missing).

    Args:
        folder: a folder written by :func:`export`.
        repo_id: ``"user/name"``.
        token: a Hub token (default: the logged-in one).
        private: create the repo private.
        commit_message: the upload's commit message.
        api: an ``huggingface_hub.HfApi`` (default: a new one with ``token``).

    Returns:
        The uploaded file names.
    """
    if not isinstance(repo_id, str) or repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ConfigError(f"repo_id={repo_id!r} must be 'user/name' (or 'org/name').")
    files = hub_files(folder)
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
    api.upload_folder(
        folder_path=str(Path(folder).expanduser()),
        repo_id=repo_id,
        repo_type="model",
        allow_patterns=files,
        commit_message=commit_message,
    )
    return files
