"""What the agent sees: the observation of the candidate on offer, the per-step outputs, the whole pool.

:class:`Observing` is the part of :class:`~proxy_env.vector.vector_env.ProxyRLHFVectorEnv` that turns its
state into the observation (``"candidate"``, ``"candidate_stats"`` or ``"prefix"``), the per-step info and
(with ``observation="prefix"``) every candidate's observation at once (:meth:`Observing.pool_observations`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch

from proxy_env.engine import candidates as skam
from proxy_env.engine.steering import pool_embedding, prefix_observation
from proxy_env.errors import ConfigError
from proxy_env.vector import infos


class PoolView(NamedTuple):
    """Every env's current pool as the proxy sees it (``observation="prefix"``)."""

    obs: torch.Tensor  # (B, K, d) float32: the observation each candidate would have
    q: torch.Tensor  # (B, K) float64 unsteered (truncated) probabilities, 0 on padding
    tokens: torch.Tensor  # (B, K) token ids, in offer order
    size: torch.Tensor  # (B,) valid candidates


class Observing:
    """Observations and per-step outputs of :class:`~proxy_env.vector.vector_env.ProxyRLHFVectorEnv` (a mixin of it)."""

    def _observation(self) -> torch.Tensor:
        """Every env's observation (B, d) float32, on the env's device."""
        if self._prefix:
            pool = self.pool
            return self._prefix_obs(
                skam.select(pool.tokens, self.offer)[:, None],
                skam.select(pool.logprob, self.offer)[:, None],
                skam.select(pool.logprob_trunc, self.offer)[:, None],
            )[:, 0]
        obs = self.hidden
        if self.config.observation == "candidate_stats":
            stats = torch.stack(
                [
                    skam.select(self.pool.logprob, self.offer),
                    skam.select(self.pool.logprob_trunc, self.offer),
                    self.offer.float() / self.config.top_k,
                ],
                dim=1,
            )  # (B, 3)
            obs = torch.cat([obs, stats.clamp(min=-1e4)], dim=1)
        return obs.float()

    def _outputs(self, **extra: torch.Tensor) -> tuple[np.ndarray, dict[str, Any], dict[str, np.ndarray]]:
        """The observation, the per-step info and the ``extra`` (B,) tensors, in one device-to-host copy."""
        # forced_steps: the candidate on offer is committed whatever the action (the step is not a decision)
        forced = self._forced_at(self.offer) if self.config.forced_steps else torch.zeros_like(self.needs_reset)
        step = infos.step_tensors(self.pool, self.offer, self.position, forced)
        names = ["obs", *step, *extra]
        arrays = dict(zip(names, infos.host_copy(self._observation(), *step.values(), *extra.values())))
        info = infos.step_info(arrays, self.lm.tokenizer if self.info_text else None)
        return arrays["obs"], info, {key: arrays[key] for key in extra}

    def _prefix_obs(
        self, tokens: torch.Tensor, logprob: torch.Tensor, logprob_trunc: torch.Tensor, *, whole_pool: bool = False
    ) -> torch.Tensor:
        """ "prefix" observations (B, K, 3H + 2) of candidates ``tokens`` (B, K) at each row's position.

        ``whole_pool``: ``tokens`` are the current pool itself, so ``ē`` comes from the same embeddings.
        """
        mean = None if whole_pool else pool_embedding(self.lm, self.pool.tokens, self.pool.logprob_trunc)
        return prefix_observation(self.lm, self.hidden, tokens, logprob, logprob_trunc, pool_mean=mean)

    def pool_observations(self) -> PoolView:
        """Every candidate of every env's current pool as the proxy would observe it (``observation="prefix"``).

        This is what makes the steered distribution cheap: one proxy call over ``obs`` gives the accept
        probability of the whole pool, with no LLM forward.
        """
        if not self._prefix:
            raise ConfigError(
                f"pool_observations() needs observation='prefix', got {self.config.observation!r}: with 'candidate' "
                "each candidate's observation costs an LLM forward."
            )
        pool = self.pool
        q = pool.logprob_trunc.double().exp()
        return PoolView(
            self._prefix_obs(pool.tokens, pool.logprob, pool.logprob_trunc, whole_pool=True),
            q / q.sum(-1, keepdim=True),
            pool.tokens,
            pool.size,
        )
