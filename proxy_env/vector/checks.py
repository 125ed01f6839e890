"""``check_vector_env``: a checker for Gymnasium vector envs (Gymnasium ships one for single envs only)."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv

from proxy_env.errors import ProxyEnvError


class VectorEnvCheckError(ProxyEnvError, AssertionError):
    """A vector env breaks the Gymnasium vector API contract."""


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise VectorEnvCheckError(message)


def check_vector_env(venv: VectorEnv, *, seed: int = 0, steps: int = 64) -> None:
    """Check spaces, batch shapes and dtypes, autoreset semantics, seeding and action validation.

    Runs ``steps`` random steps twice from ``reset(seed=seed)`` and compares them. Raises
    :class:`VectorEnvCheckError` (an ``AssertionError``) naming the first problem found.
    """
    venv = getattr(venv, "unwrapped", venv)
    n = venv.num_envs
    _check(isinstance(n, int) and n >= 1, f"num_envs must be a positive int, got {n!r}")
    _check(isinstance(venv.single_action_space, spaces.Space), "single_action_space is not a gymnasium Space")
    _check(isinstance(venv.single_observation_space, spaces.Space), "single_observation_space is not a gymnasium Space")
    mode = venv.metadata.get("autoreset_mode")
    _check(isinstance(mode, AutoresetMode), f"metadata['autoreset_mode'] must be an AutoresetMode, got {mode!r}")
    assert isinstance(mode, AutoresetMode)  # _check raised otherwise

    first = _rollout(venv, mode, seed, steps)
    second = _rollout(venv, mode, seed, steps)
    for t, (a, b) in enumerate(zip(first, second)):
        same = all(np.allclose(x, y, atol=1e-5, equal_nan=True) for x, y in zip(a, b))
        _check(same, f"reset(seed={seed}) then the same actions gave different results at step {t}: not deterministic")

    venv.reset(seed=seed)
    bad = np.full(n, 7) if isinstance(venv.single_action_space, spaces.Discrete) else None
    if bad is not None:
        try:
            venv.step(bad)
        except (ValueError, TypeError, AssertionError, IndexError):
            pass
        else:
            raise VectorEnvCheckError(
                "step() accepted actions outside the action space (7 for Discrete); it must raise"
            )


def _rollout(venv: VectorEnv, mode: AutoresetMode, seed: int, steps: int) -> list[tuple[np.ndarray, ...]]:
    n = venv.num_envs
    obs, info = venv.reset(seed=seed)
    _check_obs(venv, obs, "reset")
    _check(isinstance(info, dict), f"reset() info must be a dict, got {type(info).__name__}")
    rng = np.random.default_rng(seed)
    history: list[tuple[np.ndarray, ...]] = []
    ended_before = np.zeros(n, bool)
    for t in range(steps):
        actions = (
            np.array([rng.integers(int(venv.single_action_space.n)) for _ in range(n)])
            if isinstance(venv.single_action_space, spaces.Discrete)
            else venv.action_space.sample()
        )
        if mode == AutoresetMode.DISABLED and ended_before.any():
            obs, info = venv.reset(options={"reset_mask": ended_before})
            ended_before[:] = False
        obs, reward, terminated, truncated, info = venv.step(actions)
        where = f"step {t}"
        _check_obs(venv, obs, where)
        for name, value, dtype in (
            ("rewards", reward, np.floating),
            ("terminations", terminated, np.bool_),
            ("truncations", truncated, np.bool_),
        ):
            _check(
                isinstance(value, np.ndarray) and value.shape == (n,),
                f"{where}: {name} must be an array of shape ({n},), got {getattr(value, 'shape', type(value))}",
            )
            _check(
                np.issubdtype(value.dtype, dtype), f"{where}: {name} has dtype {value.dtype}, expected {dtype.__name__}"
            )
        _check_info(info, n, where)
        ended = terminated | truncated
        if mode == AutoresetMode.SAME_STEP:
            has = np.asarray(info.get("_final_obs", np.zeros(n, bool)))
            _check(np.array_equal(has, ended), f"{where}: info['_final_obs'] is {has} but episodes ended at {ended}")
            if ended.any():
                final = info["final_obs"]
                _check(
                    isinstance(final, np.ndarray) and final.shape == (n,) and final.dtype == object,
                    f"{where}: info['final_obs'] must be a ({n},) object array holding one observation per ended env "
                    f"(Gymnasium's layout), got {getattr(final, 'dtype', type(final))} {getattr(final, 'shape', '')}",
                )
            for i in np.flatnonzero(ended):
                _check(
                    venv.single_observation_space.contains(
                        np.asarray(info["final_obs"][i], dtype=venv.single_observation_space.dtype)
                    ),
                    f"{where}: final_obs[{i}] is not in single_observation_space",
                )
        if mode == AutoresetMode.NEXT_STEP:
            _check(not (ended & ended_before).any(), f"{where}: an env ended on its NEXT_STEP reset step")
            _check(bool(np.all(reward[ended_before] == 0)), f"{where}: NEXT_STEP reset step must give reward 0")
        ended_before = ended
        history.append((obs, reward, terminated, truncated))
    return history


def _check_obs(venv: VectorEnv, obs: Any, where: str) -> None:
    space = venv.single_observation_space
    _check(isinstance(obs, np.ndarray), f"{where}: observations must be a numpy array, got {type(obs).__name__}")
    assert space.shape is not None, f"{where}: single_observation_space has no shape"
    _check(
        obs.shape == (venv.num_envs, *space.shape),
        f"{where}: observations have shape {obs.shape}, expected {(venv.num_envs, *space.shape)}",
    )
    _check(obs.dtype == space.dtype, f"{where}: observations have dtype {obs.dtype}, expected {space.dtype}")
    _check(all(space.contains(o) for o in obs), f"{where}: an observation is outside single_observation_space")


def _check_info(info: Any, n: int, where: str) -> None:
    _check(isinstance(info, dict), f"{where}: info must be a dict, got {type(info).__name__}")
    for key, value in info.items():
        if isinstance(value, dict):
            _check_info(value, n, f"{where}: info[{key!r}]")
        elif key.startswith("_"):
            _check(
                isinstance(value, np.ndarray) and value.dtype == np.bool_ and value.shape == (n,),
                f"{where}: mask info[{key!r}] must be a bool array of shape ({n},)",
            )
        else:
            _check(
                isinstance(value, np.ndarray) and value.shape[:1] == (n,),
                f"{where}: info[{key!r}] must be an array whose first dimension is num_envs={n}",
            )
