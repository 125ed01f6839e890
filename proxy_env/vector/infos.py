"""The ``info`` dicts of :class:`~proxy_env.vector.vector_env.ProxyRLHFVectorEnv`: numeric by default, text on request.

Array libraries (TorchRL's spec readers, Gymnasium's ``NumpyToTorch``, tianshou's buffers) turn
every info entry into an array or a tensor, so by default every entry is a numeric ``(num_envs,)``
array. ``info_text=True`` adds the text fields: per step ``token`` (the candidate on offer,
decoded), at episode end ``prompt``, ``response`` and ``response_ids`` (object arrays, ``None``
where no episode ended). Only then does a step decode anything.

>>> import numpy as np
>>> obs = np.ones((3, 2), dtype=np.float32)
>>> final = final_obs(obs, np.array([True, True, True]))
>>> final.shape, final.dtype, final[0].shape, final[0].dtype
((3,), dtype('O'), (2,), dtype('float32'))
>>> final_obs(obs, np.array([False, True, False]))[0] is None
True
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from proxy_env.engine import candidates

# per-step keys (the candidate now on offer), always present
STEP_KEYS = ("token_id", "logprob", "logq", "rejections", "position", "forced")
# end-of-episode keys, always present at episode end (masked by their ``_key`` arrays)
END_KEYS = (
    "decisions",
    "num_rejections",
    "forced_commits",
    "response_length",
    "reward_raw",
    "reward_baseline",
)
# text keys, present only with ``info_text=True``
TEXT_STEP_KEYS = ("token",)
TEXT_END_KEYS = ("prompt", "response", "response_ids")


def step_tensors(
    pool: candidates.Pool, offer: torch.Tensor, position: torch.Tensor, forced: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The per-step info of every env (the candidate on offer) as (B,) tensors, keyed as :data:`STEP_KEYS`.

    ``forced`` (B,) bool: the candidate on offer is committed whatever the action (``forced_steps``).
    """
    return {
        "token_id": candidates.select(pool.tokens, offer),
        "logprob": candidates.select(pool.logprob, offer),
        "logq": candidates.select(pool.logq, offer),
        "rejections": offer,
        "position": position,
        "forced": forced,
    }


def step_info(arrays: dict[str, np.ndarray], tokenizer: Any | None) -> dict[str, np.ndarray]:
    """Per-step info from the host copies of :func:`step_tensors`; ``token`` (decoded) only when ``tokenizer`` is given."""
    info: dict[str, np.ndarray] = {"token_id": arrays["token_id"]}
    if tokenizer is not None:
        info["token"] = np.array(tokenizer.batch_decode(arrays["token_id"][:, None]), dtype=object)
    info.update({key: arrays[key].copy() for key in STEP_KEYS[1:]})  # copies: no entry aliases another
    return info


def host_copy(*tensors: torch.Tensor) -> list[np.ndarray]:
    """Numpy copies of (B,) or (B, d) tensors of one device in a single device-to-host transfer.

    They travel as one float64 block and come back in their own dtypes: exact for float32, bool and
    integers below 2**53 (token ids, positions, counters).
    """
    flat = [t.detach().reshape(len(t), -1) for t in tensors]
    block = torch.cat([f.double() for f in flat], dim=1).cpu().numpy()
    out, start = [], 0
    for t, f in zip(tensors, flat):
        width = f.shape[1]
        part = block[:, start : start + width].astype(_NUMPY[t.dtype])
        out.append(part.reshape(t.shape))
        start += width
    return out


_NUMPY: dict[torch.dtype, type[np.generic]] = {
    torch.float32: np.float32,
    torch.float64: np.float64,
    torch.int64: np.int64,
    torch.int32: np.int32,
    torch.bool: np.bool_,
    torch.float16: np.float16,
    torch.bfloat16: np.float32,
}


def end_info(ended: np.ndarray, numeric: dict[str, np.ndarray], text: dict[str, list[Any]] | None) -> dict[str, Any]:
    """End-of-episode info with a ``_key`` mask (``ended``, (B,) bool) beside every key.

    Args:
        ended: which envs ended this step.
        numeric: (B,) arrays, keyed as :data:`END_KEYS`.
        text: one value per ended env (in env order), keyed as :data:`TEXT_END_KEYS`, or None to leave
            them out; scattered into (B,) object arrays holding None for the other envs.
    """
    assert tuple(numeric) == END_KEYS and (text is None or tuple(text) == TEXT_END_KEYS), (
        tuple(numeric),
        text and tuple(text),
    )
    index = np.flatnonzero(ended).tolist()
    info: dict[str, Any] = {}
    if text is not None:
        info.update({key: _scatter(len(ended), index, values) for key, values in text.items()})
    info.update(numeric)
    return {**info, **{f"_{key}": ended.copy() for key in info}}


def final_obs(obs: np.ndarray, ended: np.ndarray) -> np.ndarray:
    """Gymnasium's SAME_STEP ``info["final_obs"]``: an (N,) object array, ended envs' (D,) observations, None elsewhere.

    Built element by element: ``np.array([...], dtype=object)`` over N equal-shaped arrays would
    make an (N, D) object array when every env ended on the same step.
    """
    out = np.full(len(ended), None, dtype=object)
    for i in np.flatnonzero(ended):
        out[i] = obs[i]
    return out


def _scatter(n: int, index: list[int], values: list[Any]) -> np.ndarray:
    out = np.full(n, None, dtype=object)
    for i, value in zip(index, values):
        out[i] = value
    return out


def np_copy(tensor: torch.Tensor) -> np.ndarray:
    """A numpy copy (never a view of the env's state, which is updated in place)."""
    return tensor.detach().cpu().numpy().copy()
