"""``--tilt-future-form soft``: the soft value of the reward still to come, learned as a distribution.

The KL-regularised optimum is ``π*(y | s) ∝ q(y | s)·E_q[exp(R/β) | s + y]`` (the reference sampler's own soft value;
the issue-31 derivation). Writing ``R = Φ(s + y) + T`` with ``T`` the reward change still to come after ``y``:

    β·log E_q[exp(R/β) | s + y] = Φ(s + y) + β·log E_q[exp(T/β) | s + y],

so the exact tilt is the myopic ``Δ`` (known for every candidate, no estimate) plus the **soft** value of ``T``.
Tilting by ``E[T]`` instead (``--tilt-future``'s ridge) drops the spread of ``T``: ``β·log E[exp(T/β)] ≈ E[T] +
Var(T)/(2β)``, and at the β of best-of-4…16 the second term is the larger one wherever the future is uncertain (a
candidate that ends the response has ``T = 0``; one that opens a new clause has a wide ``T``).

The distribution of ``T`` given the candidate's ``prefix`` observation is learned as a histogram (``bins`` equal
bins over the collected range, HL-Gauss targets, the epoch kept on validation: the same loop as the value head's,
:func:`agents.value.head.fit_histogram`) from the ``togo`` of the token the LLM's sampler took at each collected
position, then read at every candidate of every pool, so one head gives the soft value for any β:
``E[exp(T/β) | bin [a, c]] = β (e^{c/β} − e^{a/β}) / (c − a)`` with ``T`` uniform inside the bin.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from agents.tilt.data import Positions
from agents.value.head import ValueHead, ValueHeadConfig, fit_histogram
from proxy_env.errors import ConfigError


def soft_moment(log_probs: torch.Tensor, lo: float, hi: float, beta: float) -> torch.Tensor:
    """``β·log E[exp(T/β)]`` (…,) under a histogram of ``T`` on [lo, hi] (log-probabilities (…, bins)), uniform in each bin.

    >>> p = torch.tensor([1.0, 0.0]).log()  # T uniform on [0, 1]: β·log(β(e^{1/β} − 1))
    >>> round(float(soft_moment(p, 0.0, 2.0, 1.0)), 4), round(math.log(math.e - 1), 4)
    (0.5413, 0.5413)
    """
    bins = log_probs.shape[-1]
    edges = torch.linspace(lo, hi, bins + 1, dtype=torch.float64)
    width = (hi - lo) / bins
    # log E[exp(T/β) | bin] = c/β + log(β (1 − e^{−w/β}) / w)
    log_bin = edges[1:] / beta + math.log(beta * -math.expm1(-width / beta) / width)
    return beta * torch.logsumexp(log_probs.double() + log_bin.to(log_probs.device), -1)


def fit_future_head(
    lm: Any,
    data: Positions,
    *,
    bins: int = 32,
    epochs: int = 8,
    lr: float = 3e-4,
    batch_size: int = 512,
    weight_decay: float = 5e-2,
    sigma: float = 0.75,
    holdout: float = 0.2,
    validation: float = 0.1,
    seed: int = 0,
    log: Any = None,
) -> tuple[ValueHead, dict[str, Any]]:
    """The head of the distribution of ``T`` (the reward still to come), fitted on the collected positions.

    The split is by collection order: the last ``holdout`` share of the positions scores, the ``validation`` share
    before it picks the epoch, the rest trains. Positions are recorded step by step for all envs at once, so a
    response's positions lie within ~``max_new_tokens × num_envs`` rows of each other and few cross a boundary (a
    random split would put one response's positions, which share ``T``'s later part, on both sides).
    Returns the head (its config's ``trained`` holds the range [lo, hi] of ``T`` and the scores) and the report.
    """
    if data.togo is None:
        raise ConfigError(
            "--tilt-future needs tilt data collected with the reward still to come (data version 2); pass a new --tilt-data path."
        )
    togo_all = data.togo
    rows = torch.isfinite(togo_all).nonzero().squeeze(1)
    n = len(rows)
    n_test, n_valid = int(n * holdout), int(n * validation)
    if n - n_test - n_valid < 10 or n_test < 1:
        raise ConfigError(
            f"--tilt-future-form soft: only {n} collected positions belong to responses that ended; raise --total-timesteps."
        )
    part = data.take(rows)
    x, togo = part.taken_observations(lm), togo_all[rows].double()
    cut_valid, cut_test = n - n_test - n_valid, n - n_test
    lo, hi = float(togo[:cut_valid].min()), float(togo[:cut_valid].max())
    pad = 1e-6 + 1e-3 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    t = ((togo - lo) / (hi - lo)).clamp(0.0, 1.0)
    with torch.random.fork_rng():  # seeded init and dropout, the caller's global generator left as it was
        torch.manual_seed(seed)
        head = ValueHead(ValueHeadConfig(obs_dim=x.shape[1], bins=bins, model=lm.name))
        fitted = fit_histogram(
            head,
            (x[:cut_valid], t[:cut_valid]),
            (x[cut_valid:cut_test], t[cut_valid:cut_test]),
            (x[cut_test:], t[cut_test:]),
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            weight_decay=weight_decay,
            sigma=sigma,
            generator=torch.Generator().manual_seed(seed),
            log=log,
            name="future head",
        )
    head.eval()
    report = {
        "positions": float(n),
        "lo": lo,
        "hi": hi,
        "kept_epoch": float(fitted["kept_epoch"]),
        "held_out_ce": fitted["held_out_ce"][fitted["kept_epoch"] - 1],
        "marginal_ce": fitted["marginal_ce"],
        "smoothed_marginal_ce": fitted["smoothed_marginal_ce"],
    }
    head.config.trained.update(report)
    return head, report


@torch.no_grad()
def soft_future_values(
    lm: Any, data: Positions, beta: float, *, seed: int = 0, chunk: int = 1024, log: Any = None, **fit: Any
) -> tuple[torch.Tensor, dict[str, float]]:
    """(N, K) centred ``β·log E_q[exp(T/β) | s + y]`` for every candidate, and a report of the fit.

    Added to ``data.delta`` it makes the fit's target the exact soft-optimal tilt, up to the head's error. The report
    gives the head's held-out cross-entropy against the marginal's, the range of ``T``, and the mean within-pool
    standard deviation (under ``q``) of this term and of ``Δ`` itself: how much it moves the tilt. ``fit``: settings
    of :func:`fit_future_head`.
    """
    with torch.enable_grad():
        head, report = fit_future_head(lm, data, seed=seed, log=log, **fit)
    lo, hi = report["lo"], report["hi"]
    out = []
    for s in range(0, len(data), chunk):
        part = data.take(slice(s, s + chunk))
        v = soft_moment(torch.log_softmax(head(part.observations(lm).cpu()), -1), lo, hi, beta)  # (p, K)
        q = part.q()
        v = v.masked_fill(q == 0, 0.0)
        out.append(((v - (q * v).sum(-1, keepdim=True)) * (q > 0)).float())
    g = torch.cat(out)
    report["spread_future"] = _pool_spread(g, data.q())
    report["spread_delta"] = _pool_spread(data.delta, data.q())
    return g, report


def _pool_spread(x: torch.Tensor, q: torch.Tensor) -> float:
    """Mean over positions of the standard deviation under ``q`` of ``x`` (N, K) across each pool (``x`` centred)."""
    return float((q * x.double() ** 2).sum(-1).sqrt().mean())
