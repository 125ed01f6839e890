"""Seeds as Gymnasium takes them: ``None``, a non-negative int (Python or numpy), or one per env in a list.

The env keeps one int64 seed per env for its counter-based draws. A seed in ``[0, 2**63)`` is kept
as is; a larger one is taken modulo ``2**64`` as a signed int64, so ``reset(seed=2**63 - 1)`` on a
vector env (whose env ``i`` gets ``seed + i``) works as it does on the single env.

>>> env_seeds(np.int64(3), 2), env_seeds([1, None], 2), env_seeds(None, 2)
([3, 4], [1, None], None)
>>> env_seeds(2**63 - 1, 2)
[9223372036854775807, -9223372036854775808]
>>> env_seeds("abc", 2)
Traceback (most recent call last):
...
proxy_env.errors.ConfigTypeError: seed='abc' must be None, a non-negative int, or a list of 2 of them (one per env); got str.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from proxy_env.errors import ConfigError, ConfigTypeError

_INT64 = 2**63


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def single_seed(seed: Any, name: str = "seed") -> int | None:
    """``seed`` as a Python int >= 0 (numpy ints accepted), or None; anything else is refused naming ``name``."""
    if seed is None:
        return None
    if not _is_int(seed):
        raise ConfigTypeError(f"{name}={seed!r} must be None or a non-negative int; got {type(seed).__name__}.")
    if int(seed) < 0:
        raise ConfigError(f"{name}={int(seed)} must be >= 0 (Gymnasium's rule for seeds).")
    return int(seed)


def to_int64(seed: int) -> int:
    """A non-negative int as the env's int64 seed: itself below ``2**63``, else modulo ``2**64`` as signed."""
    seed %= 2 * _INT64
    return seed - 2 * _INT64 if seed >= _INT64 else seed


def env_seeds(seed: Any, num_envs: int) -> list[int | None] | None:
    """One int64 seed per env (``seed + i`` for an int), ``None`` entries kept (that env is not reseeded), or None."""
    if seed is None:
        return None
    if _is_int(seed):
        base = single_seed(seed)
        return [to_int64(base + i) for i in range(num_envs)]  # type: ignore[operator]
    if isinstance(seed, (str, bytes, dict, set)) or not hasattr(seed, "__iter__"):
        raise ConfigTypeError(
            f"seed={seed!r} must be None, a non-negative int, or a list of {num_envs} of them (one per env); got {type(seed).__name__}."
        )
    values = list(seed)
    if len(values) != num_envs:
        raise ConfigError(f"seed has {len(values)} values for num_envs={num_envs}; pass an int or one per env.")
    out: list[int | None] = []
    for i, value in enumerate(values):
        one = single_seed(value, name=f"seed[{i}]")
        out.append(None if one is None else to_int64(one))
    return out


def first_seed(seed: Any) -> int | None:
    """What seeds the env's own ``np_random`` (``VectorEnv.reset``): an int seed, else None."""
    return single_seed(seed) if _is_int(seed) else None
