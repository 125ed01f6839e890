"""``observation="prefix"``: observe what the LLM already computed at the position; only committed tokens are fed.

The observation of a candidate is ``[h, e, ē, log p, log q]`` (:func:`~proxy_env.engine.steering.prefix_observation`):
``h`` the hidden state of the last committed token, ``e`` the candidate's input embedding, ``ē`` the pool's
mean embedding, and its log-probabilities. A rejection therefore costs no LLM forward, and every pool
candidate's observation is known at once (:meth:`PrefixDecoder.pool_observations`), which is what makes the
exact KL charge (:meth:`PrefixDecoder.kl_charge`) and steered generation one small proxy call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch

from proxy_env.config import EnvConfig, prefix_dim
from proxy_env.engine import candidates
from proxy_env.engine.lm import FrozenLM
from proxy_env.engine.outputs import StepOutput
from proxy_env.engine.steering import kl_divergence, pool_embedding, prefix_observation, steered_probs
from proxy_env.vector.decoder import Decoder

AcceptFn = Callable[[np.ndarray], np.ndarray]  # observations (N, d) float32 -> P(accept) (N,)


class PoolView(NamedTuple):
    """Every env's current pool as the proxy sees it."""

    obs: torch.Tensor  # (B, K, d) float32: the observation each candidate would have
    q: torch.Tensor  # (B, K) float64 unsteered (truncated) probabilities, 0 on padding
    tokens: torch.Tensor  # (B, K) token ids, in offer order
    size: torch.Tensor  # (B,) valid candidates


class KLCharge(NamedTuple):
    """What one step charges for the KL penalty, per env (0 where no token was committed)."""

    logratio: torch.Tensor  # (B,) log π(y) - log q(y) of the committed token: its mean over y is the exact KL
    exact: torch.Tensor  # (B,) KL(π || q) of the position the token was committed at


class PrefixDecoder(Decoder):
    """Feeds committed tokens only; a forced candidate is committed at once, or offered as a step (``forced_steps``)."""

    def __init__(self, lm: FrozenLM, config: EnvConfig, prompts: list[str], num_envs: int, *, render: bool) -> None:
        super().__init__(lm, config, prompts, num_envs, render=render)
        self.observation_size = prefix_dim(lm.hidden_size)

    def observation(self) -> torch.Tensor:
        pool, offer = self.state.pool, self.state.offer
        tokens, logprob, logq = (candidates.select(x, offer)[:, None] for x in (pool.tokens, pool.logprob, pool.logq))
        return self._observe(tokens, logprob, logq)[:, 0]

    def pool_observations(self) -> PoolView:
        """Every candidate of every env's current pool as the proxy would observe it."""
        pool = self.state.pool
        q = pool.logq.double().exp()
        obs = self._observe(pool.tokens, pool.logprob, pool.logq, whole_pool=True)
        return PoolView(obs, q / q.sum(-1, keepdim=True), pool.tokens, pool.size)

    def _observe(
        self, tokens: torch.Tensor, logprob: torch.Tensor, logq: torch.Tensor, *, whole_pool: bool = False
    ) -> torch.Tensor:
        """Observations (B, K, 3H + 2) of candidates ``tokens`` (B, K) at each row's position.

        ``whole_pool``: ``tokens`` are the current pool itself, so ``ē`` comes from the same embeddings.
        """
        pool = self.state.pool
        mean = None if whole_pool else pool_embedding(self.lm, pool.tokens, pool.logq)
        return prefix_observation(self.lm, self.state.hidden, tokens, logprob, logq, pool_mean=mean)

    def transition(self, accept: torch.Tensor, reject: torch.Tensor) -> None:
        token = self.on_offer()
        self._reject(reject)
        self._commit_tokens(accept, token)
        # a rejection that leaves a forced candidate commits it now (without forced_steps): same forward
        forced = reject & self.forced_at(self.state.offer) & (not self.config.forced_steps)
        self.state.forced += forced.long()
        token = torch.where(forced, self.on_offer(), token)
        self._commit_tokens(forced, token)
        self._feed(accept | forced, token)

    def _prefilled(self, rows: torch.Tensor, out: StepOutput, feed: bool) -> None:
        hidden = torch.zeros_like(self.state.hidden)
        hidden[rows] = out.hidden
        self._set_hidden(rows, hidden)
        if feed:
            self._settle(rows)

    def _feed(self, rows: torch.Tensor, token: torch.Tensor) -> None:
        """Commit ``token`` (B,) of ``rows`` to the cache; their next pool comes from its forward."""
        state = self.state
        rows = rows & ~state.terminated
        if not self.cache.static_batch and not bool(rows.any()):  # a static batch steps anyway: no read
            return
        hidden, logits, all_rows = self._step_rows(token, rows)
        self.cache.commit(rows)
        self._set_hidden(rows, hidden)
        state.offer = torch.where(rows, 0, state.offer)
        self._set_pool(rows, self._ordered(self._truncate_rows(logits, rows, state.pool, all_rows)), "pool")
        if not self.config.forced_steps:
            self._settle(rows)

    def _settle(self, rows: torch.Tensor) -> None:
        """Commit, without asking, each of ``rows`` whose candidate on offer is forced, and feed it."""
        state = self.state
        forced = rows & self.forced_at(state.offer) & ~state.terminated
        if self.config.forced_steps or not bool(forced.any()):
            return
        token = self.on_offer()
        state.forced += forced.long()
        self._commit_tokens(forced, token)
        self._feed(forced, token)

    def kl_charge(self, accept: torch.Tensor, reject: torch.Tensor, accept_fn: AcceptFn) -> KLCharge:
        """log π - log q of the token each row commits at its current position this step (0 where none).

        π is the steered distribution of the position (:func:`~proxy_env.engine.steering.steered_probs`)
        under ``accept_fn``'s accept probabilities of the whole pool.
        """
        view = self.pool_observations()
        b, k, d = view.obs.shape
        observations = view.obs.reshape(b * k, d).detach().cpu().numpy()
        a = torch.as_tensor(np.asarray(accept_fn(observations), dtype=np.float64), device=view.q.device).reshape(b, k)
        pi = steered_probs(view.q, a.masked_fill(view.q == 0, 0.0), self.config.max_rejections, order=self.config.order)
        offer = self.state.offer
        after = offer + 1
        cap_forced = (
            reject & self.forced_at(after) & (not self.config.forced_steps)
        )  # committed right after the rejection
        index = torch.where(accept, offer, torch.where(cap_forced, after, 0)).clamp(max=k - 1)
        committed = accept | cap_forced
        log_ratio = (pi.gather(1, index[:, None]).clamp_min(1e-300).log() - view.q.gather(1, index[:, None]).log())[
            :, 0
        ]
        zero = torch.zeros_like(log_ratio)
        return KLCharge(
            torch.where(committed, log_ratio, zero), torch.where(committed, kl_divergence(pi, view.q), zero)
        )
