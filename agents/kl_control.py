"""The KL-regularised objective for any SB3 algorithm: the env charges β·(log π − log q), a callback steers β.

The env (``observation="prefix"``, ``kl_coef=β``) charges every committed token ``β·(log π_t(y_t) −
log q_t(y_t))``, with ``π_t`` the steered next-token distribution from the proxy's *current* accept
probabilities over the whole pool and ``q_t`` the unsteered pool. Summed over a response this is the
sequence log-ratio, whose mean is the exact KL of the steered sampler from the unsteered one, and
the policy gradient over accept/reject decisions stays unbiased (RLHF's per-token KL penalty, as in
TRL and RL4LMs; MARA's per-decision reward). :class:`KLPenaltyCallback` hands the env the policy's
accept probabilities at every rollout and, with a target, adapts β as TRL's ``AdaptiveKLController``.

>>> controller = KLController(0.1, target=1.0, horizon=1000)
>>> round(controller.update(kl=2.0, steps=100), 4)  # KL above target: β grows (by at most 20% x steps/horizon)
0.102
"""

from __future__ import annotations

from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from agents.training import KLRecord
from proxy_env.errors import ConfigError


class KLController:
    """β fixed, or adapted toward ``target`` nats of KL per response (Ziegler et al.; TRL's adaptive controller).

    Args:
        beta: the initial (or fixed) coefficient.
        target: KL per response to steer toward; None keeps β fixed.
        horizon: decisions over which a 100% error moves β by a factor of ``1 ± 0.2`` (TRL's ``horizon``).
    """

    def __init__(self, beta: float, *, target: float | None = None, horizon: int = 10_000) -> None:
        if not np.isfinite(beta) or beta < 0:
            raise ConfigError(f"kl_coef={beta!r} must be a finite float >= 0.")
        if target is not None and not (np.isfinite(target) and target > 0):
            raise ConfigError(
                f"kl_target={target!r} must be a float > 0 (nats per response), or None for a fixed coefficient."
            )
        if target is not None and beta == 0:
            raise ConfigError("kl_target needs kl_coef > 0 to start from (e.g. --kl-coef 0.1): β = 0 cannot be scaled.")
        if horizon < 1:
            raise ConfigError(f"kl_horizon={horizon!r} must be an int >= 1.")
        self.beta, self.target, self.horizon = float(beta), target, int(horizon)

    def update(self, kl: float, steps: int) -> float:
        """Move β after ``steps`` decisions whose responses averaged ``kl`` nats; returns the new β."""
        if self.target is None or not np.isfinite(kl):
            return self.beta
        error = float(np.clip(kl / self.target - 1.0, -0.2, 0.2))
        self.beta *= 1.0 + error * steps / self.horizon
        return self.beta


def policy_accept_fn(model: Any) -> Any:
    """P(accept) of ``model``'s policy as it samples during training: observations (N, d) -> (N,)."""
    from agents.accept import accept_model

    fn = accept_model(model, deterministic=False)
    if fn is None or isinstance(fn, float):
        raise ConfigError(
            f"the KL penalty needs a policy whose accept probability is a function of the observation; "
            f"{type(model).__name__} has none (recurrent policies are not supported)."
        )
    return fn


class KLPenaltyCallback(BaseCallback):
    """Give the env the policy's accept probabilities and log (and optionally adapt) the KL penalty.

    Logs ``kl/coef`` (β), ``kl/per_response`` (mean Σ log π − log q of the responses finished in the
    rollout: the estimate of the exact KL) and ``kl/exact_per_response`` (mean Σ_t KL(π_t‖q_t)).
    """

    def __init__(self, controller: KLController) -> None:
        super().__init__()
        self.controller = controller
        self.history: list[KLRecord] = []  # one per rollout: β then, mean KL per finished response
        self._kl: list[float] = []
        self._exact: list[float] = []
        self._steps = 0

    def _venv(self) -> Any:
        return self.training_env.unwrapped if hasattr(self.training_env, "unwrapped") else self.training_env

    def _on_training_start(self) -> None:
        venv = self._venv()
        venv.set_accept_fn(policy_accept_fn(self.model))
        venv.kl_coef = self.controller.beta

    def _on_step(self) -> bool:
        for info in self.locals.get("infos", []):
            if "episode" in info and "kl_paid" in info:
                self._kl.append(float(info["kl_paid"]))
                self._exact.append(float(info.get("kl_exact_paid", np.nan)))
        self._steps += self.training_env.num_envs
        return True

    def _on_rollout_end(self) -> None:
        kl = float(np.mean(self._kl)) if self._kl else float("nan")
        beta = self.controller.update(kl, self._steps)
        self._venv().kl_coef = beta
        self.history.append(KLRecord(self.num_timesteps, beta, kl, "response"))
        self.logger.record("kl/coef", beta)
        if self._kl:
            self.logger.record("kl/per_response", kl)
            self.logger.record("kl/exact_per_response", float(np.nanmean(self._exact)))
        self._kl, self._exact, self._steps = [], [], 0
