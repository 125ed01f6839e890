"""How the env decodes: episodes start, candidates are offered, tokens are committed; one subclass per observation.

A :class:`Decoder` owns the batched state (:class:`~proxy_env.vector.state.EnvState`) and the per-row KV
cache, and moves them from one decision to the next; every method works on ``(num_envs,)`` masks. What
depends on the observation mode is in its subclass: :class:`~proxy_env.vector.candidate.CandidateDecoder`
feeds each offered candidate through the LLM, :class:`~proxy_env.vector.prefix.PrefixDecoder` feeds only
committed tokens. The env's ``step`` (:mod:`~proxy_env.vector.vector_env`) calls, in order:
:meth:`Decoder.transition`, :meth:`Decoder.start` for new episodes, :meth:`Decoder.feed_after_actions`,
and :meth:`Decoder.feed_at_step_end`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from proxy_env.config import EnvConfig
from proxy_env.engine import candidates
from proxy_env.engine.lm import FrozenLM
from proxy_env.engine.outputs import StepOutput
from proxy_env.errors import StateError
from proxy_env.vector.state import EnvState

_PROMPT_SALT = 0x7072  # separates the prompt draw from the Gumbel draws of the same episode
_MAX_SKIPPED_EPISODES = 100


class Decoder(ABC):
    """The batched state, the cache, and the moves both observation modes share."""

    def __init__(self, lm: FrozenLM, config: EnvConfig, prompts: list[str], num_envs: int, *, render: bool) -> None:
        self.lm, self.config, self.prompts, self.num_envs, self.render = lm, config, prompts, num_envs, render
        width = min(config.top_k + candidates.TIE_MARGIN, lm.vocab_size)
        self.state = EnvState.allocate(
            num_envs,
            pool_width=width,
            hidden_size=lm.hidden_size,
            max_new_tokens=config.max_new_tokens,
            device=lm.device,
        )
        self.cache = lm.new_cache(num_envs, config.hidden_layer)
        self._eos = torch.tensor(lm.eos_token_ids, device=lm.device)
        self._prompt_ids: dict[int, list[int]] = {}  # prompt index -> its templated token ids

    # ------------------------------------------------------------------ what each mode defines
    @abstractmethod
    def observation(self) -> torch.Tensor:
        """Every env's observation (B, d) float32 of the candidate on offer, on the env's device."""

    @abstractmethod
    def transition(self, accept: torch.Tensor, reject: torch.Tensor) -> None:
        """Apply the actions of ``accept`` / ``reject`` rows (B,) bool: commit, or offer the next candidate."""

    @abstractmethod
    def _prefilled(self, rows: torch.Tensor, out: StepOutput, feed: bool) -> None:
        """``rows`` (B,) were prefilled (``out``: their prompt's last hidden state and logits); offer position 0."""

    def feed_after_actions(self, rows: torch.Tensor) -> None:
        """After :meth:`transition` and new episodes: feed what the next observation of ``rows`` needs (default: nothing)."""
        return None

    def feed_at_step_end(self) -> None:
        """Last in ``step``, after finished episodes restarted: a mode's one batched forward (default: none)."""
        return None

    # ------------------------------------------------------------------ episodes
    def start(self, rows: torch.Tensor, prompt_index: torch.Tensor | None = None, *, feed: bool = True) -> None:
        """Begin new episodes in ``rows`` (B,) bool: draw prompts, prefill, offer the first candidate.

        ``prompt_index`` (B,) picks the prompts (``reset(options={"prompt_index": ...})``); by
        default each env draws one from its seed. An episode that ends before any decision (every
        position had a single-candidate pool) gives the agent nothing to learn from: it is skipped
        and the next prompt is drawn (a chosen prompt is kept). With ``feed=False`` (``forced_steps``,
        where no episode ends before a step) the first candidate is fed by the step's last batched
        forward instead.
        """
        state = self.state
        for _ in range(_MAX_SKIPPED_EPISODES):
            self._start_once(rows, prompt_index, feed)
            if not feed:  # nothing was fed, so no new episode has ended: no read
                return
            rows = rows & state.terminated
            if not bool(rows.any()):
                return
        raise StateError(
            f"{_MAX_SKIPPED_EPISODES} episodes in a row ended before the proxy had a choice: every pool held one "
            f"candidate (top_k={self.config.top_k}, top_p={self.config.top_p}, temperature={self.config.temperature}). "
            "Raise top_k or top_p, or the temperature (a tiny one puts all the probability on one token), or pass "
            "forced_steps=True."
        )

    def _start_once(self, rows: torch.Tensor, prompt_index: torch.Tensor | None, feed: bool) -> None:
        state = self.state
        state.episode[rows] += 1
        if prompt_index is None:
            draw = candidates.hash_uniform(state.seed, state.episode, torch.full_like(state.seed, _PROMPT_SALT))
            prompt_index = (draw * len(self.prompts)).long().clamp(max=len(self.prompts) - 1)
        state.prompt_index = torch.where(rows, prompt_index, state.prompt_index)
        index = rows.nonzero().squeeze(1).tolist()
        out = self.cache.reset_rows(rows, [self._encoded(int(state.prompt_index[i])) for i in index])
        logits = torch.zeros(self.num_envs, out.logits.shape[-1], device=out.logits.device)  # (B, V)
        logits[rows] = out.logits
        state.begin(rows)
        self._set_pool(rows, self._ordered(self._truncate_rows(logits, rows, state.pool, False)), "pool")
        self._prefilled(rows, out, feed)

    def _encoded(self, index: int) -> list[int]:
        if index not in self._prompt_ids:
            self._prompt_ids[index] = self.lm.encode_prompt(self.prompts[index])
        return self._prompt_ids[index]

    # ------------------------------------------------------------------ pools
    def forced_at(self, offer: torch.Tensor) -> torch.Tensor:
        """Rows (B,) whose candidate at ``offer`` (B,) of the current pool is committed without asking."""
        return candidates.must_commit(offer, self.state.pool.size, self.config.max_rejections)

    def on_offer(self) -> torch.Tensor:
        """(B,) the token of each env's candidate on offer."""
        return candidates.select(self.state.pool.tokens, self.state.offer)

    def _ordered(self, pool: candidates.Pool) -> candidates.Pool:
        if self.config.order == "greedy":
            return pool
        state = self.state
        return candidates.order(pool, candidates.gumbel(state.seed, state.episode, state.position, pool.tokens))

    def _set_pool(self, rows: torch.Tensor, pool: candidates.Pool, target: str) -> None:
        """Replace the ``target`` pool (``"pool"`` or ``"next_pool"``) of ``rows`` (B,) by ``pool``."""
        current = getattr(self.state, target)
        width = max(current.tokens.shape[1], pool.tokens.shape[1])  # ties with the k-th score widen a pool
        current, pool = candidates.pad(current, width), candidates.pad(pool, width)
        new = candidates.Pool(*(torch.where(_rows(rows, c), n, c) for c, n in zip(current, pool)))
        setattr(self.state, target, new)

    def _truncate_rows(
        self, logits: torch.Tensor, rows: torch.Tensor, like: candidates.Pool, all_rows: bool
    ) -> candidates.Pool:
        """Pools (B, K) from ``logits`` (B, V), computed for ``rows`` only (top-k over V is the costly part)."""
        cfg = self.config
        if all_rows:  # a static batch's steps say so (every row was fed): no row index read on the host
            return candidates.truncate(logits, cfg.top_k, cfg.top_p, cfg.temperature)
        index = rows.nonzero().squeeze(1)
        sub = candidates.truncate(logits[index], cfg.top_k, cfg.top_p, cfg.temperature)
        width = max(sub.tokens.shape[1], like.tokens.shape[1])
        current, sub = candidates.pad(like, width), candidates.pad(sub, width)
        return candidates.Pool(*(c.index_put((index,), n) for c, n in zip(current, sub)))

    # ------------------------------------------------------------------ the LLM and the response
    def _step_rows(self, token: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """One batched forward of ``token`` (B,) for ``rows``; (hidden (B, H), logits (B, V), whether every row went).

        With the cache's static batch every row goes (the inactive ones masked), and nothing is read on the host.
        """
        all_rows = True if self.cache.static_batch else bool(rows.all())
        out = self.cache.step(token, rows, all_active=all_rows)
        return out.hidden, out.logits, all_rows

    def _set_hidden(self, rows: torch.Tensor, hidden: torch.Tensor) -> None:
        self.state.hidden = torch.where(rows[:, None], hidden, self.state.hidden)

    def _commit_tokens(self, rows: torch.Tensor, token: torch.Tensor) -> None:
        """Append ``token`` (B,) to the responses of ``rows``; mark ended episodes (EOS, or the budget)."""
        state, budget = self.state, self.config.max_new_tokens
        self.log(rows, token, rejected=False)
        column = state.position.clamp(max=budget - 1)[:, None]  # (B, 1)
        current = state.response.gather(1, column)
        state.response.scatter_(1, column, torch.where(rows[:, None], token[:, None], current))
        state.position += rows.long()
        # the budget is part of the task: the reward model scores the response and nothing follows, so it is
        # a terminal state (a value bootstrapped there would add V(s) to a return that has ended)
        state.terminated |= rows & (torch.isin(token, self._eos) | (state.position >= budget))

    def _reject(self, reject: torch.Tensor) -> None:
        """Move ``reject`` rows (B,) to the next candidate of their pool."""
        self.log(reject, self.on_offer(), rejected=True)
        self.state.offer += reject.long()
        self.state.rejections += reject.long()

    def log(self, rows: torch.Tensor, token: torch.Tensor, rejected: bool) -> None:
        """``render_mode="ansi"``: record the tokens of ``rows``, rejected ones as ``~~tok~~``."""
        if not self.render or not bool(rows.any()):
            return
        for i in rows.nonzero().squeeze(1).tolist():
            text = self.lm.tokenizer.decode([int(token[i])])
            self.state.render_log[i].append(f"~~{text}~~" if rejected else text)


def _rows(rows: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a (B,) mask to broadcast against ``like`` (B, ...)."""
    return rows.view(-1, *([1] * (like.dim() - 1)))
