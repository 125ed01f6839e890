"""How the env decodes: episodes start, candidates are offered, forced chains are fed, tokens are committed.

:class:`Decoding` is the part of :class:`~proxy_env.vector.vector_env.ProxyRLHFVectorEnv` that moves the
batched state (pools, offers, positions, the per-row KV cache) from one decision to the next; every method
works on ``(num_envs,)`` masks. It is a mixin of that one class (it reads the env's state tensors), split
out so that each file holds one concern.
"""

from __future__ import annotations

import torch

from proxy_env.engine import candidates as skam
from proxy_env.errors import StateError

_PROMPT_SALT = 0x7072  # separates the prompt draw from the Gumbel draws of the same episode
_MAX_SKIPPED_EPISODES = 100


class Decoding:
    """Episode starts, offers and commits of :class:`~proxy_env.vector.vector_env.ProxyRLHFVectorEnv` (a mixin of it)."""

    @property
    def _prefix(self) -> bool:
        return self.config.observation == "prefix"

    def _set_pool(self, rows: torch.Tensor, pool: skam.Pool, target: str) -> None:
        current = getattr(self, target)
        width = max(current.tokens.shape[1], pool.tokens.shape[1])  # ties with the k-th score widen a pool
        current, pool = skam.pad(current, width), skam.pad(pool, width)
        setattr(self, target, skam.Pool(*(torch.where(_rows(rows, c), n, c) for c, n in zip(current, pool))))

    def _ordered(self, pool: skam.Pool) -> skam.Pool:
        if self.config.order == "greedy":
            return pool
        return skam.order(pool, skam.gumbel(self.seed, self.episode, self.position, pool.tokens))

    def _forced_at(self, offer: torch.Tensor) -> torch.Tensor:
        """Rows (B,) whose candidate at ``offer`` (B,) of the current pool is committed without asking."""
        return skam.must_commit(offer, self.pool.size, self.config.max_rejections)

    # ------------------------------------------------------------------ episodes
    def _start(self, rows: torch.Tensor, prompt_index: torch.Tensor | None = None, *, advance: bool = True) -> None:
        """Begin new episodes in ``rows`` (B,) bool: draw prompts, prefill, offer the first candidate.

        ``prompt_index`` (B,) picks the prompts (``reset(options={"prompt_index": ...})``); by
        default each env draws one from its seed. An episode that ends before any decision (every
        position had a single-candidate pool) gives the agent nothing to learn from: it is skipped
        and the next prompt is drawn (a chosen prompt is kept). With ``advance=False`` (only with
        ``forced_steps``, where no episode ends before a step) the first candidate is fed by the
        caller's next batched forward instead.
        """
        for _ in range(_MAX_SKIPPED_EPISODES):
            self._start_once(rows, prompt_index, advance)
            rows = rows & (self.terminated | self.truncated)
            if not bool(rows.any()):
                return
        raise StateError(
            f"{_MAX_SKIPPED_EPISODES} episodes in a row ended before the proxy had a choice: every pool held one "
            f"candidate (top_k={self.config.top_k}, top_p={self.config.top_p}). Raise top_k or top_p, or pass forced_steps=True."
        )

    def _start_once(self, rows: torch.Tensor, prompt_index: torch.Tensor | None, advance: bool) -> None:
        self.episode[rows] += 1
        if prompt_index is None:
            draw = skam.hash_uniform(self.seed, self.episode, torch.full_like(self.seed, _PROMPT_SALT))
            prompt_index = (draw * len(self.prompts)).long().clamp(max=len(self.prompts) - 1)
        self.prompt_index = torch.where(rows, prompt_index, self.prompt_index)
        index = rows.nonzero().squeeze(1).tolist()
        out = self.cache.reset_rows(rows, [self._encoded(int(self.prompt_index[i])) for i in index])
        logits = torch.zeros(self.num_envs, out.logits.shape[-1], device=out.logits.device)
        logits[rows] = out.logits
        for name in ("position", "offer", "decisions", "rejections", "forced", "kl_paid", "kl_exact_paid"):
            getattr(self, name)[rows] = 0
        self.terminated[rows] = False
        self.truncated[rows] = False
        self.needs_reset[rows] = False
        self._set_pool(rows, self._ordered(self._truncate_rows(logits, rows, self.pool, False)), "pool")
        for i in index:
            self._render_log[i] = []
        if self._prefix:
            hidden = torch.zeros_like(self.hidden)
            hidden[rows] = out.hidden
            self.hidden = torch.where(rows[:, None], hidden, self.hidden)
            if advance:
                self._settle(rows)
        elif advance:
            self._advance(rows)

    def _encoded(self, index: int) -> list[int]:
        if index not in self._prompt_ids:
            self._prompt_ids[index] = self.lm.encode_prompt(self.prompts[index])
        return self._prompt_ids[index]

    def _truncate(self, logits: torch.Tensor) -> skam.Pool:
        return skam.truncate(logits, self.config.top_k, self.config.top_p, self.config.temperature)

    def _truncate_rows(self, logits: torch.Tensor, rows: torch.Tensor, like: skam.Pool, all_rows: bool) -> skam.Pool:
        """Pools (B, K) from ``logits`` (B, V), computed for ``rows`` only (top-k over V is the costly part)."""
        if all_rows:
            return self._truncate(logits)
        index = rows.nonzero().squeeze(1)
        sub = self._truncate(logits[index])
        width = max(sub.tokens.shape[1], like.tokens.shape[1])
        current, sub = skam.pad(like, width), skam.pad(sub, width)
        return skam.Pool(*(c.index_put((index,), n) for c, n in zip(current, sub)))

    def _step_rows(self, token: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """One batched forward of ``token`` for ``rows``; (hidden, logits, whether every row went)."""
        all_rows = bool(rows.all())
        out = self.cache.step(token, rows, all_active=all_rows)
        return out.hidden, out.logits, all_rows

    def _advance(self, pending: torch.Tensor) -> None:
        """ "candidate": feed the candidate on offer of ``pending`` rows; commit forced ones and repeat for those.

        With ``forced_steps`` a forced candidate is offered as a step of its own, so this is one forward.
        """
        pending = pending.clone()
        while bool(pending.any()):
            token = skam.select(self.pool.tokens, self.offer)
            hidden, logits, all_rows = self._step_rows(token, pending)
            self.hidden = torch.where(_rows(pending, self.hidden), hidden, self.hidden)
            next_pool = self._truncate_rows(logits, pending, self.next_pool, all_rows)
            if self.config.forced_steps:
                self._set_pool(pending, next_pool, "next_pool")
                return
            forced = pending & self._forced_at(self.offer)
            self._set_pool(pending & ~forced, next_pool, "next_pool")
            if not bool(forced.any()):
                break
            self.cache.commit(forced)
            self.forced += forced.long()
            self._append(forced, token, next_pool)
            pending = forced & ~(self.terminated | self.truncated)

    def _feed(self, rows: torch.Tensor, token: torch.Tensor) -> None:
        """ "prefix": commit ``token`` (B,) of ``rows`` to the cache; their next pool comes from its forward."""
        rows = rows & ~(self.terminated | self.truncated)
        if not bool(rows.any()):
            return
        hidden, logits, all_rows = self._step_rows(token, rows)
        self.cache.commit(rows)
        self.hidden = torch.where(_rows(rows, self.hidden), hidden, self.hidden)
        self.offer = torch.where(rows, 0, self.offer)
        self._set_pool(rows, self._ordered(self._truncate_rows(logits, rows, self.pool, all_rows)), "pool")
        if not self.config.forced_steps:
            self._settle(rows)

    def _settle(self, rows: torch.Tensor) -> None:
        """ "prefix": commit, without asking, each of ``rows`` whose candidate on offer is forced, and feed it."""
        forced = rows & self._forced_at(self.offer) & ~(self.terminated | self.truncated)
        if self.config.forced_steps or not bool(forced.any()):
            return
        token = skam.select(self.pool.tokens, self.offer)
        self.forced += forced.long()
        self._commit_tokens(forced, token)
        self._feed(forced, token)

    def _commit_tokens(self, rows: torch.Tensor, token: torch.Tensor) -> None:
        """Append ``token`` (B,) to the responses of ``rows``; mark ended episodes."""
        self._log(rows, token, rejected=False)
        column = self.position.clamp(max=self.config.max_new_tokens - 1)[:, None]  # (B, 1)
        current = self.response.gather(1, column)
        self.response.scatter_(1, column, torch.where(rows[:, None], token[:, None], current))
        self.position += rows.long()
        self.terminated |= rows & torch.isin(token, self._eos)
        self.truncated |= rows & ~self.terminated & (self.position >= self.config.max_new_tokens)

    def _append(self, rows: torch.Tensor, token: torch.Tensor, next_pool: skam.Pool) -> None:
        """ "candidate": commit ``token`` (B,) to the responses of ``rows``; end episodes or offer the next position."""
        self._commit_tokens(rows, token)
        live = rows & ~(self.terminated | self.truncated)
        self.offer = torch.where(live, 0, self.offer)
        self._set_pool(live, self._ordered(next_pool), "pool")

    def _transition(self, accept: torch.Tensor, reject: torch.Tensor) -> None:
        """Apply the actions: commit accepted (and asked-for forced) candidates, move rejected rows on."""
        token = skam.select(self.pool.tokens, self.offer)
        self._log(reject, token, rejected=True)
        self.offer += reject.long()
        self.rejections += reject.long()
        if not self._prefix:
            self.cache.commit(accept)
            self.cache.discard(reject)
            self._append(accept, token, self.next_pool)
            return
        self._commit_tokens(accept, token)
        # a rejection that leaves a forced candidate commits it now (without forced_steps): same forward
        forced = reject & self._forced_at(self.offer) & (not self.config.forced_steps)
        self.forced += forced.long()
        token = torch.where(forced, skam.select(self.pool.tokens, self.offer), token)
        self._commit_tokens(forced, token)
        self._feed(accept | forced, token)


def _rows(rows: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a (B,) mask to broadcast against ``like`` (B, ...)."""
    return rows.view(-1, *([1] * (like.dim() - 1)))
