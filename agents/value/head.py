"""The distributional value of a prefix (issue 31): the distribution of the final quantile ``u`` after a candidate.

:class:`ValueHead` reads the proxy's own observation of a candidate (``observation="prefix"``: the prefix's hidden
state, the candidate's embedding, the pool's mean embedding, its log-probabilities) and predicts a histogram of
``u = F_x(R)`` over ``bins`` equal bins of [0, 1]: a small MLP on the frozen LLM's features (~0.5 M parameters on
SmolLM2-135M, under 1% of the LLM), so one call scores every candidate of a pool. Each block of the observation is
normalised on its own (:class:`BlockNorm`): under one LayerNorm the candidate's embedding, the only feature that
differs within a pool, arrived ~12× weaker than the prefix's hidden state, and the first head fitted that way
barely separated the candidates of a pool (BENCHMARKS.md, issue 31). It is learned by cross-entropy
on the bin of each labelled position's ``u`` (:mod:`agents.value.data`): a distribution, not a mean-squared fit,
because best-of-N's weight ``u^{N−1}`` is a functional of the whole distribution and single-rollout targets of it
are very noisy (coefficient of variation 1.1 / 1.8 / 2.7 at N = 4 / 8 / 16).

What the guidance needs from it (:func:`expected_power`): ``W(s) = E[u^{N−1} | s]``, with ``u`` uniform inside
each bin, so ``E[u^{N−1} | bin] = (hi^N − lo^N) / (N (hi − lo))`` exactly.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from agents.value.data import ValueData
from proxy_env.engine.lm import FrozenLM
from proxy_env.errors import ConfigError, check_choice

CONFIG_FILE, WEIGHTS_FILE = "value_head.json", "value_head.safetensors"


@dataclass(frozen=True)
class ValueHeadConfig:
    """The head's shape and how it was trained (saved beside its weights)."""

    obs_dim: int
    bins: int = 24
    width: int = 256
    dropout: float = 0.2
    model: str = ""  # the frozen LLM whose features it reads
    hidden_layer: int = -1
    trained: dict[str, Any] = field(default_factory=dict)  # data, epochs, held-out scores
    # "blocks": a LayerNorm per block of the observation (h, e, ē; log p and log q as they are); "joint": one
    # LayerNorm over all of it (heads saved before the blocks; there h, ~12× larger than e, drowned the candidate)
    norm: str = "blocks"


class ValueHead(nn.Module):
    """Observation (…, d) -> logits (…, bins) of the final quantile ``u``."""

    def __init__(self, config: ValueHeadConfig) -> None:
        super().__init__()
        check_choice("norm", config.norm, ("blocks", "joint"))
        if config.norm == "blocks" and (config.obs_dim - 2) % 3:
            raise ConfigError(
                f"obs_dim={config.obs_dim}: norm='blocks' reads the prefix observation [h, e, ē, log p, log q] "
                "(3 × hidden size + 2 features); pass that observation or norm='joint'."
            )
        self.config = config
        self.norm = BlockNorm((config.obs_dim - 2) // 3) if config.norm == "blocks" else nn.LayerNorm(config.obs_dim)
        self.net = nn.Sequential(
            nn.Linear(config.obs_dim, config.width),
            nn.GELU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.width, config.width),
            nn.GELU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.width, config.bins),
        )

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(self.norm(obs.float()))

    def probs(self, obs: torch.Tensor) -> torch.Tensor:
        """(…, bins) the predicted distribution of ``u``."""
        return torch.softmax(self(obs), -1)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class BlockNorm(nn.Module):
    """A LayerNorm on each of the three ``size``-wide blocks of ``[h, e, ē, log p, log q]``; the two scalars pass.

    One LayerNorm over the whole observation leaves each block's scale as it was relative to the others, and the
    LLM's hidden state is an order of magnitude larger than the embeddings (SmolLM2: mean |h| 1.1, mean |e| 0.09),
    so the candidate, the only part that differs within a pool, reached the network ~12× weaker than the prefix
    (the same finding as the tilt proxy's :func:`agents.tilt.fit.balance_norm`).
    """

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size
        self.blocks = nn.ModuleList(nn.LayerNorm(size) for _ in range(3))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        h = self.size
        parts = [norm(obs[..., i * h : (i + 1) * h]) for i, norm in enumerate(self.blocks)]
        return torch.cat([*parts, obs[..., 3 * h :]], -1)


def bin_edges(bins: int) -> torch.Tensor:
    return torch.linspace(0.0, 1.0, bins + 1, dtype=torch.float64)


def hl_gauss(u: torch.Tensor, bins: int, sigma: float) -> torch.Tensor:
    """(…, bins) HL-Gauss targets: a Gaussian at ``u`` of ``sigma`` bin widths, its mass in each bin (renormalised on [0, 1]).

    ``sigma`` 0 gives the one-hot bin of ``u``.
    """
    if sigma <= 0:
        return nn.functional.one_hot(bin_of(u, bins), bins).float()
    edges = bin_edges(bins).to(u.device)
    cdf = 0.5 * (1 + torch.erf((edges - u.double()[..., None]) / (sigma / bins * math.sqrt(2))))
    mass = cdf[..., 1:] - cdf[..., :-1]
    return (mass / mass.sum(-1, keepdim=True)).float()


def bin_of(u: torch.Tensor, bins: int) -> torch.Tensor:
    """The bin index of each ``u`` in [0, 1] (1.0 falls in the last bin)."""
    return (u.double() * bins).floor().clamp(0, bins - 1).long()


def expected_power(probs: torch.Tensor, power: float) -> torch.Tensor:
    """``E[u^power]`` (…,) under a histogram (…, bins) of ``u``, uniform inside each bin.

    >>> p = torch.full((4,), 0.25)
    >>> round(float(expected_power(p, 1.0)), 4), round(float(expected_power(p, 3.0)), 4)  # u uniform: 1/2, 1/4
    (0.5, 0.25)
    """
    edges = bin_edges(probs.shape[-1]).to(probs.device)
    lo, hi = edges[:-1], edges[1:]
    moment = (hi ** (power + 1) - lo ** (power + 1)) / ((power + 1) * (hi - lo))  # (bins,)
    return (probs.double() * moment).sum(-1)


def fit_value_head(
    head: ValueHead,
    lm: FrozenLM,
    data: ValueData,
    *,
    epochs: int = 4,
    lr: float = 1e-4,
    batch_size: int = 512,
    holdout: float = 0.2,
    seed: int = 0,
    weight_decay: float = 5e-2,
    train_share: float = 1.0,
    validation: float = 0.1,
    sigma: float = 0.75,
    log: Any = None,
) -> dict[str, Any]:
    """AdamW on a histogram loss of ``u``; held out by prompt (a ``holdout`` share of the prompts).

    One rollout's ``u`` is a noisy label (every position of a response shares it), and a head fitted to it to the
    end learns the training prompts' own responses: on 32,640 responses of the default task, 8 plain epochs drove
    the held-out cross-entropy from below the marginal's to far above it. So the target is HL-Gauss (Farebrother
    et al., 2024, "Stop Regressing"): ``u`` smoothed by a Gaussian of ``sigma`` bin widths, integrated over the
    bins; and the weights kept are those of the epoch with the lowest cross-entropy on a ``validation`` share of
    the training prompts (never the held-out ones, which only score).

    ``train_share`` < 1 trains on that share of the training prompts only (the same held-out prompts, whatever the
    share: the points of :func:`learning_curve`). Returns the learning curve over epochs (held-out cross-entropy per
    epoch, and of the training share's marginal histogram as the baseline a prefix-blind value scores), the epoch
    kept, and the held-out calibration (:func:`calibration`) of the head as kept.
    """
    gen = torch.Generator().manual_seed(seed)
    prompts = data.prompt.unique()
    order = prompts[torch.randperm(len(prompts), generator=gen)]
    n_held = max(1, round(holdout * len(prompts)))
    held, rest = order[:n_held], order[n_held:]
    is_held = torch.isin(data.prompt, held)
    mine = rest[: max(1, round(train_share * len(rest)))]
    n_valid = round(validation * len(mine)) if len(mine) > 1 else 0
    is_valid = torch.isin(data.prompt, mine[:n_valid])
    kept = torch.isin(data.prompt, mine[n_valid:])
    train, valid, test = data.take(kept), data.take(is_valid), data.take(is_held)
    if len(train) == 0 or len(test) == 0:
        raise ConfigError(
            f"value data of {len(prompts)} prompts cannot be split {1 - holdout:.0%}/{holdout:.0%} by prompt; "
            "collect more prompts."
        )
    x_train, x_test = _observations(lm, train), _observations(lm, test)
    x_valid = _observations(lm, valid) if len(valid) else x_test[:0]
    fitted = fit_histogram(
        head,
        (x_train, train.u),
        (x_valid, valid.u),
        (x_test, test.u),
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        weight_decay=weight_decay,
        sigma=sigma,
        generator=gen,
        log=log,
    )
    curve, kept_epoch, marginal_ce = fitted["held_out_ce"], fitted["kept_epoch"], fitted["marginal_ce"]
    with torch.no_grad():
        probs = head.probs(x_test)
    return {
        "kept_epoch": kept_epoch,
        "kept_ce": curve[kept_epoch - 1],
        "positions": {"train": len(train), "held_out": len(test)},
        "responses": {"train": _responses(train), "held_out": _responses(test)},
        "prompts": {"train": int(train.prompt.unique().numel()), "held_out": len(held)},
        "held_out_ce": curve,
        "marginal_ce": marginal_ce,
        "smoothed_marginal_ce": fitted["smoothed_marginal_ce"],
        "calibration": calibration(probs, test.u),
    }


def fit_histogram(
    head: ValueHead,
    train: tuple[torch.Tensor, torch.Tensor],
    valid: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    weight_decay: float,
    sigma: float,
    generator: torch.Generator,
    log: Any = None,
    name: str = "value head",
) -> dict[str, Any]:
    """AdamW on the HL-Gauss histogram loss of targets in [0, 1]: the loop both distributional heads share.

    Each split is (features (M, d), targets (M,) in [0, 1]). The weights kept are those of the epoch with the
    lowest cross-entropy on ``valid`` (the last epoch when ``valid`` is empty); ``test`` only scores. Returns the
    held-out cross-entropy per epoch, the epoch kept and the held-out cross-entropy of the training targets'
    marginal histogram (the baseline a feature-blind head scores) and of the mean smoothed target (what a
    feature-blind head fitted with this loss scores: the HL-Gauss smoothing costs cross-entropy against the hard bin,
    most where the targets are peaked).
    """
    bins = head.config.bins
    (x_train, t_train), (x_valid, t_valid), (x_test, t_test) = train, valid, test
    y_test, y_valid = bin_of(t_test, bins), bin_of(t_valid, bins)
    soft = hl_gauss(t_train, bins, sigma)
    marginal = torch.bincount(bin_of(t_train, bins), minlength=bins).double() + 1.0
    marginal_ce = float(-(marginal / marginal.sum()).log()[y_test].mean())
    # what a feature-blind head fitted on the same smoothed targets scores: the smoothing alone costs this much
    smoothed_ce = float(-soft.double().mean(0).clamp_min(1e-12).log()[y_test].mean())
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    curve, best, kept_epoch, state = [], math.inf, 0, None
    for epoch in range(epochs):
        head.train()
        perm = torch.randperm(len(x_train), generator=generator)
        for s in range(0, len(x_train), batch_size):
            idx = perm[s : s + batch_size]
            loss = nn.functional.cross_entropy(head(x_train[idx]), soft[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        head.eval()
        with torch.no_grad():
            ce = float(nn.functional.cross_entropy(head(x_test), y_test))
            score = float(nn.functional.cross_entropy(head(x_valid), y_valid)) if len(x_valid) else ce
        curve.append(ce)
        if score < best or not len(x_valid):  # without a validation share: the last epoch
            best, kept_epoch = score, epoch + 1
            state = {k: v.detach().clone() for k, v in head.state_dict().items()}
        if log is not None:
            log(
                f"{name} epoch {epoch + 1}/{epochs}: held-out cross-entropy {ce:.4f} (marginal {marginal_ce:.4f})"
                + (f", validation {score:.4f}" if len(x_valid) else "")
            )
    if state is not None:
        head.load_state_dict(state)
    return {
        "held_out_ce": curve,
        "kept_epoch": kept_epoch,
        "marginal_ce": marginal_ce,
        "smoothed_marginal_ce": smoothed_ce,
    }


def learning_curve(
    config: ValueHeadConfig, lm: FrozenLM, data: ValueData, shares: tuple[float, ...], *, seed: int = 0, **fit: Any
) -> list[dict[str, Any]]:
    """The value's learning curve in rollouts: a new head fitted on each share of the training prompts.

    Every point is scored on the same held-out prompts; each gives the responses it was trained on, its final
    held-out cross-entropy (against the marginal's) and the held-out correlation of predicted and realised
    ``u^{N−1}`` (N = 4, 8, 16).
    """
    points = []
    for share in sorted(shares):
        torch.manual_seed(seed)
        points.append(
            curve_point(share, fit_value_head(ValueHead(config), lm, data, seed=seed, train_share=share, **fit))
        )
    return points


def curve_point(share: float, trained: dict[str, Any]) -> dict[str, Any]:
    """One point of :func:`learning_curve` from what :func:`fit_value_head` returned for that share."""
    return {
        "share": share,
        "prompts": trained["prompts"]["train"],
        "responses": trained["responses"]["train"],
        "positions": trained["positions"]["train"],
        "held_out_ce": trained["kept_ce"],
        "kept_epoch": trained["kept_epoch"],
        "marginal_ce": trained["marginal_ce"],
        **{f"corr E[u^{k}]": trained["calibration"][f"E[u^{k}]"]["corr"] for k in (3, 7, 15)},
    }


def _responses(data: ValueData) -> int:
    """How many distinct responses ``data``'s positions come from."""
    return int(torch.unique(torch.stack([data.prompt, data.response]), dim=1).shape[1]) if len(data) else 0


def _observations(lm: FrozenLM, data: ValueData, chunk: int = 8192) -> torch.Tensor:
    return torch.cat([data.take(slice(s, s + chunk)).observations(lm).cpu() for s in range(0, len(data), chunk)])


def calibration(probs: torch.Tensor, u: torch.Tensor, *, powers: tuple[int, ...] = (3, 7, 15)) -> dict[str, Any]:
    """Predicted vs realised ``E[u]``, ``P(u > 0.9)`` and ``E[u^{N−1}]`` (N = 4, 8, 16) by decile of the prediction."""
    u = u.double()
    edges = bin_edges(probs.shape[-1])
    above = (edges[1:] > 0.9).double() * ((edges[1:] - torch.clamp(edges[:-1], min=0.9)) / (edges[1:] - edges[:-1]))
    stats = {
        "E[u]": (expected_power(probs, 1.0), u),
        "P(u>0.9)": ((probs.double() * above).sum(-1), (u > 0.9).double()),
        **{f"E[u^{k}]": (expected_power(probs, float(k)), u**k) for k in powers},
    }
    out: dict[str, Any] = {}
    for name, (pred, real) in stats.items():
        order = pred.argsort()
        deciles = [order[i * len(order) // 10 : (i + 1) * len(order) // 10] for i in range(10)]
        rows = [(float(pred[d].mean()), float(real[d].mean())) for d in deciles if len(d)]
        corr = (
            float(np.corrcoef(pred.numpy(), real.numpy())[0, 1])
            if len(pred) > 2 and float(pred.std()) > 0
            else math.nan
        )
        out[name] = {"deciles": rows, "corr": corr}
    return out


def save_value_head(head: ValueHead, folder: str | os.PathLike) -> Path:
    """``value_head.json`` + ``value_head.safetensors`` in ``folder`` (written to temporary names, then renamed)."""
    from safetensors.torch import save_file

    path = Path(folder).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    tmp_w, tmp_c = path / f".{WEIGHTS_FILE}.tmp", path / f".{CONFIG_FILE}.tmp"
    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(tmp_w))
    tmp_c.write_text(json.dumps(asdict(head.config), indent=1) + "\n", encoding="utf-8")
    os.replace(tmp_w, path / WEIGHTS_FILE)
    os.replace(tmp_c, path / CONFIG_FILE)
    return path


def load_value_head(
    folder: str | os.PathLike, lm: FrozenLM | None = None, *, hidden_layer: int | None = None
) -> ValueHead:
    """The head saved in ``folder``; refused if it reads another model's features (``lm``) or another layer."""
    from safetensors.torch import load_file

    path = Path(folder).expanduser()
    if not (path / CONFIG_FILE).is_file():
        raise ConfigError(f"value head {str(folder)!r} holds no {CONFIG_FILE}; pass a folder written by `value fit`.")
    saved = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
    config = ValueHeadConfig(**{"norm": "joint", **saved})  # saved without "norm": a head of one LayerNorm
    if lm is not None and (config.obs_dim != 3 * lm.hidden_size + 2 or (config.model and config.model != lm.name)):
        raise ConfigError(
            f"value head {str(folder)!r} reads the features of model {config.model!r} ({config.obs_dim}-dimensional "
            f"observations), not of {lm.name!r} ({3 * lm.hidden_size + 2}); pass a head trained on this model."
        )
    if hidden_layer is not None and hidden_layer != config.hidden_layer:
        raise ConfigError(
            f"value head {str(folder)!r} reads hidden_layer={config.hidden_layer}, the env observes "
            f"hidden_layer={hidden_layer}; pass a head trained on that layer or the same --hidden-layer."
        )
    head = ValueHead(config)
    tensors = load_file(str(path / WEIGHTS_FILE))
    if "norm" not in saved:  # the LayerNorm was the first layer of `net`
        tensors = {_renumbered(k): v for k, v in tensors.items()}
    head.load_state_dict(tensors)
    return head.eval()


def _renumbered(key: str) -> str:
    """A tensor's name in a head saved when the LayerNorm was ``net.0``: ``net.0.*`` → ``norm.*``, ``net.i`` → ``net.i-1``."""
    _, index, rest = key.split(".", 2)
    return f"norm.{rest}" if index == "0" else f"net.{int(index) - 1}.{rest}"
