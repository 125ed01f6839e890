"""The positions ``--backend tilt`` collects (:class:`Positions`) and their on-disk cache (``--tilt-data``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

import torch

from proxy_env.engine.steering import pool_embedding, prefix_observation
from proxy_env.errors import ConfigError

DATA_VERSION = 2  # 2: Positions.togo


class Positions(NamedTuple):
    """The collected positions: what the proxy saw and what every candidate would have paid."""

    hidden: torch.Tensor  # (N, H) float16 prefix hidden states
    tokens: torch.Tensor  # (N, K) long pool, in offer order (padding: 0)
    logprob: torch.Tensor  # (N, K) float32 tempered log-probabilities (-1e4 on padding)
    logq: torch.Tensor  # (N, K) float32 pool log-probabilities (-1e4 on padding)
    delta: torch.Tensor  # (N, K) float32 reward change of each candidate, centred under q (0 on padding)
    # (N,) float32 R − Φ(s + y) of the candidate the sampler took (offer index 0): the reward change still to come
    # after it in that response; NaN where the response did not end within the collection
    togo: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def replace(self, **changes: Any) -> Positions:
        """These positions with some fields changed (NamedTuple's ``_replace`` fails: ``__len__`` counts positions)."""
        return Positions(**{**self._asdict(), **changes})

    def take(self, index: Any) -> Positions:
        """The positions at ``index`` (a slice, or a tensor of indices)."""
        return Positions(
            self.hidden[index],
            self.tokens[index],
            self.logprob[index],
            self.logq[index],
            self.delta[index],
            None if self.togo is None else self.togo[index],
        )

    @property
    def valid(self) -> torch.Tensor:
        """(N, K) bool: real candidates, not padding."""
        return self.logq > -1e3

    def q(self) -> torch.Tensor:
        """(N, K) float64 pool probabilities, renormalised (0 on padding)."""
        q = self.logq.double().exp()
        return q / q.sum(-1, keepdim=True)

    @torch.no_grad()
    def observations(self, lm: Any) -> torch.Tensor:
        """(N, K, 3H + 2) the ``prefix`` observation of every candidate, as the env builds it."""
        return prefix_observation(lm, self.hidden.float(), self.tokens, self.logprob, self.logq)

    @torch.no_grad()
    def taken_observations(self, lm: Any, chunk: int = 2048) -> torch.Tensor:
        """(N, 3H + 2) the ``prefix`` observation of the token the sampler took (offer index 0), on the CPU.

        The pool's mean embedding is the whole pool's, as in :meth:`observations`; ``chunk`` positions at a time.
        """
        parts = []
        for s in range(0, len(self), chunk):
            b = self.take(slice(s, s + chunk))
            pool_mean = pool_embedding(lm, b.tokens, b.logq)
            obs = prefix_observation(
                lm, b.hidden.float(), b.tokens[:, :1], b.logprob[:, :1], b.logq[:, :1], pool_mean=pool_mean
            )
            parts.append(obs[:, 0].cpu())
        return torch.cat(parts)


def save_positions(path: str | os.PathLike, key: dict[str, Any], data: Positions) -> None:
    """Write ``data`` to ``path`` atomically (a temporary file renamed over it): never a half-written cache."""
    target = Path(path).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    torch.save({"key": key, **data._asdict()}, tmp)
    os.replace(tmp, target)


def load_positions(path: str | os.PathLike, key: dict[str, Any]) -> Positions | None:
    """The cached positions at ``path`` if they were collected under ``key``; None if there is no file yet."""
    target = Path(path).expanduser()
    if not target.exists():
        return None
    try:
        raw = torch.load(target, map_location="cpu", weights_only=True)
        stored = raw["key"]
        data = Positions(raw["hidden"], raw["tokens"], raw["logprob"], raw["logq"], raw["delta"], raw.get("togo"))
    except Exception as exc:
        raise ConfigError(
            f"--tilt-data={str(path)!r} is not a tilt data file ({type(exc).__name__}: {_first_line(exc)}); "
            "pass a new path or delete it."
        ) from exc
    differ = sorted(k for k in set(key) | set(stored) if key.get(k) != stored.get(k))
    if differ:
        what = ", ".join(f"{k}: file {stored.get(k)!r} vs now {key.get(k)!r}" for k in differ)
        raise ConfigError(
            f"--tilt-data={str(path)!r} was collected under other settings ({what}); pass a new path or the same settings."
        )
    shapes = {name: tuple(x.shape) for name, x in data._asdict().items() if x is not None}
    n, k = shapes["tokens"] if len(shapes["tokens"]) == 2 else (-1, -1)
    pool_fields = ("tokens", "logprob", "logq", "delta")
    if (
        any(shapes[f] != (n, k) for f in pool_fields)
        or shapes["hidden"][:1] != (n,)
        or shapes.get("togo", (n,)) != (n,)
    ):  # the right key but tensors that do not fit together: a file written by hand or by another version
        raise ConfigError(
            f"--tilt-data={str(path)!r} holds tensors of inconsistent shapes ({shapes}); pass a new path or delete it."
        )
    return data


def _first_line(exc: Exception) -> str:
    """What went wrong, without torch's advice to re-run with ``weights_only`` off: that is the unsafe load."""
    text = str(exc).strip()
    if "Weights only load failed" in text:
        return "it holds Python objects that the safe loader (weights_only=True) refuses to unpickle"
    return text.splitlines()[0] if text else type(exc).__name__
