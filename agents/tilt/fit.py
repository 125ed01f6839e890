"""Phase 2 of the tilt backend: the SB3 actor's accept probabilities fitted to each position's tilt ``q·exp(Δ/β)``."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from agents.interrupt import GracefulStop
from agents.tilt.collect import progress_bar
from agents.tilt.data import Positions
from agents.training import KLRecord
from proxy_env.config import Action
from proxy_env.engine.steering import kl_divergence, steered_probs

# quadrature step of the steered distribution during the fit: its KL is within ~1e-6 of the exact one (bench's)
GRID_STEP = 0.2


def accept_probs(agent: Any, obs: torch.Tensor) -> torch.Tensor:
    """The SB3 actor's P(accept) (N,) for observations (N, d), differentiable."""
    return agent.policy.get_distribution(obs.to(agent.policy.device)).distribution.probs[:, int(Action.ACCEPT)]


def tilt_loss(
    agent: Any,
    lm: Any,
    batch: Positions,
    beta: float,
    *,
    grid_step: float = GRID_STEP,
    max_rejections: int | None = None,
    order: str = "sample",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, KL per position (n,), E_π[Δ] per position (n,)) of a batch: ``KL(π‖q) − E_π[Δ]/β``, averaged."""
    obs, q = batch.observations(lm), batch.q()
    n, k, d = obs.shape
    a = accept_probs(agent, obs.reshape(n * k, d)).double().reshape(n, k).cpu().masked_fill(q == 0, 0.0)
    pi = steered_probs(q, a, max_rejections, order=order, step=grid_step)
    kl = kl_divergence(pi, q)
    gain = (pi * batch.delta.double()).sum(-1)
    return (kl - gain / beta).mean(), kl.detach(), gain.detach()


def warm_start_loss(agent: Any, lm: Any, batch: Positions, beta: float) -> torch.Tensor:
    """Cross-entropy of the proxy's P(accept) against ``a* = exp(min(0, (Δ − max Δ) / β))``, over each pool's candidates.

    ``a*`` is the accept rule whose steered distribution is exactly the tilt when rejected candidates
    may come back (sampling with replacement: ``π ∝ q·a``). Fitting it first starts the exact objective
    near its optimum: from always-accept the exact objective's gradient vanishes (every ``a`` saturates at 1).
    """
    obs, valid = batch.observations(lm), batch.valid
    delta = batch.delta.double().masked_fill(~valid, -math.inf)
    target = torch.exp(((delta - delta.max(-1, keepdim=True).values) / beta).clamp(max=0.0)).float()
    n, k, d = obs.shape
    a = accept_probs(agent, obs.reshape(n * k, d)).reshape(n, k).cpu().clamp(1e-7, 1 - 1e-7)
    bce = -(target * a.log() + (1 - target) * (1 - a).log())
    return bce[valid].mean()


@torch.no_grad()
def balance_norm(agent: Any, lm: Any, data: Positions, sample: int = 1024) -> list[float]:
    """Scale the proxy's input LayerNorm per block of the ``prefix`` observation so every block reaches the network.

    One LayerNorm normalises ``[h, e, ē, log p, log q]`` together; the LLM's hidden state ``h`` is an order of
    magnitude larger than the embeddings (SmolLM2: mean |h| 1.1, mean |e| 0.09), so without this the
    candidate's own features arrive ~10× weaker than the prefix's and a per-candidate accept rule is slow to
    learn. The LayerNorm's weight on each block is set to 1 / (the block's std after normalisation) over
    ``sample`` positions: the same architecture and tensors (checkpoints and exports unchanged), a better start.
    Returns the scales of the blocks.
    """
    from agents.policies import HiddenStateExtractor

    h = lm.hidden_size
    blocks = [slice(0, h), slice(h, 2 * h), slice(2 * h, 3 * h), slice(3 * h, 3 * h + 2)]
    batch = data.take(slice(0, sample))
    obs = batch.observations(lm)[batch.valid]  # (m, d) the valid candidates
    z = torch.nn.functional.layer_norm(obs, obs.shape[-1:])
    scales = [float(1.0 / z[:, b].std().clamp_min(1e-6)) for b in blocks]
    for module in agent.policy.modules():
        norm = module.net[0] if isinstance(module, HiddenStateExtractor) else None
        if isinstance(norm, torch.nn.LayerNorm) and norm.weight.shape[0] == 3 * h + 2:
            for b, scale in zip(blocks, scales):
                norm.weight[b] = scale
    return scales


def fit(
    agent: Any,
    lm: Any,
    data: Positions,
    *,
    beta: float,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int = 0,
    warmup_epochs: int = 1,
    grid_step: float = GRID_STEP,
    max_rejections: int | None = None,
    order: str = "sample",
    progress: bool = False,
    stop: GracefulStop | None = None,
    logger: Any = None,
) -> list[KLRecord]:
    """Adam on the actor's weights: ``warmup_epochs`` passes of :func:`warm_start_loss`, then ``epochs`` of :func:`tilt_loss`.

    Returns one :class:`~agents.training.KLRecord` per epoch of the exact objective (its mean KL per position).
    """
    params = [p for p in agent.policy.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    history: list[KLRecord] = []
    bar = progress_bar((warmup_epochs + epochs) * len(data), "position", f"fit β={beta:g}", progress)

    def epoch_of(loss_fn: Any) -> np.ndarray | None:
        """One shuffled pass: an Adam step per minibatch; the sums of ``loss_fn``'s outputs, None if stopped."""
        perm = torch.randperm(len(data), generator=gen)
        sums = None
        for s in range(0, len(data), batch_size):
            if stop is not None and stop.received:
                return None
            batch = data.take(perm[s : s + batch_size])
            loss, *extra = loss_fn(batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step = np.array([float(loss.detach()) * len(batch), *[float(x.sum()) for x in extra]])
            sums = step if sums is None else sums + step
            bar.update(len(batch))
        return sums

    for epoch in range(warmup_epochs):
        sums = epoch_of(lambda batch: (warm_start_loss(agent, lm, batch, beta),))
        if sums is None:
            break
        if logger is not None:
            logger.record("tilt/warm_start_bce", sums[0] / len(data))
            logger.dump(epoch + 1)
    for epoch in range(epochs):
        sums = epoch_of(
            lambda batch: tilt_loss(
                agent, lm, batch, beta, grid_step=grid_step, max_rejections=max_rejections, order=order
            )
        )
        if sums is None:
            break
        loss_m, kl_m, gain_m = sums / len(data)
        history.append(KLRecord(epoch, beta, float(kl_m), "position"))
        if logger is not None:
            for name, value in (("loss", loss_m), ("kl_per_position", kl_m), ("gain_per_position", gain_m)):
                logger.record(f"tilt/{name}", value)
            logger.dump(warmup_epochs + epoch + 1)
    bar.close()
    return history
