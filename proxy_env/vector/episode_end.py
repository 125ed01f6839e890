"""What an episode pays: the KL charge of each committed token and the reward when the episode ends.

:class:`EpisodeEnd` is the part of :class:`~proxy_env.vector.vector_env.ProxyRLHFVectorEnv` that charges
``kl_coef`` (the proxy's accept probabilities over the whole pool, :meth:`EpisodeEnd.set_accept_fn`) and
scores ended episodes with the reward source in one batched call, with their baselines and normalisation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch

from proxy_env.engine.steering import kl_divergence, steered_probs
from proxy_env.errors import ConfigTypeError, RewardError, StateError
from proxy_env.rewards import score
from proxy_env.vector import infos
from proxy_env.vector.infos import np_copy as _np

AcceptFn = Callable[[np.ndarray], np.ndarray]  # observations (N, d) -> P(accept) (N,)


class KLCharge(NamedTuple):
    """What one step charges for the KL penalty, per env (0 where no token was committed)."""

    logratio: torch.Tensor  # (B,) log π(y) - log q(y) of the committed token: its mean over y is the exact KL
    exact: torch.Tensor  # (B,) KL(π || q) of the position the token was committed at


class EpisodeEnd:
    """KL charges and end-of-episode rewards of :class:`~proxy_env.vector.vector_env.ProxyRLHFVectorEnv` (a mixin of it)."""

    def _scored(self, ended: torch.Tensor) -> dict[str, Any]:
        """:meth:`_end_info`; if scoring fails, the env is marked for reset and the error says so."""
        try:
            return self._end_info(ended)
        except BaseException as exc:
            rows = ended.nonzero().squeeze(1).tolist()
            self._failed = (f"{type(exc).__name__} while scoring the episodes of envs {rows}", ended.clone())
            if not isinstance(exc, Exception):
                raise
            fix = (
                f" The episodes of envs {rows} ended but could not be scored, so they are dropped; the env is "
                "usable again after reset() (every env, or a reset_mask covering those)."
            )
            raise RewardError(f"{exc}{fix}") from exc

    def set_accept_fn(self, accept_fn: AcceptFn | None) -> None:
        """The proxy's P(accept) over observations, ``(N, d) float32 -> (N,)``, used to charge ``kl_coef``."""
        if accept_fn is not None and not callable(accept_fn):
            raise ConfigTypeError(
                f"accept_fn must be a callable (observations (N, d) -> P(accept) (N,)), got {type(accept_fn).__name__}."
            )
        self.accept_fn = accept_fn

    def _kl_charge(self, accept: torch.Tensor, reject: torch.Tensor) -> KLCharge:
        """log π - log q of the token each row commits at its current position this step (0 where none)."""
        if self.accept_fn is None:
            raise StateError(
                f"kl_coef={self.kl_coef} needs the proxy's accept probabilities: call venv.set_accept_fn(fn) "
                "(agents.kl_control.KLPenaltyCallback does it; `proxy-rlhf train` installs it), or pass kl_coef=0."
            )
        view = self.pool_observations()
        b, k, d = view.obs.shape
        a = torch.as_tensor(
            np.asarray(self.accept_fn(_np(view.obs.reshape(b * k, d))), dtype=np.float64), device=view.q.device
        ).reshape(b, k)
        pi = steered_probs(view.q, a.masked_fill(view.q == 0, 0.0), self.config.max_rejections, order=self.config.order)
        after = self.offer + 1
        cap_forced = (
            reject & self._forced_at(after) & (not self.config.forced_steps)
        )  # committed right after the rejection
        index = torch.where(accept, self.offer, torch.where(cap_forced, after, 0)).clamp(max=k - 1)
        committed = accept | cap_forced
        log_ratio = (pi.gather(1, index[:, None]).clamp_min(1e-300).log() - view.q.gather(1, index[:, None]).log())[
            :, 0
        ]
        zero = torch.zeros_like(log_ratio)
        return KLCharge(
            torch.where(committed, log_ratio, zero), torch.where(committed, kl_divergence(pi, view.q), zero)
        )

    def _end_info(self, ended: torch.Tensor) -> dict[str, Any]:
        """Episode summaries of ``ended`` rows, scored by the reward source in one batched call."""
        index = ended.nonzero().squeeze(1).tolist()
        ids = [self.response[i, : int(self.position[i])].tolist() for i in index]
        prompts = [self.prompts[int(self.prompt_index[i])] for i in index]
        texts = [self.lm.decode(x) for x in ids]
        raw = np.zeros(self.num_envs)
        raw[index] = score(self.reward_fn, prompts, texts)
        baseline = np.zeros(self.num_envs)
        if self._baseline is not None:
            baseline[index] = self._baseline([int(self.prompt_index[i]) for i in index], prompts)
        elif self.config.reward_baseline is not None:
            baseline[index] = float(self.config.reward_baseline)
        numeric = {
            "decisions": _np(self.decisions),
            "num_rejections": _np(self.rejections),
            "forced_commits": _np(self.forced),
            "response_length": _np(self.position),
            "reward_raw": raw,
            "reward_baseline": baseline,
            "reject_cost": self.config.reject_cost * _np(self.rejections.double()),
        }
        text = {"prompt": prompts, "response": texts, "response_ids": ids} if self.info_text else None
        return infos.end_info(_np(ended), numeric, text)

    def _normalize(self, terminal: np.ndarray, ended: np.ndarray) -> np.ndarray:
        """Update the running statistics with the ended rows' terminal rewards, then standardise them."""
        self.reward_stats.update(terminal[ended])
        return np.where(ended, self.reward_stats.normalize(terminal), 0.0)
