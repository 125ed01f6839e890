"""Guidance by the distributional value: each candidate's tilt ``W(s + y)``, fitted or applied at decoding time.

Best-of-N's output distribution is the sequence-level tilt ``q(y)·N·F_x(R(y))^{N−1}``; a token-level sampler
implements it exactly when each candidate is weighted by ``W(s + y) / W(s)`` with ``W(s) = E_q[u^{N−1} | s]``.
Two ways to use it:

* :func:`value_deltas` feeds the tilt recipe's fit (:func:`agents.tilt.fit.fit`), which makes the proxy's steered
  distribution ``π ∝ q·exp(Δ/β)``; with ``Δ = β·log W(s + y)`` (centred under ``q``: a per-position constant does
  not move the tilt) its optimum is ``π ∝ q·W(s + y)``. ``W(s)`` is the same for every candidate of the position,
  so it drops out. One fit per N.
* :class:`ValueGuide` applies it at decoding time, for any N, from the value head alone (nothing is fitted): from
  an observation's prefix hidden state it rebuilds the whole pool (the LLM's output head gives the logits, the
  env's top-k / top-p / temperature the pool), scores every candidate with the head, and solves for the accept
  probabilities whose steered distribution under the env's offer order is ``q·W`` (:func:`solve_accept`). The
  accept probability is still a function of (position, candidate) only, so the env, ``generate`` and the bench's
  exact KL take it like any proxy's; ``bench --value-head DIR --value-n 2 4 8 16`` traces the reward–KL curve of
  one value head without retraining.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np
import torch

from agents.tilt.data import Positions
from agents.value import VALUE_RULES
from agents.value.head import ValueHead, expected_power
from proxy_env.config import EnvConfig
from proxy_env.engine import candidates
from proxy_env.engine.steering import prefix_observation, steered_probs
from proxy_env.errors import ConfigError, check_choice


@torch.no_grad()
def value_deltas(head: ValueHead, lm: Any, data: Positions, *, n: int, beta: float, chunk: int = 1024) -> torch.Tensor:
    """(P, K) ``β·log E[u^{N−1} | s + y]`` of every candidate of every position, centred under ``q`` (0 on padding)."""
    out = []
    for s in range(0, len(data), chunk):
        part = data.take(slice(s, s + chunk))
        probs = head.probs(part.observations(lm).cpu())  # (p, K, bins)
        log_w = expected_power(probs, float(n - 1)).clamp_min(1e-300).log()  # (p, K)
        q = part.q()
        log_w = log_w.masked_fill(q == 0, 0.0)
        out.append((beta * (log_w - (q * log_w).sum(-1, keepdim=True)) * (q > 0)).float())
    return torch.cat(out)


def solve_accept(
    q: torch.Tensor,
    weight: torch.Tensor,
    *,
    max_rejections: int | None = None,
    order: str = "sample",
    iters: int = 12,
    step: float = 0.4,
) -> torch.Tensor:
    """(B, K) accept probabilities whose steered distribution over each pool is ``q·weight`` (normalised).

    With replacement ``a = weight / max(weight)`` would be exact; the env offers each candidate once (a rejected
    one does not come back, the last is committed), so the fixed point ``a ← min(1, a·π*/π_a)`` is iterated from
    there on :func:`~proxy_env.engine.steering.steered_probs` (``iters`` times; on random pools with tilts of 0.4–1.8
    nats it leaves ``KL(π* ‖ π_a)`` ≈ 0.005 nats after 10). A target out of reach (a rejection cap) ends at the
    nearest the iteration finds.

    >>> q = torch.tensor([[0.5, 0.3, 0.2]])
    >>> a = solve_accept(q, torch.tensor([[1.0, 1.0, 1.0]]))  # no tilt: accept everything
    >>> a.tolist()
    [[1.0, 1.0, 1.0]]
    """
    q = q.double() / q.double().sum(-1, keepdim=True)
    valid = q > 0
    weight = weight.double().clamp_min(1e-300).masked_fill(~valid, 0.0)
    target = q * weight
    target = target / target.sum(-1, keepdim=True)
    accept = weight / weight.amax(-1, keepdim=True)
    for _ in range(iters):
        pi = steered_probs(q, accept, max_rejections, order=order, step=step)
        ratio = torch.where(valid, target / pi.clamp_min(1e-300), torch.ones_like(pi))
        accept = (accept * ratio).clamp(0.0, 1.0)
    return accept.masked_fill(~valid, 0.0)


class ValueGuide:
    """The value head as a proxy at decoding time: ``P(accept)`` that steers each pool to ``q·E[u^{N−1} | s + y]``.

    It reads the env's ``observation="prefix"`` (at ``hidden_layer=-1``, whose hidden state gives the logits through
    the LLM's output head) and needs the env's pool settings to rebuild the pool. Its trainable parameters are the
    head's. Wrap it in :class:`agents.baselines.PowerProxy` (power 1) for SB3's ``predict`` with sampled actions;
    :func:`value_guide` does.

    Args:
        head: a fitted :class:`~agents.value.head.ValueHead` of ``lm``'s features.
        lm: the frozen LLM.
        n: the best-of-N whose token-level rule is applied (1: always accept).
        top_k, top_p, temperature, max_rejections, order: the env's pool and offer settings.
        rule: ``"distribution"`` tilts by ``E[u^{N−1} | s + y]`` (best-of-N's rule); ``"mean"`` by
            ``E[u | s + y]^{N−1}``, the same head read as a mean value only (the ablation: by Jensen's inequality it
            under-weights the candidates whose outcome is uncertain).
        iters: fixed-point iterations of :func:`solve_accept`.
        cache_size: positions whose accept probabilities are kept (a rejection offers the same position again).
    """

    def __init__(
        self,
        head: ValueHead,
        lm: Any,
        n: int,
        *,
        top_k: int = EnvConfig.top_k,
        top_p: float = EnvConfig.top_p,
        temperature: float = EnvConfig.temperature,
        max_rejections: int | None = None,
        order: str = "sample",
        rule: str = "distribution",
        iters: int = 12,
        cache_size: int = 4096,
    ) -> None:
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ConfigError(f"n={n!r}: the guide's best-of-N must be an int >= 1 (--value-n 2 4 8 16).")
        if head.config.hidden_layer != -1:
            raise ConfigError(
                f"the value head reads hidden_layer={head.config.hidden_layer}; the guide rebuilds each pool from the "
                "last hidden state, so it needs a head fitted with --hidden-layer -1."
            )
        check_choice("order", order, ("sample", "greedy"))
        check_choice("rule", rule, VALUE_RULES)
        self.rule = rule
        self.head, self.lm, self.n = head.eval(), lm, n
        self.pool_settings = (top_k, top_p, temperature)
        self.max_rejections, self.order, self.iters = max_rejections, order, iters
        self.trainable_parameters = head.num_parameters
        self._cache: OrderedDict[bytes, tuple[torch.Tensor, torch.Tensor, float]] = OrderedDict()
        self._cache_size = cache_size
        self.unmatched = 0  # candidates on offer that were not in the rebuilt pool

    @torch.no_grad()
    def accept_prob(self, obs: np.ndarray) -> np.ndarray:
        """P(accept) (m,) for ``prefix`` observations (m, 3H + 2)."""
        lm, size = self.lm, self.lm.hidden_size
        x = torch.as_tensor(np.atleast_2d(obs), dtype=torch.float32)
        if x.shape[-1] != 3 * size + 2:
            raise ConfigError(
                f"the value guide reads observation='prefix' ({3 * size + 2} features on {lm.name!r}), got "
                f"{x.shape[-1]}; run the env with observation='prefix', hidden_layer=-1."
            )
        if self.n == 1:  # best-of-1 is the LLM's own sampler
            return np.ones(len(x))
        hidden = x[:, :size]
        keys = [row.numpy().tobytes() for row in hidden]
        todo = sorted({k: i for i, k in enumerate(keys) if k not in self._cache}.values())
        if todo:
            self._solve(hidden[todo], [keys[i] for i in todo])
        emb = x[:, size : 2 * size].to(lm.device)
        out = np.empty(len(keys))
        rows_of: dict[bytes, list[int]] = {}
        for i, key in enumerate(keys):
            rows_of.setdefault(key, []).append(i)
        for key, rows in rows_of.items():  # one position's pool at a time (the KL pass asks for all of it at once)
            self._cache.move_to_end(key)
            tokens, accept, top = self._cache[key]
            table = lm.model.get_input_embeddings()(tokens).float()  # (K, H)
            gap, col = (table[None] - emb[rows][:, None]).abs().amax(-1).min(-1)  # (r,): the nearest pool token
            found = (gap == 0).cpu()  # the candidate on offer is this token of the rebuilt pool
            out[rows] = torch.where(found, accept[col.cpu()], -1.0).numpy()
            missing = [r for r, ok in zip(rows, found.tolist()) if not ok]
            if missing:  # not in the rebuilt pool (a rounding at its top-p edge): the with-replacement rule
                out[missing] = (self._weight(self.head.probs(x[missing])) / top).clamp(max=1.0).numpy()
                self.unmatched += len(missing)
        return out

    def _weight(self, probs: torch.Tensor) -> torch.Tensor:
        """``W`` (…,) of candidates from the head's histograms (…, bins)."""
        if self.rule == "mean":
            return expected_power(probs, 1.0) ** (self.n - 1)
        return expected_power(probs, float(self.n - 1))

    def _solve(self, hidden: torch.Tensor, keys: list[bytes]) -> None:
        lm = self.lm
        hidden = hidden.to(lm.device)
        logits = lm.model.get_output_embeddings()(hidden.to(lm.model.dtype)).float()  # (U, V): the env's logits
        pool = candidates.truncate(logits, *self.pool_settings)
        obs = prefix_observation(lm, hidden, pool.tokens, pool.logprob, pool.logq)  # (U, K, 3H + 2)
        weight = self._weight(self.head.probs(obs.cpu()))  # (U, K)
        q = pool.logq.double().exp().cpu()
        accept = solve_accept(q, weight, max_rejections=self.max_rejections, order=self.order, iters=self.iters)
        for row, key in enumerate(keys):
            valid = q[row] > 0
            tokens = pool.tokens[row][valid.to(pool.tokens.device)]
            self._cache[key] = (tokens, accept[row][valid], float(weight[row][valid].max()))
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)


def value_guide(head: ValueHead, lm: Any, n: int, *, seed: int | None = None, **settings: Any) -> Any:
    """A :class:`ValueGuide` with SB3's ``predict`` (sampled actions from its own seeded generator)."""
    from agents.baselines import PowerProxy

    return PowerProxy(ValueGuide(head, lm, n, **settings), 1.0, seed=seed)
