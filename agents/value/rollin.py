"""Q♯'s second round (issue 31): positions the guided proxy reaches, labelled by the LLM's own continuations.

The first round's positions come from the LLM's sampler alone, so the head has seen few of the prefixes the guide
itself steers into. Q♯ (Zhou et al., 2025) adds one round of **roll-ins**: the guided policy writes a response, a
switch step ``t`` is drawn uniformly along it, and from ``prompt + response[:t]`` the LLM's sampler (the
reference, always-accept) writes the rest. The value is still the reference's, ``E_q[u^{N−1} | s]``: only the
states it is learned on move toward those the guide visits.

Each continuation's reward is placed in the prompt's **reference** CDF (the first round's ``samples`` rewards of
that prompt): ``u = (#below + ½ #tied) / S``, the mid-CDF of an independent draw, so both rounds share one ``u``.
Its ``positions`` labelled positions are drawn among the continuation's own steps (``t`` and after: the states
whose futures are the reference's), and keep what the proxy observes there, as in the first round.

Collection is batched (``batch_prompts`` prompts × ``roll_ins`` roll-ins per call) and resumable like the first
round's, under a key that adds the guide (its head's fingerprint, N and rule) to the first round's settings.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from agents.eval.metrics import sample
from agents.value.data import StepRecorder, ValueData, ValueDataKey, collect_resumable, empty_value_data
from proxy_env.engine.lm import FrozenLM
from proxy_env.errors import ConfigError
from proxy_env.rewards import score

ROLLIN_VERSION = 1


@dataclass(frozen=True)
class RollInKey:
    """What a roll-in round depends on: the first round's settings (its CDFs), the guide, the budget."""

    version: int
    reference: dict[str, Any]  # the first round's ValueDataKey, as a dict
    head: str  # the guide's value head: its fingerprint
    n: int
    rule: str
    roll_ins: int
    positions: int
    seed: int
    batch_prompts: int  # each batch's seeds derive from its first prompt's index


def reference_rewards(data: ValueData) -> dict[int, np.ndarray]:
    """Prompt index -> the rewards of its first-round responses (one per response, however many positions each)."""
    pairs = torch.stack([data.prompt, data.response], 1)
    _, first = np.unique(pairs.numpy(), axis=0, return_index=True)
    out: dict[int, list[float]] = {}
    for m in first:
        out.setdefault(int(data.prompt[m]), []).append(float(data.reward[m]))
    return {p: np.asarray(r, dtype=np.float64) for p, r in out.items()}


def mid_cdf(reference: np.ndarray, rewards: np.ndarray) -> np.ndarray:
    """``(#below + ½ #tied) / S`` of each reward among the ``S`` reference rewards (VADER's ties count half)."""
    below = (reference[None, :] < rewards[:, None]).sum(1)
    tied = (reference[None, :] == rewards[:, None]).sum(1)
    return (below + 0.5 * tied) / len(reference)


def collect_rollin_data(
    lm: FrozenLM,
    prompts: list[str],
    reward_fn: Any,
    key: RollInKey,
    reference: ValueData,
    guide: Callable[[int], Any],
    *,
    path: str | os.PathLike | None = None,
    progress: Any = None,
) -> ValueData:
    """``key.roll_ins`` guided roll-ins per prompt, each switched to the LLM's sampler at a uniform step.

    ``reference``: the first round's data on the same ``prompts`` (its rewards are each prompt's CDF); ``guide``:
    ``seed -> agent``, the proxy that rolls in (a :class:`agents.value.guide.ValueGuide` in a ``PowerProxy``, or any
    agent with ``predict``), built again for each batch with the batch's seed so that a resumed run draws what a
    whole run would. Resumable through ``path`` (:func:`agents.value.data.collect_resumable`). The roll-ins are
    responses ``samples + r`` of their prompt (``r < roll_ins``), after the first round's ``samples``.
    """
    from agents.generate import ProxyGenerator

    base = ValueDataKey(**key.reference)
    cdf = reference_rewards(reference)
    missing = [i for i in range(len(prompts)) if i not in cdf]
    if missing:
        raise ConfigError(
            f"the first round's value data hold no responses for {len(missing)} of the {len(prompts)} prompts "
            f"(first: index {missing[0]}); collect the first round on the same prompts before rolling in."
        )
    pool = {"top_k": base.top_k, "top_p": base.top_p, "temperature": base.temperature}

    def batch(s: int, chunk: list[str]) -> ValueData:
        roll_seed, sample_seed = (int(x) for x in np.random.SeedSequence([key.seed, s]).generate_state(2))
        rows = [(j, r) for j in range(len(chunk)) for r in range(key.roll_ins)]
        gen = ProxyGenerator(
            lm,
            guide(roll_seed),
            batch_size=len(rows),
            deterministic=False,
            seed=roll_seed,
            max_new_tokens=base.max_new_tokens,
            observation="prefix",
            hidden_layer=base.hidden_layer,
            **pool,
        )
        with torch.random.fork_rng():
            torch.manual_seed(roll_seed)
            rolled = [g.token_ids for g in gen.generate([chunk[j] for j, _ in rows])]
        return _continue(lm, chunk, rows, rolled, reward_fn, key, base, cdf, s, pool, sample_seed)

    return collect_resumable(lm, prompts, key, batch, path=path, batch_prompts=key.batch_prompts, progress=progress)


def _continue(
    lm: FrozenLM,
    chunk: list[str],
    rows: list[tuple[int, int]],
    rolled: list[list[int]],
    reward_fn: Any,
    key: RollInKey,
    base: ValueDataKey,
    cdf: dict[int, np.ndarray],
    offset: int,
    pool: dict[str, Any],
    seed: int,
) -> ValueData:
    """Switch each roll-in to the LLM's sampler at a uniform step; label positions of the continuations."""
    switch = [
        int(np.random.default_rng([key.seed, offset + j, r]).integers(0, max(len(ids), 1)))
        for (j, r), ids in zip(rows, rolled)
    ]
    steps = StepRecorder(lm)
    left = base.max_new_tokens - min(switch)
    drawn = sample(
        lm,
        [chunk[j] for j, _ in rows],
        1,
        max_new_tokens=left,
        seed=seed,
        batch_size=len(rows),
        on_step=steps,
        hidden_layer=base.hidden_layer,
        prefixes=[ids[:t] for ids, t in zip(rolled, switch)],
        **pool,
    ).ids
    # a continuation longer than its row's budget is cut there (the call ran to the longest budget)
    tails = [row[0][: base.max_new_tokens - t] for row, t in zip(drawn, switch)]
    texts = [lm.decode(ids[:t] + tail) for ids, t, tail in zip(rolled, switch, tails)]
    rewards = np.asarray(score(reward_fn, [chunk[j] for j, _ in rows], texts), dtype=np.float64)
    u = np.array([mid_cdf(cdf[offset + j], rewards[k : k + 1])[0] for k, (j, _) in enumerate(rows)])
    picks = []  # (row k, step τ of the continuation)
    for k, ((j, r), tail) in enumerate(zip(rows, tails)):
        rng = np.random.default_rng([key.seed, offset + j, r, 1])
        picks += [(k, int(tau)) for tau in sorted(rng.permutation(len(tail))[: key.positions])]
    if not picks:
        return empty_value_data(lm)
    row, tau = (torch.tensor(x, dtype=torch.long) for x in zip(*picks))
    at = torch.tensor(switch, dtype=torch.long)[row]
    return steps.take(
        row,
        tau,
        u=torch.as_tensor(u, dtype=torch.float32)[row],
        reward=torch.as_tensor(rewards, dtype=torch.float32)[row],
        prompt=offset + torch.tensor([j for j, _ in rows], dtype=torch.long)[row],
        response=base.samples + torch.tensor([r for _, r in rows], dtype=torch.long)[row],
        step=at + tau,
        length=at + torch.tensor([len(t) for t in tails], dtype=torch.long)[row],
    )


def rollin_key(
    reference: ValueDataKey, head: str, n: int, rule: str, roll_ins: int, positions: int, batch_prompts: int
) -> RollInKey:
    """The key of a roll-in round on top of the first round ``reference``."""
    return RollInKey(
        ROLLIN_VERSION, asdict(reference), head, n, rule, roll_ins, positions, reference.seed, batch_prompts
    )
