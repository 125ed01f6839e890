"""``--tilt-future``: the reward change still to come after each candidate, regressed on the collected responses."""

from __future__ import annotations

import math
from typing import Any

import torch

from proxy_env.errors import ConfigError

RIDGE_GRID = (1e-1, 1.0, 1e1, 1e2, 1e3, 1e4, 1e5)  # ridge strengths tried (on standardised features) by future_values


@torch.no_grad()
def future_values(
    lm: Any, data: Any, *, seed: int = 0, holdout: float = 0.2, chunk: int = 2048
) -> tuple[torch.Tensor, dict[str, float]]:
    """(N, K) centred estimate of ``E_q[R − Φ(s + y)]`` for every candidate, and a report of the regression.

    ``data``: :class:`agents.tilt_data.Positions`. A ridge regression of ``data.togo`` (the reward change
    still to come after the token the LLM's sampler took) on that token's ``prefix`` observation ``[h, e, ē, log p, log q]``, its centred
    reward change ``Δ`` and ``Δ·h`` (the share of a change that later words undo may depend on the
    prefix), its strength chosen on a held-out ``holdout`` share of the positions, then refitted on all
    of them. Four nested models are tried, the position alone (``h``, ``ē``), then with the candidate's
    observation, with ``Δ``, with ``Δ·h``, and the one with the best held-out R² is used (the report's
    ``model``: 0…3, with each one's R², the strength, the positions used and the mean and spread over
    positions of the coefficient on ``Δ``). Linear, so a candidate's estimate is
    ``e·w_e + w_p log p + w_q log q + Δ·(w_Δ + h·w_Δh)`` plus what every candidate of the position
    shares (``h``, ``ē``), which centring under ``q`` removes.
    """
    h = lm.hidden_size
    if data.togo is None:
        raise ConfigError(
            "--tilt-future needs tilt data collected with the reward still to come (data version 2); pass a new --tilt-data path."
        )
    rows = torch.isfinite(data.togo).nonzero().squeeze(1)
    if len(rows) < 10:
        raise ConfigError(
            f"--tilt-future: only {len(rows)} collected positions belong to responses that ended; raise --total-timesteps."
        )
    part = data.take(rows)
    obs = part.taken_observations(lm, chunk).double()
    d = part.delta[:, :1].double()
    x = torch.cat([obs, d, d * part.hidden.double()], dim=1)  # (M, 3H + 2 | 1 | H)
    y = part.togo.double()
    mean, std = x.mean(0), x.std(0).clamp_min(1e-8)
    z = (x - mean) / std
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    cut = max(1, int(len(y) * holdout))
    test, train = perm[:cut], perm[cut:]
    gram, rhs = z[train].T @ z[train], z[train].T @ (y[train] - y[train].mean())

    def r2(cols: torch.Tensor) -> tuple[float, float]:
        """(best held-out R², its ridge strength) over RIDGE_GRID, from one eigendecomposition."""
        evals, evecs = torch.linalg.eigh(gram[cols][:, cols])
        proj, best = evecs.T @ rhs[cols], (-math.inf, RIDGE_GRID[0])
        for lam in RIDGE_GRID:
            resid = y[test] - y[train].mean() - z[test][:, cols] @ (evecs @ (proj / (evals + lam)))
            best = max(best, (float(1 - resid.pow(2).mean() / (y[test] - y[test].mean()).pow(2).mean()), lam))
        return best

    span = lambda a, b: torch.arange(a, b)  # noqa: E731
    position = torch.cat([span(0, h), span(2 * h, 3 * h)])
    with_candidate = torch.cat([position, span(h, 2 * h), span(3 * h, 3 * h + 2)])
    with_delta = torch.cat([with_candidate, span(3 * h + 2, 3 * h + 3)])
    models = {
        "position_only": position,
        "with_candidate": with_candidate,
        "with_delta": with_delta,
        "with_delta_h": span(0, x.shape[1]),
    }
    scores = {name: r2(cols) for name, cols in models.items()}
    chosen = max(scores, key=lambda name: scores[name][0])
    cols, lam = models[chosen], scores[chosen][1]
    w = torch.zeros(x.shape[1], dtype=z.dtype)  # the columns left out weigh 0
    a = z[:, cols]
    w[cols] = torch.linalg.solve(a.T @ a + lam * torch.eye(len(cols), dtype=z.dtype), a.T @ (y - y.mean()))
    w = w / std  # observation units
    w_e, w_p, w_q, w_d, w_dh = w[h : 2 * h], w[3 * h], w[3 * h + 1], w[3 * h + 2], w[3 * h + 3 :]
    table = lm.model.get_input_embeddings().weight
    per_token = (table.double() @ w_e.to(table.device)).cpu()
    share = w_d + data.hidden.double() @ w_dh  # (N,) the change's coefficient at each position
    g = (
        per_token[data.tokens]
        + w_p * data.logprob.double()
        + w_q * data.logq.double()
        + share[:, None] * data.delta.double()
    )
    q = data.q()
    g = torch.where(q > 0, g - (q * torch.where(q > 0, g, 0.0)).sum(-1, keepdim=True), 0.0)
    report = {
        **{f"r2_{name}": r for name, (r, _) in scores.items()},
        "model": list(models).index(chosen),
        "ridge": lam,
        "positions": float(len(y)),
        "delta_share_mean": float(share.mean()),
        "delta_share_std": float(share.std()),
    }
    return g.float(), report
