"""``observation="candidate"`` (the paper's): every offered candidate is fed through the LLM and observed.

The observation is the hidden state at the candidate on offer (the candidate appended to prompt and
response), so each decision, rejections included, costs one LLM forward. The forward that observes a
candidate also gives the pool of the next position in case it is accepted (``state.next_pool``): an
accepted candidate is committed without another forward, a rejected one's cache slot is discarded.
``"candidate_stats"`` appends the candidate's log-probabilities and its offer index.
"""

from __future__ import annotations

import torch

from proxy_env.config import NUM_STATS, EnvConfig
from proxy_env.engine import candidates
from proxy_env.engine.lm import FrozenLM
from proxy_env.engine.outputs import StepOutput
from proxy_env.vector.decoder import Decoder


class CandidateDecoder(Decoder):
    """Feeds the candidate on offer; with ``forced_steps`` one forward per step, else forced chains inside it."""

    def __init__(self, lm: FrozenLM, config: EnvConfig, prompts: list[str], num_envs: int, *, render: bool) -> None:
        super().__init__(lm, config, prompts, num_envs, render=render)
        self.stats = config.observation == "candidate_stats"
        self.observation_size = lm.hidden_size + (NUM_STATS if self.stats else 0)

    def observation(self) -> torch.Tensor:
        state = self.state
        if not self.stats:
            return state.hidden.float()
        stats = torch.stack(
            [
                candidates.select(state.pool.logprob, state.offer),
                candidates.select(state.pool.logq, state.offer),
                state.offer.float() / self.config.top_k,
            ],
            dim=1,
        )  # (B, 3)
        return torch.cat([state.hidden, stats.clamp(min=-1e4)], dim=1).float()

    def transition(self, accept: torch.Tensor, reject: torch.Tensor) -> None:
        token = self.on_offer()
        self._reject(reject)
        self.cache.commit(accept)
        self.cache.discard(reject)
        self._append(accept, token, self.state.next_pool)

    def _prefilled(self, rows: torch.Tensor, out: StepOutput, feed: bool) -> None:
        if feed:
            self._advance(rows)

    def feed_after_actions(self, rows: torch.Tensor) -> None:
        """Without ``forced_steps``: feed the next candidates now, since forced chains may end episodes."""
        if not self.config.forced_steps:
            self._advance(rows)

    def feed_at_step_end(self) -> None:
        """With ``forced_steps``: one batched forward of every row's next candidate, new episodes' too."""
        if self.config.forced_steps:
            self._advance((self.cache.pending < 0) & ~self.state.needs_reset)

    def _advance(self, pending: torch.Tensor) -> None:
        """Feed the candidate on offer of ``pending`` rows (B,); commit forced ones and repeat for those.

        With ``forced_steps`` a forced candidate is offered as a step of its own, so this is one forward.
        """
        state = self.state
        pending = pending.clone()
        once = self.config.forced_steps and self.cache.static_batch  # one forward whatever the rows: no read
        while once or bool(pending.any()):
            token = self.on_offer()
            hidden, logits, all_rows = self._step_rows(token, pending)
            self._set_hidden(pending, hidden)
            next_pool = self._truncate_rows(logits, pending, state.next_pool, all_rows)
            if self.config.forced_steps:
                self._set_pool(pending, next_pool, "next_pool")
                return
            forced = pending & self.forced_at(state.offer)
            self._set_pool(pending & ~forced, next_pool, "next_pool")
            if not bool(forced.any()):
                break
            self.cache.commit(forced)
            state.forced += forced.long()
            self._append(forced, token, next_pool)
            pending = forced & ~state.terminated

    def _append(self, rows: torch.Tensor, token: torch.Tensor, next_pool: candidates.Pool) -> None:
        """Commit ``token`` (B,) to the responses of ``rows``; end episodes or offer the next position."""
        self._commit_tokens(rows, token)
        live = rows & ~self.state.terminated
        self.state.offer = torch.where(live, 0, self.state.offer)
        self._set_pool(live, self._ordered(next_pool), "pool")
