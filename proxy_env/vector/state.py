"""The batched state of :class:`~proxy_env.vector.vector_env.ProxyRLHFVectorEnv`: every per-env tensor, declared once.

Each field is a ``(num_envs, ...)`` tensor allocated once on the LLM's device and updated in place with
boolean row masks (Gymnasium's ``self.state[:, mask] = ...``); nothing is a Python list per env but the
render log. The decoders (:mod:`~proxy_env.vector.decoder`) move it from one decision to the next.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from proxy_env.engine import candidates

# the per-episode counters zeroed when an episode starts
EPISODE_COUNTERS = ("position", "offer", "decisions", "rejections", "forced", "kl_paid", "kl_exact_paid")


@dataclass
class EnvState:
    """Every env's episode, as rows of batched tensors."""

    seed: torch.Tensor  # (B,) long: each env's seed (its prompt draws and Gumbel noise derive from it)
    episode: torch.Tensor  # (B,) long: episodes started since the env was seeded
    prompt_index: torch.Tensor  # (B,) long: the episode's prompt, an index into the env's prompts
    position: torch.Tensor  # (B,) long: response tokens committed
    offer: torch.Tensor  # (B,) long: index of the candidate on offer in the pool = rejections at this position
    pool: candidates.Pool  # (B, K): the pool of the current position, in offer order
    next_pool: candidates.Pool  # (B, K), "candidate" only: the pool after the candidate on offer, if it is accepted
    # (B, H) float32: "candidate": the hidden state at the candidate on offer; "prefix": at the last committed
    # token (the prompt's last token at position 0)
    hidden: torch.Tensor
    response: torch.Tensor  # (B, max_new_tokens) long: the committed tokens, valid up to position
    decisions: torch.Tensor  # (B,) long: steps of this episode whose action counted
    rejections: torch.Tensor  # (B,) long: rejections this episode
    forced: torch.Tensor  # (B,) long: candidates committed without asking this episode
    kl_paid: torch.Tensor  # (B,) float64: Σ over committed tokens of log π - log q (kl_coef > 0)
    kl_exact_paid: torch.Tensor  # (B,) float64: Σ over positions of KL(π_t || q_t) (kl_coef > 0)
    terminated: torch.Tensor  # (B,) bool: the episode ended at this step (EOS, or the response budget)
    needs_reset: torch.Tensor  # (B,) bool: ended, waiting for a reset (NEXT_STEP or DISABLED autoreset)
    render_log: list[list[str]] = field(default_factory=list)  # per env, its response's tokens as drawn

    @classmethod
    def allocate(
        cls, num_envs: int, *, pool_width: int, hidden_size: int, max_new_tokens: int, device: torch.device
    ) -> EnvState:
        """Zeroed state for ``num_envs`` envs; every env needs a reset before its first step."""

        def zeros(*shape: int, dtype: torch.dtype = torch.long) -> torch.Tensor:
            return torch.zeros(*shape, dtype=dtype, device=device)

        b, k = num_envs, pool_width
        empty = candidates.Pool(
            zeros(b, k), zeros(b, k, dtype=torch.float32), zeros(b, k, dtype=torch.float32), zeros(b) + 1
        )
        return cls(
            seed=zeros(b),
            episode=zeros(b),
            prompt_index=zeros(b),
            position=zeros(b),
            offer=zeros(b),
            pool=empty,
            next_pool=empty,
            hidden=zeros(b, hidden_size, dtype=torch.float32),
            response=zeros(b, max_new_tokens),
            decisions=zeros(b),
            rejections=zeros(b),
            forced=zeros(b),
            kl_paid=zeros(b, dtype=torch.float64),
            kl_exact_paid=zeros(b, dtype=torch.float64),
            terminated=zeros(b, dtype=torch.bool),
            needs_reset=torch.ones(b, dtype=torch.bool, device=device),
            render_log=[[] for _ in range(b)],
        )

    def begin(self, rows: torch.Tensor) -> None:
        """Zero the episode counters of ``rows`` (B,) bool: their new episodes start."""
        for name in EPISODE_COUNTERS:  # masked_fill_, not rows-indexing: no row count is read on the host
            getattr(self, name).masked_fill_(rows, 0)
        self.terminated.masked_fill_(rows, False)
        self.needs_reset.masked_fill_(rows, False)
        if any(self.render_log):
            for i in rows.nonzero().squeeze(1).tolist():
                self.render_log[i] = []

    def prefixes(self, prompts: list[str], rows: list[int] | None = None) -> tuple[list[str], list[list[int]]]:
        """The prompt and the token ids of the response so far of ``rows`` (env indices; default: every env).

        Positions and prompt indices are read once, not once per row.
        """
        position, prompt_index = self.position.tolist(), self.prompt_index.tolist()
        index = range(len(position)) if rows is None else rows
        return [prompts[prompt_index[i]] for i in index], [self.response[i, : position[i]].tolist() for i in index]
