"""``proxy-rlhf train --backend tilt``: the proxy trained on the exact KL-regularised objective of each position.

At a response position the LLM offers the pool ``q``; a proxy with accept probabilities ``a`` over it
commits token ``y`` with the steered probability ``π_a(y)`` (:func:`proxy_env.engine.steering.steered_probs`,
exact and differentiable). Committing ``y`` changes the reward model's score of the response so far by
``Δ(y) = Φ(s + y) − Φ(s)``, the potential-based shaped reward of that step. The backend minimises, over the
proxy's weights, the mean over positions of

    KL(π_a ‖ q) − E_{y∼π_a}[Δ(y)] / β,

whose minimiser over all distributions is the tilt ``π ∝ q · exp(Δ / β)``: the KL-regularised optimum of
one step, which the proxy approaches as far as a Markov accept rule under sampling without replacement
can. Every candidate's ``Δ`` is computed (one reward call per candidate), so there is no sampling noise
in the objective and no action is ever sampled during training.

It runs in two phases:

1. **collect**: the env (``observation="prefix"``) runs the LLM's own sampler (always-accept) for
   ``total_timesteps`` decisions; each position keeps the prefix hidden state, the pool and ``Δ`` of
   every pool candidate (centred under ``q``). ``TiltConfig.tilt_data`` caches this on disk.
2. **fit**: ``tilt_warmup_epochs`` passes fitting P(accept) to the with-replacement solution
   ``exp(min(0, (Δ − max Δ)/β))`` (:func:`warm_start_loss`: from always-accept the exact objective's
   gradient vanishes, every accept probability saturating at 1), then ``tilt_epochs`` passes of Adam on the
   exact objective, both through the SB3 policy's own actor
   (``policy.get_distribution``), so the result is an ordinary SB3 proxy checkpoint that ``generate``,
   ``bench``, ``export`` and ``--resume`` (with PPO) load as they load any other.

What it leaves out (its bias): the effect of a token on the rest of the response. ``Δ`` is the change of
the score *now*; a word that makes later words less positive is not charged for them. β is the tilt's
temperature: the KL per response falls as β grows. ``TiltConfig.tilt_future`` adds an estimate of that
missing part: the reward change still to come after each candidate under the LLM's own sampler,
``E_q[R − Φ(s + y)]``, regressed (ridge, linear in the candidate's observation) on the collected responses'
final rewards (:func:`agents.tilt_future.future_values`), so the fit tilts toward ``q·exp(Q_q/β)`` with ``Q_q(s, y) = E_q[R | s, y]``
(the first-order value of controlled decoding) instead of the myopic ``q·exp(Δ/β)``.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.interrupt import GracefulStop
from agents.policies import param_report
from agents.saving.checkpoint import lock_save_dir, save_or_rescue
from agents.tilt_data import DATA_VERSION, Positions, load_positions, save_positions
from agents.train import (
    TrainConfig,
    TrainResult,
    build_agent,
    config_dict,
    env_kwargs,
    make_sb3_env,
    resolve_lm,
    save_agent,
)
from proxy_env.config import Action
from proxy_env.engine.steering import kl_divergence, steered_probs
from proxy_env.errors import ConfigError
from proxy_env.rewards import score

# TrainConfig fields this backend does not use: (field, value that means "off")
_UNSUPPORTED = (("resume", None), ("eval_freq", 0), ("kl_target", None), ("save_freq", 0), ("time_limit_s", 0.0))


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class TiltConfig:
    """The fit of ``--backend tilt``; each field is a ``proxy-rlhf train`` flag."""

    tilt_epochs: int = field(
        default=6, metadata=_help("passes of the exact objective over the collected positions (--backend tilt)")
    )
    tilt_warmup_epochs: int = field(
        default=1,
        metadata=_help(
            "passes fitting P(accept) to exp(min(0, (Δ − max Δ)/β)) first (--backend tilt): the exact objective stalls from always-accept"
        ),
    )
    tilt_data: str | None = field(
        default=None,
        metadata=_help(
            "file caching the collected pools and reward changes (--backend tilt): reused when its settings match, written otherwise"
        ),
    )
    tilt_grid_step: float = field(
        default=0.2,
        metadata=_help(
            "quadrature step of the steered distribution during the fit (--backend tilt; the KL in bench is exact to 1e-6)"
        ),
    )
    tilt_future: bool = field(
        default=False,
        metadata=_help(
            "add to each candidate's reward change a ridge estimate of the change still to come after it, "
            "E_q[R - Phi(s+y)], fitted on the collected responses (--backend tilt)"
        ),
    )


def check_tilt(cfg: TrainConfig, tilt: TiltConfig) -> None:
    """Refuse settings the tilt backend cannot honour, naming the flag and the fix."""
    cfg.validate()
    if not cfg.env.kl_coef > 0:
        raise ConfigError(
            f"--kl-coef={cfg.env.kl_coef!r}: --backend tilt needs β > 0 (the tilt's temperature; 0.2 is a start)."
        )
    if cfg.env.observation != "prefix":
        raise ConfigError(
            f"--observation={cfg.env.observation!r}: --backend tilt needs --observation prefix (every candidate's observation at once)."
        )
    if cfg.algo.lower() not in ("ppo", "a2c", "trpo"):
        raise ConfigError(
            f"--algo={cfg.algo!r}: --backend tilt fits an actor's accept probability: use ppo, a2c or trpo."
        )
    for name, off in _UNSUPPORTED:
        if getattr(cfg, name) != off:
            raise ConfigError(
                f"--{name.replace('_', '-')}={getattr(cfg, name)!r} is not supported by --backend tilt; drop it."
            )
    if not isinstance(tilt.tilt_epochs, int) or tilt.tilt_epochs < 1:
        raise ConfigError(f"--tilt-epochs={tilt.tilt_epochs!r} must be an integer >= 1.")
    if not isinstance(tilt.tilt_warmup_epochs, int) or tilt.tilt_warmup_epochs < 0:
        raise ConfigError(f"--tilt-warmup-epochs={tilt.tilt_warmup_epochs!r} must be an integer >= 0.")
    if not 0 < tilt.tilt_grid_step <= 1:
        raise ConfigError(f"--tilt-grid-step={tilt.tilt_grid_step!r} must be in (0, 1]; 0.2 is exact to ~1e-6.")


def train_tilt(
    cfg: TrainConfig, tilt: TiltConfig | None = None, *, model: Any = None, reward: Any = None
) -> TrainResult:
    """Collect ``cfg.total_timesteps`` decisions of the LLM's sampler, then fit the proxy to the tilt of β = ``cfg.env.kl_coef``.

    Args:
        cfg: the training configuration (``kl_coef``, ``observation="prefix"``, ``learning_rate``,
            ``batch_size``, ``save_dir``, ``tensorboard_log``, ``progress_bar`` are used).
        tilt: the fit's own settings.
        model: an already loaded :class:`~proxy_env.engine.lm.FrozenLM` instead of ``cfg.env.model``.
        reward: a reward callable instead of ``cfg.env.reward``.

    Returns:
        :class:`~agents.train.TrainResult`; its ``kl_history`` holds ``(epoch, mean KL per position)``.
    """
    tilt = tilt or TiltConfig()
    check_tilt(cfg, tilt)
    lock = lock_save_dir(cfg.save_dir) if cfg.save_dir else None
    try:
        with GracefulStop() as stop:
            return _run(cfg, tilt, model, reward, stop)
    finally:
        if lock is not None:
            lock.release()


def _run(cfg: TrainConfig, tilt: TiltConfig, model: Any, reward: Any, stop: GracefulStop) -> TrainResult:
    lm = resolve_lm(model if model is not None else cfg.env.model, cfg.llm_device)
    kwargs = {**env_kwargs(cfg), "model": lm, "reward": reward if reward is not None else cfg.env.reward}
    env = make_sb3_env(kwargs, cfg.num_envs, seed=cfg.seed, bootstrap_truncated=cfg.bootstrap_truncated)
    try:
        agent = build_agent(cfg, env)
        logger = _tensorboard(agent, cfg)
        key = _data_key(cfg, lm, kwargs["reward"])
        data = load_positions(tilt.tilt_data, key) if tilt.tilt_data else None
        if data is None:
            data = collect(
                env.unwrapped, cfg.total_timesteps, seed=cfg.seed, progress=cfg.progress_bar, stop=stop, logger=logger
            )
            if tilt.tilt_data and stop.received is None:
                save_positions(tilt.tilt_data, key, data)
        if tilt.tilt_future:
            from agents.tilt_future import future_values

            future, report = future_values(lm, data, seed=cfg.seed)
            data = data.replace(delta=data.delta + future)
            print("tilt future: " + ", ".join(f"{k} {v:.4g}" for k, v in report.items()), flush=True)
            if logger is not None:
                for name, value in report.items():
                    logger.record(f"tilt/future_{name}", value)
                logger.dump(0)
        balance_norm(agent, lm, data)
        history = (
            []
            if stop.received
            else fit(
                agent,
                lm,
                data,
                beta=cfg.env.kl_coef,
                epochs=tilt.tilt_epochs,
                warmup_epochs=tilt.tilt_warmup_epochs,
                lr=cfg.learning_rate or 3e-3,
                batch_size=cfg.batch_size or 256,
                seed=cfg.seed,
                grid_step=tilt.tilt_grid_step,
                max_rejections=cfg.env.max_rejections,
                order=cfg.env.order,
                progress=cfg.progress_bar,
                stop=stop,
                logger=logger,
            )
        )
        agent.num_timesteps = (
            -(-cfg.total_timesteps // cfg.num_envs) * cfg.num_envs
        )  # whole steps of every env, as SB3 counts
        recorded = model if model is not None and getattr(model, "name", None) != cfg.env.model else None
        saved = {
            **env_kwargs(cfg),
            **({"model": recorded} if recorded is not None else {}),
            **({"reward": reward} if reward is not None else {}),
        }
        config = {**config_dict(cfg), "backend": "tilt", **asdict(tilt)}
        save = (
            partial(save_agent, path=cfg.save_dir, env_kwargs=saved, seed=cfg.seed, config=config, lm=lm)
            if cfg.save_dir
            else None
        )
        path = save_or_rescue(save, agent, cfg.save_dir) if save is not None else None
    finally:
        env.close()
    return TrainResult(agent, path, param_report(agent, lm.num_parameters), [], history, stop.received)


def _tensorboard(agent: Any, cfg: TrainConfig) -> Any:
    if not cfg.tensorboard_log:
        return None
    from stable_baselines3.common.logger import configure

    logger = configure(str(Path(cfg.tensorboard_log) / "tilt_1"), ["tensorboard"])
    agent.set_logger(logger)
    return logger


def _bar(total: int, unit: str, desc: str, show: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, unit=unit, desc=desc, disable=not show)


# ---------------------------------------------------------------------------------------------- collect
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
    bar = _bar(decisions, "decision", "collect", progress)
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
        logger.record("collect/decisions_per_s", done / max(time.perf_counter() - start, 1e-9))
        logger.dump(done)
    if not parts["tokens"]:
        raise ConfigError(
            f"total_timesteps={decisions}: no position with two or more candidates was collected; raise it."
        )
    width = max(t.shape[1] for t in parts["tokens"])
    pads = {"tokens": 0, "logprob": -1e4, "logq": -1e4, "delta": 0.0}
    fields = [
        torch.cat([_pad(t, width, pads[name]) if name in pads else t for t in parts[name]])
        for name in Positions._fields[:-1]
    ]
    return Positions(*fields, torch.tensor(togo, dtype=torch.float32))


def _finished(info: dict[str, Any]) -> list[tuple[int, float]]:
    """(env, raw reward) of each response that ended this step, from a step's ``info`` (either autoreset mode)."""
    end, mask = (info["final_info"], info["_final_info"]) if "final_info" in info else (info, info.get("_reward_raw"))
    if mask is None:
        return []
    return [(int(i), float(end["reward_raw"][i])) for i in np.flatnonzero(mask)]


def _pad(x: torch.Tensor, width: int, value: float) -> torch.Tensor:
    return torch.nn.functional.pad(x, (0, width - x.shape[1]), value=value)


def _data_key(cfg: TrainConfig, lm: Any, reward: Any) -> dict[str, Any]:
    """What the collected positions depend on: a cache made under other settings is not reused."""
    reward_name = reward if isinstance(reward, str) else repr(reward)
    return {
        "version": DATA_VERSION,
        "model": getattr(lm, "name", cfg.env.model),
        "reward": reward_name,
        "prompts": cfg.env.prompts,
        "decisions": cfg.total_timesteps,
        "num_envs": cfg.num_envs,
        "seed": cfg.seed,
        **{k: getattr(cfg.env, k) for k in ("max_new_tokens", "top_k", "top_p", "temperature", "hidden_layer")},
    }


# ---------------------------------------------------------------------------------------------- fit
def accept_probs(agent: Any, obs: torch.Tensor) -> torch.Tensor:
    """The SB3 actor's P(accept) (N,) for observations (N, d), differentiable."""
    return agent.policy.get_distribution(obs.to(agent.policy.device)).distribution.probs[:, int(Action.ACCEPT)]


def tilt_loss(
    agent: Any,
    lm: Any,
    batch: Positions,
    beta: float,
    *,
    grid_step: float = 0.2,
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
        if isinstance(module, HiddenStateExtractor) and module.net[0].weight.shape[0] == 3 * h + 2:
            for b, scale in zip(blocks, scales):
                module.net[0].weight[b] = scale
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
    grid_step: float = 0.2,
    max_rejections: int | None = None,
    order: str = "sample",
    progress: bool = False,
    stop: GracefulStop | None = None,
    logger: Any = None,
) -> list[tuple[int, float]]:
    """Adam on the actor's weights: ``warmup_epochs`` passes of :func:`warm_start_loss`, then ``epochs`` of :func:`tilt_loss`.

    Returns ``(epoch, mean KL per position)`` for each epoch of the exact objective.
    """
    params = [p for p in agent.policy.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    history: list[tuple[int, float]] = []
    bar = _bar((warmup_epochs + epochs) * len(data), "position", f"fit β={beta:g}", progress)

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
        history.append((epoch, kl_m))
        if logger is not None:
            for name, value in (("loss", loss_m), ("kl_per_position", kl_m), ("gain_per_position", gain_m)):
                logger.record(f"tilt/{name}", value)
            logger.dump(warmup_epochs + epoch + 1)
    bar.close()
    return history
