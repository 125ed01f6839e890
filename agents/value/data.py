"""Value data (issue 31): the LLM's own responses, each prompt's reward CDF, and positions labelled by final quantile.

For every training prompt ``x`` the LLM's sampler (always-accept: the truncated, tempered pool the env offers)
draws ``samples`` responses at once (:func:`agents.eval.metrics.sample`). They serve twice:

* **the prompt's reward CDF** ``F_x``: each response's quantile ``u = F_x(R)`` is its mid-rank among the *other*
  responses of its prompt (ties count half: VADER scores many neutral texts exactly 0), so ``u`` is not biased
  by the response itself;
* **labelled positions**: ``positions`` positions of each response (uniformly, without replacement) keep what the
  proxy observes there (``observation="prefix"``: the prefix's hidden state, the taken token, its log-probabilities,
  the pool's mean embedding) and the response's final ``u`` and ``R``: the value model learns the distribution of
  ``u`` given the prefix and the candidate (:mod:`agents.value.head`).

Collection is batched (``batch_prompts`` prompts per sampling call; the hidden states and pools are the
sampler's own, as the env computes them, so no second forward) and resumable: each batch of prompts is appended
to the file at ``path`` atomically, under a key of the settings; a stopped run continues where it stopped, and a file of other settings is refused.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from agents.eval.metrics import sample
from proxy_env.engine import candidates
from proxy_env.engine.lm import FrozenLM
from proxy_env.engine.steering import pool_embedding, prefix_observation
from proxy_env.errors import ConfigError
from proxy_env.rewards import score

DATA_VERSION = 1


class ValueData(NamedTuple):
    """Labelled positions (M of them) and the per-response table they came from."""

    hidden: torch.Tensor  # (M, H) float16: the prefix's hidden state (the last committed token's)
    pool_mean: torch.Tensor  # (M, H) float16: the pool's mean input embedding under q
    token: torch.Tensor  # (M,) long: the token the sampler took
    logprob: torch.Tensor  # (M,) float32: its tempered log-probability
    logq: torch.Tensor  # (M,) float32: its log-probability in the pool
    u: torch.Tensor  # (M,) float32: the response's final quantile F_x(R), mid-rank among its prompt's others
    reward: torch.Tensor  # (M,) float32: the response's final reward R
    prompt: torch.Tensor  # (M,) long: index of the prompt in the collection's prompt list
    response: torch.Tensor  # (M,) long: index of the response among its prompt's samples
    step: torch.Tensor  # (M,) long: the position in the response (0: the first token)
    length: torch.Tensor  # (M,) long: the response's length

    def __len__(self) -> int:
        return int(self.token.shape[0])

    def take(self, index: Any) -> ValueData:
        return ValueData(*(x[index] for x in self))

    @torch.no_grad()
    def observations(self, lm: FrozenLM) -> torch.Tensor:
        """(M, 3H + 2) the ``prefix`` observation of the taken token at each position, as the env builds it."""
        device = lm.device
        return prefix_observation(
            lm,
            self.hidden.to(device).float(),
            self.token[:, None].to(device),
            self.logprob[:, None].to(device),
            self.logq[:, None].to(device),
            pool_mean=self.pool_mean.to(device).float(),
        )[:, 0]


@dataclass(frozen=True)
class ValueDataKey:
    """What the data depend on: a file collected under other settings is not extended."""

    version: int
    model: str
    reward: str
    prompts: str
    samples: int
    positions: int
    max_new_tokens: int
    top_k: int
    top_p: float
    temperature: float
    hidden_layer: int
    seed: int


def midrank_quantiles(rewards: np.ndarray) -> np.ndarray:
    """(P, S) quantile of each response among the other S − 1 of its prompt: (#below + ½ #tied) / (S − 1).

    >>> midrank_quantiles(np.array([[0.0, 0.0, 1.0, -1.0]])).round(3).tolist()
    [[0.5, 0.5, 1.0, 0.0]]
    """
    r = np.asarray(rewards, dtype=np.float64)
    s = r.shape[1]
    if s < 2:
        raise ConfigError(f"samples={s}: a prompt's reward CDF needs at least 2 responses (64 or more is the plan).")
    below = (r[:, None, :] < r[:, :, None]).sum(-1)  # (P, S) others strictly below each response
    tied = (r[:, None, :] == r[:, :, None]).sum(-1) - 1  # others tied with it
    return (below + 0.5 * tied) / (s - 1)


def collect_value_data(
    lm: FrozenLM,
    prompts: list[str],
    reward_fn: Any,
    key: ValueDataKey,
    *,
    path: str | os.PathLike | None = None,
    batch_prompts: int = 4,
    progress: Any = None,
) -> ValueData:
    """Sample ``key.samples`` responses per prompt, score them, label ``key.positions`` positions of each.

    Resumable through ``path`` (:func:`collect_resumable`).
    """

    def batch(s: int, chunk: list[str]) -> ValueData:
        steps = StepRecorder(lm)
        drawn = sample(
            lm,
            chunk,
            key.samples,
            max_new_tokens=key.max_new_tokens,
            seed=key.seed + s,
            batch_size=len(chunk),
            top_k=key.top_k,
            top_p=key.top_p,
            temperature=key.temperature,
            on_step=steps,
            hidden_layer=key.hidden_layer,
        )
        texts = [[lm.decode(ids) for ids in row] for row in drawn.ids]
        flat = score(reward_fn, [p for p, row in zip(chunk, texts) for _ in row], [t for row in texts for t in row])
        rewards = np.asarray(flat, dtype=np.float64).reshape(len(chunk), key.samples)
        u = midrank_quantiles(rewards)
        picks = []  # (prompt j, sample i, step t, response length) of each labelled position
        for j, row in enumerate(drawn.ids):
            for i, ids in enumerate(row):
                # seeded by (seed, prompt, sample): a resumed run picks what a whole run would
                rng = np.random.default_rng([key.seed, s + j, i])
                picks += [(j, i, int(t), len(ids)) for t in sorted(rng.permutation(len(ids))[: key.positions])]
        return steps.positions(picks, key.samples, rewards, u, s)

    return collect_resumable(lm, prompts, key, batch, path=path, batch_prompts=batch_prompts, progress=progress)


def collect_resumable(
    lm: FrozenLM,
    prompts: list[str],
    key: Any,
    batch: Callable[[int, list[str]], ValueData],
    *,
    path: str | os.PathLike | None,
    batch_prompts: int,
    progress: Any,
) -> ValueData:
    """``batch(s, prompts[s : s + batch_prompts])`` for each batch of prompts, joined; resumable through ``path``.

    With ``path`` the data so far are written there after every batch (atomic writes, under ``key``) and a run
    resumes after the last batch the file holds; ``progress(done, total)`` is called after each batch.
    """
    done = load_value_data(path, key) if path is not None else None
    parts: list[ValueData] = [done] if done is not None else []
    start = _prompts_done(path) if done is not None else 0
    for s in range(start, len(prompts), batch_prompts):
        end = min(s + batch_prompts, len(prompts))
        parts.append(batch(s, prompts[s:end]))
        if path is not None:
            save_value_data(path, key, join_value_data(parts), prompts_done=end)
        if progress is not None:
            progress(end, len(prompts))
    return join_value_data(parts) if parts else empty_value_data(lm)


class StepRecorder:
    """``sample(on_step=)``: what the proxy observes at every draw of one sampling call (CPU, float16).

    Kept until the positions are picked after the call. The sampler's own cached forward gives the hidden state
    and its own pool the candidate's log-probabilities, as in the env: no second forward, and the taken token is in
    its pool by construction.
    """

    def __init__(self, lm: FrozenLM) -> None:
        self.lm = lm
        self.hidden: list[torch.Tensor] = []  # per step t: (R, H)
        self.pool_mean: list[torch.Tensor] = []
        self.token: list[torch.Tensor] = []  # per step t: (R,)
        self.logprob: list[torch.Tensor] = []
        self.logq: list[torch.Tensor] = []

    def __call__(self, start: int, t: int, hidden: torch.Tensor, pool: candidates.Pool, col: torch.Tensor) -> None:
        self.hidden.append(hidden.half().cpu())
        self.pool_mean.append(pool_embedding(self.lm, pool.tokens, pool.logq).half().cpu())
        self.token.append(pool.tokens.gather(1, col)[:, 0].cpu())
        self.logprob.append(pool.logprob.gather(1, col)[:, 0].float().cpu())
        self.logq.append(pool.logq.gather(1, col)[:, 0].float().cpu())

    def positions(
        self, picks: list[tuple[int, int, int, int]], samples: int, rewards: np.ndarray, u: np.ndarray, offset: int
    ) -> ValueData:
        """The labelled positions ``picks`` ((prompt j, sample i, step t, length); rows prompt-major) of this call."""
        if not picks:
            return empty_value_data(self.lm)
        j, i, t, length = (torch.tensor(x, dtype=torch.long) for x in zip(*picks))
        return self.take(
            j * samples + i,
            t,
            u=torch.as_tensor(u, dtype=torch.float32)[j, i],
            reward=torch.as_tensor(rewards, dtype=torch.float32)[j, i],
            prompt=offset + j,
            response=i,
            step=t,
            length=length,
        )

    def take(self, rows: torch.Tensor, steps: torch.Tensor, **labels: torch.Tensor) -> ValueData:
        """Positions at (row, step of this call) with the labels given (u, reward, prompt, response, step, length)."""
        kept = ("hidden", "pool_mean", "token", "logprob", "logq")
        return ValueData(**{name: torch.stack(getattr(self, name))[steps, rows] for name in kept}, **labels)


def empty_value_data(lm: FrozenLM) -> ValueData:
    """No positions (the fields' dtypes and widths kept, so it joins with others)."""
    return ValueData(**{name: _empty(name, lm) for name in ValueData._fields})


def _empty(name: str, lm: FrozenLM) -> torch.Tensor:
    if name in ("hidden", "pool_mean"):
        return torch.zeros(0, lm.hidden_size, dtype=torch.float16)
    return torch.zeros(
        0, dtype=torch.long if name in ("token", "prompt", "response", "step", "length") else torch.float32
    )


def join_value_data(parts: list[ValueData]) -> ValueData:
    """The positions of every part, in order."""
    return ValueData(*(torch.cat(xs) for xs in zip(*parts)))


def save_value_data(path: str | os.PathLike, key: Any, data: ValueData, *, prompts_done: int) -> None:
    """Write ``data`` to ``path`` atomically (a temporary file renamed over it): never a half-written file.

    ``key``: the dataclass of the settings the data depend on (:class:`ValueDataKey`, or a roll-in round's key).
    """
    target = Path(path).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    torch.save({"key": asdict(key), "prompts_done": prompts_done, **data._asdict()}, tmp)
    os.replace(tmp, target)


def _prompts_done(path: Any) -> int:
    return int(torch.load(Path(path).expanduser(), map_location="cpu", weights_only=True)["prompts_done"])


def load_value_data(path: str | os.PathLike | None, key: Any = None) -> ValueData | None:
    """The data at ``path`` (None if there is no file); with ``key``, refused if collected under other settings."""
    if path is None or not Path(path).expanduser().exists():
        return None
    try:
        raw = torch.load(Path(path).expanduser(), map_location="cpu", weights_only=True)
        data = ValueData(*(raw[name] for name in ValueData._fields))
    except Exception as exc:
        raise ConfigError(
            f"value data {str(path)!r} is not a value data file ({type(exc).__name__}: {exc}); pass a new path or delete it."
        ) from exc
    if key is not None and raw["key"] != asdict(key):
        differ = sorted(k for k in asdict(key) if raw["key"].get(k) != asdict(key)[k])
        what = ", ".join(f"{k}: file {raw['key'].get(k)!r} vs now {asdict(key)[k]!r}" for k in differ)
        raise ConfigError(
            f"value data {str(path)!r} was collected under other settings ({what}); pass a new path or the same settings."
        )
    return data
