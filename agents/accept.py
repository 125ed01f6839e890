"""How any agent accepts a candidate, as a number or a function of the observation: :func:`accept_model`.

The exact KL (:mod:`agents.eval.kl`), the KL penalty in training (:mod:`agents.kl_control`) and the
power-steered proxy (:class:`agents.baselines.PowerProxy`) all need P(accept | observation), whatever
the agent is: a baseline with a constant probability, an SB3 actor-critic or Q-network, or anything
with ``accept_prob``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

AcceptFn = Callable[[np.ndarray], np.ndarray]  # observations (N, d) -> P(accept) (N,)


def accept_model(agent: Any, deterministic: bool = True) -> float | AcceptFn | None:
    """How ``agent`` accepts a candidate: a constant probability, a function of the observation, or None.

    None (a recurrent policy, whose answer depends on its memory) means the exact KL is not
    computable. Deterministic SB3 policies take the argmax action (ties -> REJECT, as ``argmax`` does).
    """
    constant = getattr(agent, "constant_accept_prob", None)  # AlwaysAccept, RandomReject
    if constant is not None:
        return float(constant)
    if hasattr(agent, "accept_prob"):
        return lambda obs: np.asarray(agent.accept_prob(obs), dtype=np.float64)
    policy = getattr(agent, "policy", None)
    if policy is not None and hasattr(policy, "lstm_actor"):
        return None
    if policy is not None and hasattr(policy, "get_distribution"):

        def probs(obs: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                tensor = torch.as_tensor(obs, dtype=torch.float32, device=policy.device)
                p = policy.get_distribution(tensor).distribution.probs  # (N, 2)
            p = (p.argmax(-1) == 1).double() if deterministic else p[:, 1].double()
            return p.cpu().numpy()

        return probs
    # value-based agents (DQN, QR-DQN): greedy, or ε-greedy when sampling (SB3's predict(deterministic=False))
    eps = 0.0 if deterministic else float(getattr(agent, "exploration_rate", 0.0))
    if policy is not None and hasattr(policy, "q_net"):

        def greedy(obs: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                q_values = policy.q_net(torch.as_tensor(obs, dtype=torch.float32, device=policy.device))  # (N, 2)
            return eps / 2 + (1 - eps) * (q_values.argmax(-1) == 1).double().cpu().numpy()

        return greedy
    return lambda obs: eps / 2 + (1 - eps) * (np.asarray(agent.predict(obs, deterministic=True)[0]).reshape(-1) == 1)
