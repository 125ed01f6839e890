"""Phase 1 of the tilt backend: the LLM's own sampler run for a budget of decisions, every candidate's Δ scored."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch

from agents.interrupt import GracefulStop
from agents.tilt.data import Positions
from proxy_env.config import Action
from proxy_env.errors import ConfigError
from proxy_env.rewards import score


@torch.no_grad()
def collect(
    venv: Any,
    decisions: int,
    *,
    seed: int | None = None,
    progress: bool = False,
    stop: GracefulStop | None = None,
    logger: Any = None,
) -> Positions:
    """Run the LLM's own sampler (always-accept) in ``venv`` for ``decisions`` decisions; every position's pool and Δ.

    ``venv``: a :class:`~proxy_env.vector.vector_env.ProxyRLHFVectorEnv` with ``observation="prefix"``.
    Each step scores, in one batched reward call, the response so far extended by each candidate of each
    env's pool; ``Δ`` is centred under ``q`` (a per-position constant does not move the tilt). When a
    response ends, each of its positions gets ``togo = R − Φ(s + y)`` for the token the sampler took.
    """
    hidden_size = venv.lm.hidden_size
    venv.reset(seed=seed)
    accept = np.full(venv.num_envs, int(Action.ACCEPT))
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in Positions._fields}
    taken_phi: list[float] = []  # Φ(s + y) of the token taken at each recorded position
    togo: list[float] = []  # filled when the position's response ends
    open_rows: list[list[int]] = [[] for _ in range(venv.num_envs)]  # recorded positions of each env's running response
    done, start = 0, time.perf_counter()
    if logger is not None:  # a first point: the bench's "training s" (the log's span) then counts the collection
        logger.record("collect/decisions", 0)
        logger.dump(0)
    bar = progress_bar(decisions, "decision", "collect", progress)
    while done < decisions and not (stop is not None and stop.received):
        view = venv.pool_observations()
        prompts, responses = venv.prefixes()
        width = view.tokens.shape[1]
        rows = (view.size >= 2).nonzero().squeeze(1).tolist()  # a one-token pool is no decision
        if rows:
            sizes, tokens = view.size.tolist(), view.tokens.tolist()
            extended = [responses[i] + [tokens[i][k]] for i in rows for k in range(sizes[i])]  # row by row, pool order
            texts = venv.lm.tokenizer.batch_decode(
                extended, skip_special_tokens=True
            )  # what FrozenLM.decode gives, in one call
            scores = score(venv.reward_fn, [prompts[i] for i in rows for _ in range(sizes[i])], texts)
            index = torch.as_tensor(rows)
            q = view.q[index].double().cpu()
            phi = torch.zeros(len(rows), width, dtype=torch.float64)
            phi[torch.arange(width) < view.size[index].cpu()[:, None]] = torch.as_tensor(
                np.asarray(scores, dtype=np.float64)
            )
            centred = (phi - (q * phi).sum(-1, keepdim=True)) * (q > 0)
            obs = view.obs[index].cpu()
            parts["hidden"].append(obs[:, 0, :hidden_size].half())
            parts["tokens"].append(view.tokens[index].cpu())
            parts["logprob"].append(obs[:, :, -2].clone())  # clones: a view would keep every step's whole obs alive
            parts["logq"].append(obs[:, :, -1].clone())
            parts["delta"].append(centred.float())
            for j, i in enumerate(rows):  # under always-accept the candidate on offer first (index 0) is the one taken
                open_rows[i].append(len(taken_phi))
                taken_phi.append(float(phi[j, 0]))
                togo.append(math.nan)
        _, _, _, _, info = venv.step(accept)
        for i, final in _finished(info):
            for n in open_rows[i]:
                togo[n] = final - taken_phi[n]
            open_rows[i] = []
        done += venv.num_envs
        bar.update(venv.num_envs)
    bar.close()
    if logger is not None:
        logger.record("collect/decisions", done)
        logger.record("collect/decisions_per_s", done / max(time.perf_counter() - start, 1e-9))
        logger.dump(done)
    if not parts["tokens"]:
        raise ConfigError(
            f"total_timesteps={decisions}: no position with two or more candidates was collected; raise it."
        )
    width = max(t.shape[1] for t in parts["tokens"])
    pads = {"tokens": 0, "logprob": -1e4, "logq": -1e4, "delta": 0.0}
    joined = {
        name: torch.cat([_pad(t, width, pads[name]) if name in pads else t for t in parts[name]])
        for name in Positions._fields[:-1]
    }
    return Positions(**joined, togo=torch.tensor(togo, dtype=torch.float32))


def _finished(info: dict[str, Any]) -> list[tuple[int, float]]:
    """(env, raw reward) of each response that ended this step, from a step's ``info`` (either autoreset mode)."""
    end, mask = (info["final_info"], info["_final_info"]) if "final_info" in info else (info, info.get("_reward_raw"))
    if mask is None:
        return []
    return [(int(i), float(end["reward_raw"][i])) for i in np.flatnonzero(mask)]


def _pad(x: torch.Tensor, width: int, value: float) -> torch.Tensor:
    return torch.nn.functional.pad(x, (0, width - x.shape[1]), value=value)


def progress_bar(total: int, unit: str, desc: str, show: bool) -> Any:
    """A tqdm bar of ``total`` ``unit``s, hidden unless ``show`` (the CLI shows it; library calls do not print)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, unit=unit, desc=desc, disable=not show)
