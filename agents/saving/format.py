"""The pickle-free proxy checkpoint (format 2): tensors in safetensors, everything else in JSON.

A folder holds

* ``model.safetensors`` -- the SB3 policy's ``state_dict()`` (tensors only: loading it runs no code),
  written by ``safetensors.torch.save_model``: a tensor shared by several modules (the policy and
  value heads' common features extractor) is stored once, under one of its names;
* ``optimizer.safetensors`` -- the optimizer's tensors (Adam moments...), so ``train --resume``
  continues where training stopped; its ``param_groups`` are in the JSON;
* ``proxy_config.json`` -- what rebuilds the policy and says what it is for:

  ================== ==============================================================================
  ``format``         ``"proxy-rlhf-proxy"``
  ``format_version`` 2 (format 1 was SB3's pickled ``proxy.zip`` + ``meta.json``)
  ``algo``           registry name (:data:`agents.algos.ALGOS`); ``policy`` the SB3 policy name
  ``policy_kwargs``  SB3 ``policy_kwargs``; classes as ``{"class": name}`` from an allow-list
  ``algo_kwargs``    the algorithm's constructor hyper-parameters that are plain data
  ``state``          ``num_timesteps`` and the few counters SB3 keeps between ``learn`` calls
  ``observation_space``, ``action_space``  ``{"type": "Box", "shape": [d], "dtype": "float32"}``, ``{"type": "Discrete", "n": 2}``
  ``optimizer``      ``{"param_groups": [...]}`` of ``optimizer.safetensors``, or null
  ``llm``            the LLM it was trained on: ``name`` and ``fingerprint`` (:func:`llm_fingerprint`)
  ``env_kwargs``     the environment's keyword arguments as plain data
  ``seed``, ``num_timesteps``, ``package_version``, ``config``  as in format 1's ``meta.json``
                     (``config``: the training configuration, e.g. ``TrainConfig``)
  ``observation``    observation mode (``"candidate"``, ``"candidate_stats"``, ``"prefix"``)
  ``hidden_layer``   the LLM layer observed (index into ``hidden_states``)
  ``skam``           the pool: ``top_k``, ``top_p``, ``temperature``, ``max_rejections``, ``order``
  ``param_count``    trainable parameters of the policy (target networks excluded)
  ================== ==============================================================================

The last four fields were added later without a version bump (readers ignore unknown fields; a
folder without them has the same values in ``env_kwargs``). ``README.md``, the model card written by
``proxy-rlhf export``, may sit beside the files. :mod:`agents.saving.folder` reads such a folder for
inference without stable-baselines3.

Loading rebuilds the algorithm from ``proxy_config.json`` (classes only from :data:`CLASSES`) and
copies the tensors in with ``load_state_dict(strict=True)``.
"""

from __future__ import annotations

import inspect
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from proxy_env.errors import DataError

logger = logging.getLogger(__name__)

FORMAT = "proxy-rlhf-proxy"
WEIGHTS_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
CONFIG_FILE = "proxy_config.json"

# constructor arguments that are not hyper-parameters (or are given at load time)
_NOT_HYPER = {
    "self",
    "policy",
    "env",
    "policy_kwargs",
    "device",
    "_init_setup_model",
    "tensorboard_log",
    "verbose",
    "rollout_buffer_class",
    "rollout_buffer_kwargs",
    "replay_buffer_class",
    "replay_buffer_kwargs",
    "monitor_wrapper",
}
# counters SB3 keeps between learn() calls (epsilon-greedy's exploration_rate is used by predict)
STATE_ATTRS = ("num_timesteps", "_n_updates", "_episode_num", "exploration_rate")


class UnsupportedByFormat(DataError):
    """The model holds something the pickle-free format cannot record (save with ``format="sb3"``)."""


def _classes() -> dict[str, type]:
    from stable_baselines3.common.torch_layers import FlattenExtractor
    from torch import nn

    from agents.policies import HiddenStateExtractor

    allowed: list[type] = [
        HiddenStateExtractor,
        FlattenExtractor,
        nn.Tanh,
        nn.ReLU,
        nn.ELU,
        nn.LeakyReLU,
        nn.GELU,
        nn.SiLU,
        nn.Sigmoid,
        nn.Identity,
        torch.optim.Adam,
        torch.optim.AdamW,
        torch.optim.RMSprop,
        torch.optim.SGD,
    ]
    return {cls.__name__: cls for cls in allowed}


CLASSES_DOC = "HiddenStateExtractor, FlattenExtractor, torch activations, Adam/AdamW/RMSprop/SGD"


def _encode(value: Any, where: str) -> Any:
    """``value`` as JSON data; allowed classes become ``{"class": name}``; anything else is refused."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {str(k): _encode(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, type) and _classes().get(value.__name__) is value:
        return {"class": value.__name__}
    raise UnsupportedByFormat(
        f"{where}={value!r} cannot be recorded without pickling (allowed classes: {CLASSES_DOC}); "
        "save this model with save_checkpoint(..., format='sb3') instead."
    )


def _decode(value: Any, where: str) -> Any:
    if isinstance(value, list):
        return [_decode(v, where) for v in value]
    if isinstance(value, dict):
        if set(value) == {"class"}:
            cls = _classes().get(str(value["class"]))
            if cls is None:
                raise DataError(
                    f"{where} names class {value['class']!r}, which is not one this format loads ({CLASSES_DOC})."
                )
            return cls
        return {k: _decode(v, where) for k, v in value.items()}
    return value


def _plain_hyper(value: Any) -> tuple[bool, Any]:
    """(recordable, value): constant SB3 schedules unwrapped, ``TrainFreq`` as ``[n, unit]``."""
    inner = getattr(getattr(value, "value_schedule", None), "val", None)  # FloatSchedule(ConstantSchedule(x))
    if inner is not None:
        value = inner
    unit = getattr(value, "unit", None)
    if isinstance(value, tuple) and unit is not None and hasattr(unit, "value"):  # TrainFreq(frequency, unit)
        return True, [int(value[0]), str(unit.value)]
    if value is None or isinstance(value, (bool, int, float, str)):
        return True, value
    if isinstance(value, (list, tuple)) and all(v is None or isinstance(v, (bool, int, float, str)) for v in value):
        return True, list(value)
    return False, None


def hyperparameters(model: Any) -> dict[str, Any]:
    """The constructor arguments of ``model``'s algorithm that it holds as plain data (schedules given as a constant unwrapped)."""
    out: dict[str, Any] = {}
    for name in inspect.signature(type(model).__init__).parameters:
        if name in _NOT_HYPER or name not in model.__dict__:
            continue
        ok, value = _plain_hyper(model.__dict__[name])
        if ok:
            out[name] = value
        else:
            logger.info(
                "checkpoint: %s=%r is not plain data and is not recorded; a resumed run uses the default",
                name,
                model.__dict__[name],
            )
    return out


def encode_space(space: Any) -> dict[str, Any]:
    if isinstance(space, spaces.Discrete) and int(space.start) == 0:
        return {"type": "Discrete", "n": int(space.n)}
    if (
        isinstance(space, spaces.Box)
        and len(space.shape) == 1
        and np.all(np.isneginf(space.low))
        and np.all(np.isposinf(space.high))
    ):
        return {"type": "Box", "shape": [int(space.shape[0])], "dtype": str(space.dtype)}
    raise UnsupportedByFormat(
        f"space {space} is not one this format records (Discrete(n), unbounded 1-D Box); save with format='sb3'."
    )


def decode_space(data: Any, where: str) -> spaces.Space:
    try:
        if data["type"] == "Discrete":
            return spaces.Discrete(int(data["n"]))
        if data["type"] == "Box":
            return spaces.Box(-np.inf, np.inf, (int(data["shape"][0]),), np.dtype(data["dtype"]))
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise DataError(f"{where}={data!r} is not a valid space ({exc}).") from exc
    raise DataError(f"{where}={data!r}: type must be 'Discrete' or 'Box'.")


def llm_fingerprint(lm: Any) -> dict[str, Any]:
    """The fingerprint of a :class:`~proxy_env.engine.lm.FrozenLM` (see :func:`agents.saving.folder.fingerprint`)."""
    from agents.saving.folder import fingerprint

    return fingerprint(lm.model, lm.tokenizer)


def _optimizer(model: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    optimizer = getattr(model.policy, "optimizer", None)
    if optimizer is None:
        return {}, None
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    for index, entry in state["state"].items():
        for name, value in entry.items():
            tensor = value if isinstance(value, torch.Tensor) else torch.tensor(value)
            tensors[f"state.{index}.{name}"] = tensor.detach().cpu().contiguous()
    return tensors, {"param_groups": _encode(state["param_groups"], "optimizer.param_groups")}


def write(model: Any, folder: Path, record: dict[str, Any]) -> None:
    """Write ``model`` into the (new, empty) folder: weights, optimizer state and ``proxy_config.json`` with ``record`` merged in."""
    from safetensors.torch import save_file, save_model

    from agents.algos import get_algo

    config = {
        "format": FORMAT,
        "policy": get_algo(record["algo"]).policy,
        "policy_kwargs": _encode(dict(model.policy_kwargs), "policy_kwargs"),
        "algo_kwargs": hyperparameters(model),
        "state": {name: _plain_hyper(getattr(model, name))[1] for name in STATE_ATTRS if hasattr(model, name)},
        "observation_space": encode_space(model.observation_space),
        "action_space": encode_space(model.action_space),
        **record,
    }
    tensors, optimizer = _optimizer(model)
    config["optimizer"] = optimizer
    save_model(model.policy, str(folder / WEIGHTS_FILE))
    if tensors:
        save_file(tensors, str(folder / OPTIMIZER_FILE))
    from agents.saving.folder import file_digest

    # the tensors' sha256, checked on every load: safetensors has no checksum of its own
    config["files"] = {f.name: file_digest(f) for f in (folder / WEIGHTS_FILE, folder / OPTIMIZER_FILE) if f.is_file()}
    _write_json(folder / CONFIG_FILE, config)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    import os

    with open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())


def _tensors(path: Path, where: str) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise DataError(
            f"{where}: {path.name} is damaged or truncated ({exc}); re-save the checkpoint or pass another one."
        ) from exc


def build(config: dict[str, Any], folder: Path, *, env: Any, device: str, where: str) -> Any:
    """Rebuild the algorithm of ``config`` (attached to ``env``, or to none for inference) and load its tensors."""
    from stable_baselines3.common.utils import check_for_correct_spaces

    from agents.algos import get_algo

    cls = get_algo(config["algo"]).load_class()
    obs_space = decode_space(config.get("observation_space"), f"{where}: observation_space")
    act_space = decode_space(config.get("action_space"), f"{where}: action_space")
    policy_kwargs = _decode(config.get("policy_kwargs") or {}, f"{where}: policy_kwargs")
    hyper = dict(config.get("algo_kwargs") or {})
    if isinstance(hyper.get("train_freq"), list):
        hyper["train_freq"] = tuple(hyper["train_freq"])
    try:
        if env is not None:
            check_for_correct_spaces(env, obs_space, act_space)
            model = cls(config["policy"], env, policy_kwargs=policy_kwargs, device=device, **hyper)
        else:
            model = cls(
                config["policy"], None, policy_kwargs=policy_kwargs, device=device, _init_setup_model=False, **hyper
            )
            model.observation_space, model.action_space, model.n_envs = obs_space, act_space, 1
            model._setup_model()  # what SB3's own load() does for a model without an env
    except (TypeError, ValueError, KeyError, AssertionError) as exc:
        raise DataError(
            f"{where}: the policy in {CONFIG_FILE} cannot be rebuilt ({type(exc).__name__}: {exc})."
        ) from exc
    from agents.saving.folder import verify_digest

    for file in (folder / WEIGHTS_FILE, folder / OPTIMIZER_FILE):
        if file.is_file():
            verify_digest(file, config, where, DataError)
    _load_weights(model.policy, folder / WEIGHTS_FILE, where)
    _load_optimizer(model, config, folder, where)
    for name, value in (config.get("state") or {}).items():
        if name in STATE_ATTRS and isinstance(value, (int, float)) and not isinstance(value, bool):
            setattr(model, name, value)
    return model


def _load_weights(policy: Any, path: Path, where: str) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    try:
        load_model(policy, str(path), strict=True, device=str(next(policy.parameters()).device))
    except (SafetensorError, OSError) as exc:
        raise DataError(
            f"{where}: {path.name} is damaged or truncated ({exc}); re-save the checkpoint or pass another one."
        ) from exc
    except (RuntimeError, ValueError, KeyError) as exc:
        raise DataError(f"{where}: {path.name} does not match the policy described in {CONFIG_FILE} ({exc}).") from exc


def _load_optimizer(model: Any, config: dict[str, Any], folder: Path, where: str) -> None:
    optimizer = getattr(model.policy, "optimizer", None)
    saved = config.get("optimizer")
    if optimizer is None or not saved or not (folder / OPTIMIZER_FILE).is_file():
        return
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, tensor in _tensors(folder / OPTIMIZER_FILE, where).items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = tensor
    try:
        optimizer.load_state_dict({"state": state, "param_groups": saved["param_groups"]})
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{where}: {OPTIMIZER_FILE} does not match the policy's optimizer ({exc}).") from exc
