"""tianshou 2.x's view of the env: the batched vector env as a ``BaseVectorEnv`` its ``Collector`` steps.

tianshou's ``Collector`` refuses a Gymnasium ``VectorEnv`` (it calls ``len(env)``, ``env.reset(env_id=...)`` and
``env.step(action, id)``), and its ``DummyVectorEnv`` of single envs loads one LLM per env.
:class:`TianshouVectorEnv` only translates: the batched MDP stays in
:class:`~proxy_env.vector.vector_env.ProxyRLHFVectorEnv` (one LLM, every row in one forward), which must run with
``SAME_STEP`` autoreset. tianshou has no autoreset: a finished env returns its last observation and waits for
``reset(env_id=i)``. The env has already started env ``i``'s next episode in that step, so the adapter keeps its
first observation and hands it over on that reset, with no LLM call. ``step(action, id=ids)`` with only some envs
still steps the whole batch (one forward): the rows left out take ``ACCEPT`` and their transitions are discarded,
so they must be reset before they are stepped again, and stepping one without the reset raises
:class:`~proxy_env.errors.StateError` instead of acting on a state tianshou never saw. tianshou's ``Collector``
leaves envs out only when collecting ``n_episode`` episodes, and resets every env at the end of that collection.

tianshou itself is not imported here (the adapter is duck-typed to ``BaseVectorEnv``, as tianshou's own
``VectorEnvWrapper`` overrides the whole interface); the training side is :mod:`agents.tianshou_backend`.

>>> import gymnasium as gym, numpy as np, proxy_env
>>> from proxy_env.adapters.tianshou import TianshouVectorEnv
>>> from proxy_env.engine.tiny import tiny_lm
>>> venv = gym.make_vec("proxy_env/ProxyRLHF-v1", num_envs=3, vectorization_mode="vector_entry_point",
...                     model=tiny_lm(), prompts=["Hi!"], max_new_tokens=2, reward=lambda p, r: [1.0] * len(r))
>>> env = TianshouVectorEnv(venv)
>>> obs, infos = env.reset(seed=0)
>>> len(env), obs.shape, infos[0]["position"]
(3, (3, 64), 0)
>>> for _ in range(2):
...     obs, rew, terminated, truncated, infos = env.step(np.ones(2, dtype=np.int64), id=[0, 2])
>>> obs.shape, rew.tolist(), terminated.tolist(), [info["env_id"] for info in infos]
((2, 64), [1.0, 1.0], [True, True], [0, 2])
>>> obs, infos = env.reset(env_id=[0, 1, 2])  # env 1 was left out of both steps: it is reset for real
>>> obs.shape, [info["position"] for info in infos]
((3, 64), [0, 0, 0])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

from proxy_env.adapters import check_adapted
from proxy_env.config import Action
from proxy_env.errors import ConfigError, StateError
from proxy_env.vector.infos import STEP_KEYS, TEXT_STEP_KEYS

# what tianshou's BaseVectorEnv returns one of per env (its GYM_RESERVED_KEYS): the single env's value
PER_ENV_ATTRS = {"action_space": "single_action_space", "observation_space": "single_observation_space"}
# a row's state as tianshou sees it
READY, DONE, STALE = 0, 1, 2  # steppable; ended, its next episode waiting for reset(env_id); advanced unseen
# the candidate on offer: what a reset's info holds (the text key only with info_text=True)
STEP_INFO_KEYS = STEP_KEYS + TEXT_STEP_KEYS


class TianshouVectorEnv:
    """A tianshou 2.x ``BaseVectorEnv`` view of a Gymnasium vector env with ``SAME_STEP`` autoreset.

    ``reset(env_id=None, seed=..., options=...)`` and ``step(action, id=None)`` return what tianshou's vector envs
    return: observations stacked over the chosen envs and an object array of one info dict per env. An info holds
    the candidate on offer (``token_id``, ``logprob``, ...), ``rejected`` and ``env_id``; the info of a finished env
    holds its end-of-episode fields (``reward_raw``, ``decisions``, ``num_rejections``, ``response_length``...), and its
    observation is the episode's last one (tianshou's ``obs_next``). A seed is the env's: an int gives env ``i``
    the seed ``seed + i`` (tianshou's ``DummyVectorEnv`` would give every env the same one), a list one per chosen env.

    Args:
        venv: a vector env made with ``gym.make_vec(..., vectorization_mode="vector_entry_point")`` (or a
            :class:`~proxy_env.vector.vector_env.ProxyRLHFVectorEnv`) with ``autoreset_mode=SAME_STEP``; another mode
            raises :class:`~proxy_env.errors.AutoresetModeError`.
    """

    def __init__(self, venv: gym.vector.VectorEnv) -> None:
        check_adapted(
            "TianshouVectorEnv",
            venv,
            AutoresetMode.SAME_STEP,
            "the adapter hands tianshou the last observation of a finished env and keeps the next episode's first "
            "for reset(env_id=...), which only SAME_STEP returns in the same step",
        )
        self.venv = venv
        self.env_num = venv.num_envs
        # BaseVectorEnv's attributes that tianshou's collectors read: a synchronous env, every env ready
        self.is_async, self.is_closed = False, False
        self.wait_num, self.timeout = self.env_num, None
        self.waiting_id: list[int] = []
        self.ready_id = list(range(self.env_num))
        self._started = False
        self._status = np.full(self.env_num, STALE)
        self._first_obs: dict[int, tuple[np.ndarray, dict[str, Any]]] = {}  # DONE rows: their next episode's start

    def __len__(self) -> int:
        return self.env_num

    @property
    def unwrapped(self) -> Any:
        """The underlying :class:`~proxy_env.vector.vector_env.ProxyRLHFVectorEnv`."""
        return self.venv.unwrapped

    @property
    def action_space(self) -> list[gym.Space]:
        """One ``Discrete(2)`` per env, as tianshou's vector envs list them."""
        return self.get_env_attr("action_space")

    @property
    def observation_space(self) -> list[gym.Space]:
        return self.get_env_attr("observation_space")

    # ------------------------------------------------------------------ stepping
    def reset(
        self, env_id: int | Sequence[int] | np.ndarray | None = None, **kwargs: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        """Start new episodes in the envs ``env_id`` (None: all); ``kwargs``: the env's ``seed`` and ``options``.

        A finished env whose next episode the env already started (``SAME_STEP``) gets that episode's first
        observation with no LLM call, unless a seed or options are given; any other env is reset for real.
        """
        self._check_open()
        unknown = set(kwargs) - {"seed", "options"}
        if unknown:
            raise ConfigError(f"reset() takes env_id, seed and options; got {sorted(unknown)}.")
        ids = self._ids(env_id)
        seed, options = kwargs.get("seed"), dict(kwargs.get("options") or {})
        if "reset_mask" in options:
            raise ConfigError("options['reset_mask'] is the adapter's to set: choose the envs with env_id=...")
        cached = [i for i in ids if self._status[i] == DONE and seed is None and not options]
        fresh = [i for i in ids if i not in cached]
        if fresh:
            mask = np.zeros(self.env_num, dtype=bool)
            mask[fresh] = True
            if not mask.all():
                options["reset_mask"] = mask
            seeds = self._seeds(seed, ids, fresh)  # one per env (documented); Gymnasium's annotation says int only
            obs, info = self.venv.reset(seed=seeds, options=options or None)  # type: ignore[arg-type]
            for i in fresh:
                self._first_obs[i] = (np.asarray(obs[i], dtype=np.float32), self._row(info, i, STEP_INFO_KEYS))
        out = [self._first_obs.pop(i) for i in ids]
        self._status[ids] = READY
        self._started = True
        return np.stack([o for o, _ in out]), _objects([dict(info, env_id=i) for i, (_, info) in zip(ids, out)])

    def step(
        self, action: Any, id: int | Sequence[int] | np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Step the envs ``id`` (None: all) with ``action`` (one per chosen env); the whole batch moves.

        Returns ``(obs, rew, terminated, truncated, info)`` over the chosen envs, in their order.
        """
        self._check_open()
        ids = self._ids(id)
        act = np.asarray(action.detach().cpu() if hasattr(action, "detach") else action).reshape(-1)
        if len(act) != len(ids):
            raise ConfigError(f"step() got {len(act)} actions for {len(ids)} envs (id={ids}); pass one per env.")
        if not self._started:
            raise StateError("step() called before reset(); call reset() first.")
        waiting = [i for i in ids if self._status[i] != READY]
        if waiting:
            raise StateError(
                f"envs {waiting} finished, or advanced while left out of a step, and have not been reset since; "
                f"call reset(env_id={waiting}) before stepping them."
            )
        full = np.full(self.env_num, int(Action.ACCEPT), dtype=np.int64)  # the rows left out: discarded
        full[ids] = act
        obs, reward, terminated, truncated, info = self.venv.step(full)
        left_out = np.ones(self.env_num, dtype=bool)
        left_out[ids] = False
        self._status[left_out] = STALE
        for j in np.flatnonzero(left_out).tolist():
            self._first_obs.pop(j, None)
        ended = np.asarray(terminated | truncated, dtype=bool)
        final = info.get("final_info", {})
        last_obs, infos = [], []
        for i in ids:
            entry = {**self._row(info, i, None), "env_id": i}
            if ended[i]:  # its last observation goes to tianshou; the next episode's first waits for reset(i)
                self._first_obs[i] = (np.asarray(obs[i], dtype=np.float32), self._row(info, i, STEP_INFO_KEYS))
                self._status[i] = DONE
                entry.update(self._row(final, i, None))
                last_obs.append(np.asarray(info["final_obs"][i], dtype=np.float32))
            else:
                last_obs.append(np.asarray(obs[i], dtype=np.float32))
            infos.append(entry)
        return (
            np.stack(last_obs),
            np.asarray(reward, dtype=np.float64)[ids],
            np.asarray(terminated, dtype=bool)[ids],
            np.asarray(truncated, dtype=bool)[ids],
            _objects(infos),
        )

    def seed(self, seed: int | Sequence[int | None] | None = None) -> list[list[int] | None]:
        """Reset every env with ``seed`` (an int: env ``i`` gets ``seed + i``), as tianshou's workers seed by resetting."""
        every = list(range(self.env_num))
        seeds = self._seeds(seed, every, every)
        self.reset(seed=seed)
        return [None if s is None else [s] for s in seeds or [None] * self.env_num]

    # ------------------------------------------------------------------ attributes
    def get_env_attr(self, key: str, id: int | Sequence[int] | np.ndarray | None = None) -> list[Any]:
        """The batched env's attribute once per chosen env (its single-env space for the spaces)."""
        value = getattr(self.venv.unwrapped, PER_ENV_ATTRS.get(key, key))
        return [value for _ in self._ids(id, unique=False)]

    def set_env_attr(self, key: str, value: Any, id: int | Sequence[int] | np.ndarray | None = None) -> None:
        """Set an attribute of the batched env; every env shares it, so ``id`` must cover all."""
        if sorted(self._ids(id)) != list(range(self.env_num)):
            raise ConfigError(
                f"set_env_attr(id={id!r}): the {self.env_num} envs share one batched env, so only id=None (all) works."
            )
        setattr(self.venv.unwrapped, key, value)

    def render(self, **kwargs: Any) -> list[Any]:
        """One ``"ansi"`` frame per env (None each without ``render_mode="ansi"``)."""
        frames: Any = self.venv.render()
        return list(frames) if frames is not None else [None] * self.env_num

    def close(self) -> None:
        if not self.is_closed:
            self.venv.close()
            self.is_closed = True

    # ------------------------------------------------------------------ helpers
    def _check_open(self) -> None:
        if self.is_closed:
            raise StateError("the env is closed: its LLM cache was released; make a new one.")

    def _ids(self, env_id: Any, unique: bool = True) -> list[int]:
        if env_id is None:
            return list(range(self.env_num))
        ids = [int(i) for i in np.asarray(env_id).reshape(-1)]  # an int, a list or an array
        bad = [i for i in ids if not 0 <= i < self.env_num]
        if bad or (unique and len(set(ids)) != len(ids)):
            raise ConfigError(f"env ids {ids} must be distinct ints in [0, {self.env_num}).")
        return ids

    def _seeds(self, seed: Any, ids: list[int], chosen: list[int]) -> list[int | None] | None:
        """One seed per env for the env's reset: ``seed + i`` for env ``i`` of ``chosen``, None elsewhere."""
        if seed is None:
            return None
        if np.isscalar(seed):
            from proxy_env.vector.seeding import env_seeds

            per_env = env_seeds(seed, self.env_num)
            assert per_env is not None  # an int seed gives one per env
        else:
            given = list(seed)
            if len(given) != len(ids):
                raise ConfigError(
                    f"seed has {len(given)} values for {len(ids)} envs (env_id); pass an int or one per env."
                )
            per_env = [None] * self.env_num
            for i, value in zip(ids, given):
                per_env[i] = value
        return [per_env[i] if i in chosen else None for i in range(self.env_num)]

    def _row(self, info: dict[str, Any], i: int, keys: tuple[str, ...] | None) -> dict[str, Any]:
        """Env ``i``'s entries of a batched info (``keys``, or every per-env array but masks and SAME_STEP's own)."""
        if keys is None:
            keys = tuple(
                k
                for k, v in info.items()
                if not k.startswith("_")
                and k not in ("final_obs", "final_info")
                and isinstance(v, np.ndarray)
                and v.shape[:1] == (self.env_num,)
                and (f"_{k}" not in info or bool(info[f"_{k}"][i]))
            )
        return {k: _plain(info[k][i]) for k in keys if k in info}


def _plain(value: Any) -> Any:
    """numpy scalars as Python scalars; everything else as is."""
    return value.item() if isinstance(value, np.generic) else value


def _objects(dicts: list[dict[str, Any]]) -> np.ndarray:
    """An (N,) object array of dicts (tianshou's per-env infos), built element by element."""
    out = np.empty(len(dicts), dtype=object)
    for i, d in enumerate(dicts):
        out[i] = d
    return out
