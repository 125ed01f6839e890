"""Training the Bradley–Terry head: embed once, fit with AdamW, early-stop on held-out prompts, report.

>>> import torch
>>> from feedback.records import PreferencePair
>>> class Toy:  # a 1-d "encoder": the number of '+' signs
...     name, dim = "toy", 1
...     def spec(self): return {"type": "toy"}
...     def embed(self, prompts, responses): return torch.tensor([[r.count("+")] for r in responses], dtype=torch.float32)
>>> pairs = [PreferencePair(f"q{i}", "+" * (i % 5 + 1), "", "toy", 1.0) for i in range(40)]
>>> result = train_reward_model(pairs, Toy(), RMTrainConfig(hidden=0, epochs=50, test_fraction=0.25, seed=0))
>>> result.metrics["test_accuracy"], result.history[-1][0] < result.history[0][0]
(1.0, True)
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any, NamedTuple

import numpy as np
import torch

from feedback.records import PreferencePair
from feedback.rm import (
    BTRewardModel,
    RMTrainConfig,
    balance_by_length,
    bt_loss,
    fit_input_stats,
    head_outputs,
    make_head,
    pearson,
    split_by_prompt,
)
from proxy_env.errors import ConfigError
from proxy_env.rewards.encoders import Encoder, per_token

logger = logging.getLogger(__name__)


class TrainedRM(NamedTuple):
    """What :func:`train_reward_model` returns."""

    model: BTRewardModel
    metrics: dict[str, Any]  # also saved in the model's config
    history: list[tuple[float, float]]  # (train loss, validation loss) per epoch


def embed_pairs(pairs: Sequence[PreferencePair], encoder: Encoder) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Embeddings of every distinct (prompt, response) once: (U, dim) (or (U, T, dim + 1) token states), and chosen/rejected indices (n,) into them."""
    index: dict[tuple[str, str], int] = {}
    for p in pairs:
        for text in (p.chosen, p.rejected):
            index.setdefault((p.prompt, text), len(index))
    keys = list(index)
    emb = encoder.embed([k[0] for k in keys], [k[1] for k in keys]).float()  # (U, dim) or (U, T, dim + 1)
    chosen = torch.tensor([index[(p.prompt, p.chosen)] for p in pairs], dtype=torch.long)
    rejected = torch.tensor([index[(p.prompt, p.rejected)] for p in pairs], dtype=torch.long)
    return emb, chosen, rejected


def _epoch(
    head: torch.nn.Module,
    opt: torch.optim.Optimizer,
    emb: torch.Tensor,
    c: torch.Tensor,
    r: torch.Tensor,
    batch_size: int,
    gen: torch.Generator,
) -> float:
    head.train()
    total = 0.0
    for batch in torch.randperm(len(c), generator=gen).split(batch_size):
        loss = bt_loss(head(emb[c[batch]]).squeeze(-1), head(emb[r[batch]]).squeeze(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        total += float(loss.detach()) * len(batch)
    return total / max(len(c), 1)


@torch.no_grad()
def _eval_loss(head: torch.nn.Module, emb: torch.Tensor, c: torch.Tensor, r: torch.Tensor) -> float:
    return float(bt_loss(head_outputs(head.eval(), emb[c]), head_outputs(head, emb[r]))) if len(c) else float("nan")


def train_reward_model(
    pairs: Sequence[PreferencePair], encoder: Encoder, cfg: RMTrainConfig | None = None
) -> TrainedRM:
    """Fit a Bradley–Terry head on ``pairs`` over the frozen ``encoder``; report held-out figures.

    Metrics: pairs per split, test accuracy (``r_c > r_r``) overall and on pairs whose source margin
    is >= ``cfg.margin_threshold``, test loss, epochs run, the Pearson correlation of the reward with
    response length (words) on test responses, and how often the chosen response is the longer one.
    """
    cfg = cfg or RMTrainConfig()
    cfg.validate()
    start = time.perf_counter()
    pairs = balance_by_length(pairs, cfg.length_bucket_words, cfg.seed) if cfg.balance_length else list(pairs)
    same = sum(p.chosen == p.rejected for p in pairs)
    if same:  # chosen == rejected (or both empty) states no preference: a model trained on it sits at chance
        if same == len(pairs):
            raise ConfigError(
                f"none of the {len(pairs)} pairs expresses a preference (chosen == rejected in every one); "
                "rebuild them (proxy-rlhf prefs build drops identical responses)."
            )
        logger.warning("dropping %d of %d pairs whose chosen and rejected responses are identical", same, len(pairs))
        pairs = [p for p in pairs if p.chosen != p.rejected]
    if len(pairs) < 2:
        raise ConfigError(f"{len(pairs)} preference pairs after filtering; the reward model needs at least 2.")
    emb, c, r = embed_pairs(pairs, encoder)
    train_i, val_i, test_i = (
        torch.tensor(ix, dtype=torch.long)
        for ix in split_by_prompt(pairs, cfg.test_fraction, cfg.val_fraction, cfg.seed)
    )
    if len(train_i) == 0:
        raise ConfigError(
            f"no training pairs left after holding out test_fraction={cfg.test_fraction}, val_fraction={cfg.val_fraction}."
        )
    embed_s = time.perf_counter() - start
    with torch.random.fork_rng(devices=[]):  # a seeded init that leaves the caller's global RNG untouched
        torch.manual_seed(cfg.seed)
        head = make_head(encoder.dim, cfg.hidden, tokens=per_token(encoder))  # built on the CPU
    fit_input_stats(
        head, emb[torch.cat([c[train_i], r[train_i]]).unique()]
    )  # input statistics of the training responses
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    stop_i = val_i if len(val_i) else train_i  # early stopping on validation prompts (train when none)
    best, best_state, waited, history = float("inf"), copy.deepcopy(head.state_dict()), 0, []
    for _ in range(cfg.epochs):
        train_loss = _epoch(head, opt, emb, c[train_i], r[train_i], cfg.batch_size, gen)
        val_loss = _eval_loss(head, emb, c[stop_i], r[stop_i])
        history.append((train_loss, val_loss))
        if val_loss < best - 1e-5:
            best, best_state, waited = val_loss, copy.deepcopy(head.state_dict()), 0
        elif (waited := waited + 1) >= cfg.patience:
            break
    head.load_state_dict(best_state)
    head.eval()
    raw = head_outputs(head, emb)  # (U,)
    used = torch.cat([c[train_i], r[train_i]]).unique()
    mean, std = (
        (float(raw[used].mean()), float(raw[used].std().clamp(min=1e-6)))
        if cfg.normalize and len(used) > 1
        else (0.0, 1.0)
    )
    metrics = _metrics(pairs, raw, c, r, train_i, val_i, test_i, cfg)
    metrics.update(epochs=len(history), embed_seconds=embed_s, seconds=time.perf_counter() - start)
    model = BTRewardModel(
        encoder, head, hidden=cfg.hidden, mean=mean, std=std, metrics=metrics, train_config=asdict(cfg)
    )
    return TrainedRM(model, metrics, history)


def _metrics(
    pairs: Sequence[PreferencePair],
    raw: torch.Tensor,
    c: torch.Tensor,
    r: torch.Tensor,
    train_i: torch.Tensor,
    val_i: torch.Tensor,
    test_i: torch.Tensor,
    cfg: RMTrainConfig,
) -> dict[str, Any]:
    ix = test_i if len(test_i) else train_i  # with no test split, the figures are on training pairs (flagged)
    diff = (raw[c[ix]] - raw[r[ix]]).numpy()
    margins = np.array([pairs[i].margin if pairs[i].margin is not None else np.nan for i in ix.tolist()])
    strong = margins >= cfg.margin_threshold
    texts = [(pairs[i].chosen, raw[c[i]]) for i in ix.tolist()] + [(pairs[i].rejected, raw[r[i]]) for i in ix.tolist()]
    longer = [len(p.chosen.split()) > len(p.rejected.split()) for p in pairs]

    def acc(mask: np.ndarray) -> float | None:
        return float((diff[mask] > 0).mean()) if mask.any() else None

    return {
        "pairs": len(pairs),
        "train_pairs": len(train_i),
        "val_pairs": len(val_i),
        "test_pairs": len(test_i),
        "evaluated_on": "test" if len(test_i) else "train",
        "test_accuracy": acc(np.ones(len(diff), dtype=bool)),
        "margin_threshold": cfg.margin_threshold,
        "test_pairs_margin": int(strong.sum()),
        "test_accuracy_margin": acc(strong),
        "test_loss": float(np.logaddexp(0.0, -diff).mean()) if len(diff) else None,
        "length_correlation": _nan_none(pearson([float(v) for _, v in texts], [len(t.split()) for t, _ in texts])),
        "chosen_longer_rate": float(np.mean(longer)) if longer else None,
    }


def _nan_none(value: float) -> float | None:
    return None if value != value else value
