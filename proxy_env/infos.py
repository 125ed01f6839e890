"""The ``info`` dicts of :class:`~proxy_env.vector_env.ProxyRLHFVectorEnv`: numeric by default, text on request.

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

from proxy_env import candidates as skam

# per-step keys (the candidate now on offer), always present
STEP_KEYS = ("token_id", "logprob", "logprob_truncated", "rank", "rejections", "position", "forced")
# end-of-episode keys, always present at episode end (masked by their ``_key`` arrays)
END_KEYS = ("decisions", "num_rejections", "forced_commits", "response_length", "reward_raw", "reward_baseline",
            "reject_cost")
# text keys, present only with ``info_text=True``
TEXT_STEP_KEYS = ("token",)
TEXT_END_KEYS = ("prompt", "response", "response_ids")


def step_info(pool: skam.Pool, offer: torch.Tensor, position: torch.Tensor, tokenizer: Any | None,
              forced: torch.Tensor) -> dict[str, np.ndarray]:
    """Per-step info: the candidate on offer of every env; ``token`` (decoded) only when ``tokenizer`` is given.

    ``forced`` (B,) bool: the candidate on offer is committed whatever the action (``forced_steps``).
    """
    ids = _np(skam.select(pool.tokens, offer))  # (B,)
    info: dict[str, np.ndarray] = {"token_id": ids}
    if tokenizer is not None:
        info["token"] = np.array(tokenizer.batch_decode(ids[:, None]), dtype=object)
    info.update(
        logprob=_np(skam.select(pool.logprob, offer)),
        logprob_truncated=_np(skam.select(pool.logprob_trunc, offer)),
        rank=_np(offer),
        rejections=_np(offer),
        position=_np(position),
        forced=_np(forced),
    )
    return info


def end_info(ended: np.ndarray, numeric: dict[str, np.ndarray], text: dict[str, list[Any]] | None) -> dict[str, Any]:
    """End-of-episode info with a ``_key`` mask (``ended``, (B,) bool) beside every key.

    Args:
        ended: which envs ended this step.
        numeric: (B,) arrays, keyed as :data:`END_KEYS`.
        text: one value per ended env (in env order), keyed as :data:`TEXT_END_KEYS`, or None to leave
            them out; scattered into (B,) object arrays holding None for the other envs.
    """
    assert tuple(numeric) == END_KEYS and (text is None or tuple(text) == TEXT_END_KEYS), (tuple(numeric), text and tuple(text))
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


def _np(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy().copy()


def _scatter(n: int, index: list[int], values: list[Any]) -> np.ndarray:
    out = np.full(n, None, dtype=object)
    for i, value in zip(index, values):
        out[i] = value
    return out
