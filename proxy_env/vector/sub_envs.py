"""Gymnasium's sub-env access (``call``, ``get_attr``, ``set_attr``) for a vector env whose envs share one object.

Gymnasium's ``SyncVectorEnv`` holds one object per env and returns one result per env. The envs of
:class:`~proxy_env.vector.vector_env.ProxyRLHFVectorEnv` are rows of one batched env, so an attribute or
a method's result is that env's, repeated once per env; ``render`` already gives one frame per
env. ``set_attr`` takes one value, or a list/tuple of ``num_envs`` equal values.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from proxy_env.errors import ConfigError

# methods whose result already holds one item per env
PER_ENV_METHODS = ("render",)


def call(env: Any, num_envs: int, name: str, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
    """Call method ``name`` of ``env`` (or read attribute ``name``); the result once per env."""
    value = getattr(env, name)
    result = value(*args, **kwargs) if callable(value) else value
    if name in PER_ENV_METHODS and result is not None:
        return tuple(result)
    return tuple(result for _ in range(num_envs))


def set_attr(env: Any, num_envs: int, name: str, values: Any) -> None:
    """Set attribute ``name`` of ``env`` to ``values``: one value, or ``num_envs`` equal values."""
    if isinstance(values, (list, tuple)):
        if len(values) != num_envs:
            raise ConfigError(
                f"set_attr({name!r}, values) got {len(values)} values for {num_envs} envs; pass one value for all "
                f"envs or a list/tuple of {num_envs}."
            )
        if not all(_same(v, values[0]) for v in values[1:]):
            raise ConfigError(
                f"set_attr({name!r}, values) got different values per env, but the {num_envs} envs are rows of one "
                "batched env and share the attribute; pass a single value."
            )
        values = values[0]
    setattr(env, name, values)


def _same(a: Any, b: Any) -> bool:
    if a is b:
        return True
    try:
        return bool(np.array_equal(a, b)) if isinstance(a, np.ndarray) else bool(a == b)
    except (TypeError, ValueError):  # values that do not compare to one bool are taken as different
        return False
