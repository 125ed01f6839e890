"""Potential-based reward shaping: the reward model's score of the response so far, paid as it changes.

With ``reward_shaping=True`` every step that commits tokens pays ``Φ(s') - Φ(s)``, where ``Φ`` is the
reward source's score of the prompt and the response so far (``Φ = 0`` before the first token), and
the step that ends the episode pays the terminal reward minus everything shaping already paid. An
episode's return is therefore exactly the unshaped one, step for step the same terminal objective
(Ng, Harada & Russell 1999: with γ = 1 the optimal policy is unchanged), but the credit for a token
arrives at the step that committed it, which is what makes learning from a lexical reward such as
VADER fast. It costs one batched reward call per step (for the rows that committed a token).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


class PotentialShaping:
    """Per-env potentials and what shaping has paid in the current episode."""

    def __init__(self, num_envs: int) -> None:
        self.potential = np.zeros(num_envs)  # Φ of each env's response so far
        self.paid = np.zeros(num_envs)  # Σ Φ(s') - Φ(s) paid this episode

    def step(self, moved: np.ndarray, ended: np.ndarray, potential: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """Rewards (B,) for the live rows that committed tokens this step (``moved``, not ``ended``).

        ``potential(rows)``: the reward of those rows' (indices) responses so far, one batched call.
        """
        out = np.zeros(len(moved))
        rows = np.flatnonzero(moved & ~ended)
        if len(rows) == 0:
            return out
        phi = potential(rows)
        out[rows] = phi - self.potential[rows]
        self.potential[rows] = phi
        self.paid[rows] += out[rows]
        return out

    def settle(self, ended: np.ndarray, terminal: np.ndarray) -> np.ndarray:
        """The ended rows' last reward: the terminal reward minus what shaping paid; their episode is reset."""
        out = np.where(ended, terminal - self.paid, 0.0)
        self.paid[ended] = 0.0
        self.potential[ended] = 0.0
        return out

    def forget(self, rows: np.ndarray) -> None:
        """Episodes started in ``rows`` (B,) bool without ending (a reset): nothing paid yet."""
        self.paid[rows] = 0.0
        self.potential[rows] = 0.0
