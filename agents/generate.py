"""Aligned generation for new prompts: the frozen LLM proposes, a trained proxy accepts or rejects.

Generation runs the vector env itself (one episode per prompt, a batch of prompts at once), so a
proxy generates exactly as it was trained: same pool, same order, same observations.

>>> from agents.baselines import AlwaysAccept
>>> from proxy_env.engine.tiny import tiny_lm
>>> gen = ProxyGenerator(tiny_lm(), AlwaysAccept(), max_new_tokens=4)
>>> [(g.prompt, len(g.token_ids) <= 4, g.rejections) for g in gen.generate(["Hi!", "Hello there."])]
[('Hi!', True, 0), ('Hello there.', True, 0)]
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np

import proxy_env
from proxy_env.config import Action
from proxy_env.engine.lm import FrozenLM
from proxy_env.errors import ActionError, ConfigError
from proxy_env.prompts import load_prompts

# env kwargs that make no sense for generation (rewards are not computed; prompts come per call). The last two are
# reward transforms that left the env in 0.2.0 for wrappers: checkpoints saved before still record them.
_IGNORED = ("reward", "prompts", "reward_baseline", "reject_cost", "reward_normalize")


class Generation(NamedTuple):
    """One prompt's aligned response."""

    prompt: str
    text: str
    token_ids: list[int]
    decisions: int  # candidates the proxy was asked about
    rejections: int  # of which it rejected
    rejected_ids: list[int]  # the rejected candidates' token ids, in order
    forced_commits: int  # tokens committed without asking (last candidate or rejection cap)


def _zero_reward(prompts: list[str], responses: list[str]) -> list[float]:
    return [0.0] * len(responses)


class ProxyGenerator:
    """Batched aligned generation with a proxy (an SB3 model or anything with its ``predict``).

    Args:
        lm_or_env_kwargs: a :class:`FrozenLM`, or the environment's keyword arguments (e.g. a
            checkpoint's ``meta.env_kwargs``) whose ``model`` is a ``FrozenLM``, ``"tiny"``, or a name.
        proxy: the agent; ``predict(obs, state, episode_start, deterministic) -> (actions, state)``.
        batch_size: prompts generated at once (rows of the batched LLM).
        deterministic: proxy actions by argmax (True) or sampled from the policy (False).
        seed: seed of the env's candidate order (``order="sample"``); reproducible for the same
            seed and batch composition.
        **env_overrides: environment keyword arguments that replace those above (``max_new_tokens``...).
    """

    def __init__(
        self,
        lm_or_env_kwargs: FrozenLM | dict[str, Any],
        proxy: Any,
        *,
        batch_size: int = 16,
        deterministic: bool = True,
        seed: int = 0,
        **env_overrides: Any,
    ) -> None:
        kwargs: dict[str, Any] = (
            {"model": lm_or_env_kwargs} if isinstance(lm_or_env_kwargs, FrozenLM) else dict(lm_or_env_kwargs)
        )
        kwargs.update(env_overrides)
        for key in _IGNORED:
            kwargs.pop(key, None)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size={batch_size!r} must be an int >= 1.")
        self.lm = _resolve_model(kwargs.pop("model", "default"), kwargs.pop("device", None))
        self.env_kwargs = kwargs
        self.proxy, self.batch_size, self.deterministic, self.seed = proxy, batch_size, deterministic, seed

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        *,
        model: FrozenLM | str | None = None,
        device: str = "auto",
        trust: bool = False,
        **kwargs: Any,
    ) -> ProxyGenerator:
        """A generator over the proxy and environment settings of a checkpoint folder.

        Args:
            path: a folder written by :func:`agents.saving.checkpoint.save_checkpoint`.
            model: the frozen LLM, required when the checkpoint was trained on a model object; it
                must have the fingerprint of the one the proxy was trained on.
            device: torch device of the proxy policy.
            trust: also load an SB3 ``proxy.zip`` checkpoint (format 1), whose loading unpickles
                Python objects and can run arbitrary code (see :func:`agents.saving.checkpoint.load_checkpoint`).
            **kwargs: passed to :class:`ProxyGenerator` (``batch_size``, ``max_new_tokens``...).
        """
        from dataclasses import fields

        from agents.saving.checkpoint import CheckpointError, check_lm, load_checkpoint
        from proxy_env.config import EnvConfig
        from proxy_env.errors import did_you_mean

        checkpoint = load_checkpoint(path, device=device, trust=trust)
        env_kwargs = dict(checkpoint.meta.env_kwargs)
        known = [f.name for f in fields(EnvConfig)] + list(_IGNORED)
        unknown = [key for key in env_kwargs if key not in known]
        if unknown:  # a hand-edited or foreign config: say which file holds the key, not only the env's complaint
            raise CheckpointError(
                f"checkpoint={str(path)!r}: proxy_config.json's env_kwargs holds {unknown[0]!r}, which is not a setting "
                f"of the env." + did_you_mean(unknown[0], known) + " Fix or remove it, or re-save the checkpoint."
            )
        if model is not None:
            env_kwargs["model"] = model
        generator = cls(env_kwargs, checkpoint.model, **kwargs)
        check_lm(checkpoint.meta, generator.lm, path)
        return generator

    def generate(self, prompts: Sequence[str] | str) -> list[Generation]:
        """Aligned responses to ``prompts``, in order (a single string is one prompt)."""
        items = load_prompts([prompts] if isinstance(prompts, str) else list(prompts))
        out: list[Generation] = []
        for start in range(0, len(items), self.batch_size):
            out.extend(self._batch(items[start : start + self.batch_size]))
        return out

    def _make(self, prompts: list[str]) -> Any:
        kwargs = {**self.env_kwargs, "info_text": True}  # the responses are read from the episode-end infos
        venv = gym.make_vec(
            proxy_env.ENV_ID,
            num_envs=len(prompts),
            vectorization_mode="vector_entry_point",
            model=self.lm,
            prompts=prompts,
            reward=_zero_reward,
            **kwargs,
        )
        space = getattr(self.proxy, "observation_space", None)
        if space is not None and space.shape != venv.single_observation_space.shape:
            venv.close()
            raise ConfigError(
                f"the proxy expects observations of shape {space.shape} but the env gives "
                f"{venv.single_observation_space.shape}; pass the model and observation= the proxy was trained with."
            )
        return venv

    def _batch(self, prompts: list[str]) -> list[Generation]:
        """One episode per prompt, env ``i`` on ``prompts[i]``, all in one vector env."""
        m = len(prompts)
        venv = self._make(prompts)
        try:
            obs, info = venv.reset(seed=[self.seed + i for i in range(m)], options={"prompt_index": np.arange(m)})
            results: list[Generation | None] = [None] * m
            rejected: list[list[int]] = [[] for _ in range(m)]
            state, starts = None, np.ones(m, dtype=bool)
            while any(r is None for r in results):
                actions, state = self.proxy.predict(
                    obs, state=state, episode_start=starts, deterministic=self.deterministic
                )
                actions = _proxy_actions(actions, m)
                for i in np.flatnonzero(actions == Action.REJECT):
                    if results[i] is None:
                        rejected[i].append(int(info["token_id"][i]))
                obs, _, terminated, truncated, info = venv.step(actions)
                starts = np.asarray(terminated | truncated)
                for i in np.flatnonzero(starts):
                    if results[i] is None:
                        results[i] = _result(prompts[i], info["final_info"], int(i), rejected[i])
        finally:
            venv.close()
        return [r for r in results if r is not None]


def _result(prompt: str, final: dict[str, Any], i: int, rejected: list[int]) -> Generation:
    return Generation(
        prompt,
        str(final["response"][i]),
        [int(t) for t in final["response_ids"][i]],
        int(final["decisions"][i]),
        int(final["num_rejections"][i]),
        rejected,
        int(final["forced_commits"][i]),
    )


def _resolve_model(model: Any, device: str | None) -> FrozenLM:
    if isinstance(model, str) and model.startswith("<object"):
        raise ConfigError(
            f"model={model!r}: the checkpoint was trained on a model object, which is not saved; pass model= "
            "(the same LLM; CLI: --model 'default', 'tiny', a hub id or a path)."
        )
    from proxy_env.engine.models import as_frozen_lm

    return as_frozen_lm(model, device=device)


def _proxy_actions(actions: Any, rows: int) -> np.ndarray:
    """The proxy's ``predict`` output as ``rows`` int64 actions; anything but one 0/1 per row is refused, named."""
    array = np.asarray(actions)
    if array.size != rows:
        raise ActionError(
            f"the proxy's predict returned {array.size} actions for {rows} observations; it must return one action "
            "(0 = REJECT, 1 = ACCEPT) per row."
        )
    array = array.reshape(rows)
    bad = ~np.isin(array, (0, 1))
    if bad.any():
        raise ActionError(
            f"the proxy's predict returned {array[bad][0].item()!r} as an action; actions are 0 (REJECT) or 1 (ACCEPT). "
            "A probability is not an action: sample it or threshold it first."
        )
    return array.astype(np.int64)
