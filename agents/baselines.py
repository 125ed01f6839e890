"""Non-learning agents and generation baselines.

The agents have SB3's ``predict(obs, state, episode_start, deterministic) -> (actions, state)``, so
they run wherever a trained model does (evaluation, :class:`agents.generate.ProxyGenerator`).

>>> import numpy as np
>>> obs = np.zeros((4, 64), dtype=np.float32)
>>> AlwaysAccept().predict(obs)[0]
array([1, 1, 1, 1])
>>> RandomReject(p=1.0).predict(obs)[0]
array([0, 0, 0, 0])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from agents.accept import accept_model
from proxy_env.config import Action, EnvConfig
from proxy_env.engine.lm import FrozenLM
from proxy_env.errors import ConfigError
from proxy_env.rewards import RewardFn, score


def _batch(obs: np.ndarray) -> tuple[int, bool]:
    """(number of observations, whether ``obs`` was a single unbatched one)."""
    array = np.asarray(obs)
    single = array.ndim == 1
    return (1 if single else int(array.shape[0])), single


def _out(actions: np.ndarray, single: bool) -> np.ndarray:
    return actions[0] if single else actions


class AlwaysAccept:
    """Accept every candidate: the frozen LLM's own top-k/top-p sampling (greedy with ``order="greedy"``)."""

    constant_accept_prob = 1.0  # what :func:`agents.accept.accept_model` reads: P(accept) whatever the observation

    def predict(
        self,
        observation: np.ndarray,
        state: Any = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, Any]:
        """Actions (n,) all ``Action.ACCEPT``; ``state`` is passed through."""
        n, single = _batch(observation)
        return _out(np.full(n, int(Action.ACCEPT), dtype=np.int64), single), state


class RandomReject:
    """Reject each candidate independently with probability ``p``.

    Args:
        p: rejection probability in [0, 1].
        seed: seed of the agent's own generator (its draws are reproducible; ``deterministic`` is
            ignored because randomness is what this baseline is).
    """

    def __init__(self, p: float = 0.2, seed: int | None = None) -> None:
        if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0.0 <= p <= 1.0:
            raise ConfigError(f"p={p!r} must be a probability in [0, 1].")
        self.p = float(p)
        self.rng = np.random.default_rng(seed)

    @property
    def constant_accept_prob(self) -> float:
        """P(accept) whatever the observation (read by :func:`agents.accept.accept_model`)."""
        return 1.0 - self.p

    def predict(
        self,
        observation: np.ndarray,
        state: Any = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, Any]:
        """Actions (n,): ``REJECT`` with probability ``p``, else ``ACCEPT``."""
        n, single = _batch(observation)
        reject = self.rng.random(n) < self.p
        return _out(np.where(reject, int(Action.REJECT), int(Action.ACCEPT)).astype(np.int64), single), state


class BestOfN(NamedTuple):
    """The best of ``n`` sampled responses to one prompt."""

    prompt: str
    text: str  # the highest-reward response
    reward: float
    candidates: list[str]  # all n responses
    rewards: list[float]  # their rewards


@torch.no_grad()
def best_of_n(
    lm: FrozenLM,
    reward_fn: RewardFn,
    prompts: Sequence[str],
    n: int = 4,
    *,
    max_new_tokens: int = EnvConfig.max_new_tokens,
    top_k: int = EnvConfig.top_k,
    top_p: float = EnvConfig.top_p,
    temperature: float = EnvConfig.temperature,
    seed: int | None = 0,
    batch_size: int = 8,
) -> list[BestOfN]:
    """Sample ``n`` full responses per prompt from the frozen LLM and keep the highest-reward one.

    The sampler is Hugging Face's ``generate(do_sample=True)`` with the same truncation as the
    environment's pool (temperature, then top-k, then top-p). The global torch RNG is left as it was.

    Args:
        lm: the frozen LLM.
        reward_fn: ``(prompts, responses) -> floats``.
        prompts: the prompts.
        n: responses sampled per prompt (>= 1).
        max_new_tokens: response budget.
        top_k, top_p, temperature: the sampling distribution.
        seed: seed of the sampling (``None``: not reseeded); results are reproducible for the same
            ``seed`` and ``batch_size``.
        batch_size: prompts per ``generate`` call (each expands to ``n`` rows).
    """
    if not isinstance(n, int) or n < 1:
        raise ConfigError(f"n={n!r} must be an int >= 1 (responses sampled per prompt).")
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size!r} must be >= 1.")
    prompts = list(prompts)
    out: list[BestOfN] = []
    with torch.random.fork_rng(devices=[lm.device.index or 0] if lm.device.type == "cuda" else []):
        if seed is not None:
            torch.manual_seed(seed)
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start : start + batch_size]
            texts = lm.generate(
                chunk,
                max_new_tokens=max_new_tokens,
                do_sample=True,
                num_return_sequences=n,
                top_k=top_k,
                top_p=top_p,
                temperature=temperature,
            )  # len(chunk) * n, prompt-major
            repeated = [p for p in chunk for _ in range(n)]
            values = score(reward_fn, repeated, texts)
            for i, prompt in enumerate(chunk):
                cands, vals = texts[i * n : (i + 1) * n], values[i * n : (i + 1) * n].tolist()
                best = int(np.argmax(vals))
                out.append(BestOfN(prompt, cands[best], float(vals[best]), cands, vals))
    return out


class PowerProxy:
    """A trained proxy whose accept probability is raised to the power ``power``: ``a_λ(s) = a(s)^λ``.

    ``λ = 0`` is always-accept (KL 0), ``λ = 1`` the proxy as trained, ``λ > 1`` steers harder: one
    trained proxy traced along the reward–KL curve. (With a ∝ exp(Q/β), a^λ ∝ exp(λQ/β): the proxy of
    a β/λ penalty, as far as the accept probabilities go.) It always samples its actions, from its
    own seeded generator.

    Args:
        agent: an SB3 model (or anything :func:`agents.accept.accept_model` understands).
        power: λ >= 0.
        seed: seed of the action draws.
    """

    def __init__(self, agent: Any, power: float, seed: int | None = None) -> None:
        if not isinstance(power, (int, float)) or isinstance(power, bool) or not power >= 0:
            raise ConfigError(f"power={power!r} must be a float >= 0 (0: always accept, 1: the proxy as trained).")
        base = accept_model(agent, deterministic=False)
        if base is None:
            raise ConfigError(
                f"{type(agent).__name__} has no accept probability per observation (a recurrent policy?)."
            )
        self._base = (lambda obs: np.full(len(obs), base)) if isinstance(base, float) else base
        self.base_agent = agent  # what it wraps (its trainable parameters are the proxy's)
        self.power = float(power)
        self.observation_space = getattr(agent, "observation_space", None)
        self._rng = np.random.default_rng(seed)

    def accept_prob(self, obs: np.ndarray) -> np.ndarray:
        """P(accept) (n,) for observations (n, d)."""
        return np.clip(np.asarray(self._base(np.atleast_2d(obs)), dtype=np.float64), 0.0, 1.0) ** self.power

    def predict(
        self,
        observation: np.ndarray,
        state: Any = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, Any]:
        """Actions (n,) drawn from :meth:`accept_prob` (``deterministic`` is ignored: this proxy samples)."""
        n, single = _batch(observation)
        accept = self._rng.random(n) < self.accept_prob(np.asarray(observation).reshape(n, -1))
        return _out(accept.astype(np.int64), single), state
