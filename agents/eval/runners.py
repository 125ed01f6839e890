"""How each kind of agent is evaluated by :func:`agents.eval.bench.run_bench` (one function per kind)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from agents.accept import accept_model
from agents.eval.kl import Trajectory, finetuned_trajectory, trajectory
from agents.eval.metrics import bon_kl_bound, bon_kl_empirical, sample, sample_ids
from agents.eval.results import AgentEval, BenchConfig, Ticker, read_finetune_meta
from proxy_env.engine.lm import FrozenLM
from proxy_env.errors import ConfigError
from proxy_env.rewards import RewardFn, score

# env settings that belong to the agent (what its actions mean), taken from its checkpoint
AGENT_ENV_KEYS = ("observation", "hidden_layer", "order", "max_rejections")


def _pool_kwargs(cfg: BenchConfig) -> dict[str, Any]:
    return {"top_k": cfg.top_k, "top_p": cfg.top_p, "temperature": cfg.temperature}


def load_proxy(
    path: str, lm: FrozenLM, cfg: BenchConfig, tensorboard: str | None, notes: list[str]
) -> tuple[str, Any, dict[str, Any], str | None]:
    """(name, SB3 model, its env settings, its TensorBoard dir) of a checkpoint folder."""
    from agents.saving.checkpoint import check_lm, load_checkpoint

    checkpoint = load_checkpoint(path, device="cpu" if lm.device.type == "cpu" else "auto", trust=cfg.trust_checkpoint)
    check_lm(checkpoint.meta, lm, path)
    env = checkpoint.meta.env_kwargs
    env_kw = {k: env[k] for k in AGENT_ENV_KEYS if k in env}
    for key, value in {**_pool_kwargs(cfg), "max_new_tokens": cfg.max_new_tokens}.items():
        if key in env and env[key] != value:
            notes.append(f"{path}: trained with {key}={env[key]!r}, evaluated with {key}={value!r} like every agent.")
    tb = tensorboard or _find_tensorboard(Path(path), checkpoint.meta.config.get("tensorboard_log"))
    trainer = (
        "tilt" if checkpoint.meta.config.get("backend") == "tilt" else checkpoint.meta.algo
    )  # a tilt proxy is PPO's actor, fitted otherwise
    return f"{trainer} proxy ({Path(path).name})", checkpoint.model, env_kw, tb


def _find_tensorboard(path: Path, logged: str | None) -> str | None:
    for candidate in (Path(logged) if logged else None, path.parent / f"{path.name}-tb"):
        if candidate is not None and candidate.expanduser().is_dir():
            return str(candidate)
    return None


def _param_count(agent: Any, lm: FrozenLM) -> int:
    agent = getattr(agent, "base_agent", agent)  # a λ-power proxy trains nothing of its own: count the proxy it wraps
    own = getattr(agent, "trainable_parameters", None)  # a value guide: its head's
    if own is not None:
        return int(own)
    if getattr(agent, "policy", None) is None:
        return 0
    from agents.policies import param_report

    return param_report(agent, lm.num_parameters).proxy


def eval_proxy(
    lm: FrozenLM,
    name: str,
    agent: Any,
    env_kw: dict[str, Any],
    tensorboard: str | None,
    prompts: list[str],
    reward_fn: RewardFn,
    cfg: BenchConfig,
    tick: Ticker,
    *,
    deterministic: bool = True,
) -> AgentEval:
    """Generate with a proxy (or a baseline agent) through the env, then its exact KL along each response.

    ``deterministic``: the proxy acts by argmax (accept probabilities 0 or 1 in the KL) or samples
    its actions (its own accept probabilities).
    """
    import torch

    from agents.generate import ProxyGenerator

    start = time.perf_counter()
    gen = ProxyGenerator(
        lm,
        agent,
        batch_size=cfg.batch_size,
        deterministic=deterministic,
        seed=cfg.seed,
        max_new_tokens=cfg.max_new_tokens,
        **_pool_kwargs(cfg),
        **env_kw,
    )
    generations = []
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)  # stochastic SB3 policies (deterministic=False) sample from torch's RNG
        for s in range(0, len(prompts), cfg.batch_size):
            generations += gen.generate(prompts[s : s + cfg.batch_size])
            tick(len(prompts[s : s + cfg.batch_size]), f"{name}: generate")
    texts = [g.text for g in generations]
    rewards = score(reward_fn, prompts, texts)
    wall = time.perf_counter() - start
    accept = accept_model(agent, deterministic)
    kind = "monte carlo (rank-dependent proxy)" if env_kw.get("observation") == "candidate_stats" else "exact"
    trajs = []
    for prompt, g in zip(prompts, generations):
        trajs.append(
            trajectory(
                lm,
                lm.encode_prompt(prompt),
                g.token_ids,
                accept,
                seed=cfg.seed,
                **_pool_kwargs(cfg),
                **{k: v for k, v in env_kw.items() if k != "max_new_tokens"},
            )
        )
        tick(1, f"{name}: KL")
    return AgentEval(
        name,
        "proxy",
        rewards,
        [g.token_ids for g in generations],
        np.array([g.rejections / max(g.decisions, 1) for g in generations]),
        np.array([t.nll for t in trajs]),
        np.array([t.kl for t in trajs]),
        np.array([t.kl_untruncated for t in trajs]),
        np.array([g.decisions + g.forced_commits for g in generations], dtype=float),
        wall,
        trainable_params=_param_count(agent, lm),
        kl_method=kind if accept is not None else "n/a (recurrent policy)",
        tensorboard_dir=tensorboard,
        train_wall_s=_tb_wall(tensorboard),
        texts=texts,
    )


def _tb_wall(tensorboard: str | None) -> float:
    return float("nan") if tensorboard is None else train_wall(tensorboard)


def train_wall(logdir: str | Path) -> float:
    """Seconds of training a TensorBoard folder logged: each event file's span (one process's), summed.

    One span over every file would also count the hours between a stopped attempt and the run that saved the
    checkpoint (both write into the same folder). NaN when nothing was logged.
    """
    from agents.eval.report import scalar_series

    spans = []
    for file in sorted(Path(logdir).expanduser().rglob("events.out.tfevents.*")):
        times = [t for series in scalar_series(file).values() for t, _, _ in series]
        if times:
            spans.append(max(times) - min(times))
    return float(sum(spans)) if spans else float("nan")


def eval_best_of_n(
    lm: FrozenLM, prompts: list[str], reward_fn: RewardFn, cfg: BenchConfig, tick: Ticker
) -> list[AgentEval]:
    """Best-of-N for every N of ``cfg.n`` from one set of ``max(N) + bon_reference`` samples per prompt.

    BoN-N takes the best of the first N samples (nested sets: one sampling pass serves every N);
    the last ``bon_reference`` samples are the reference of the empirical KL. Wall time per N is
    apportioned: N samples' share of the sampling and scoring time. Forwards count all N samples' tokens.
    """

    top, ref = max(cfg.n), cfg.bon_reference
    start = time.perf_counter()
    samples: list[list[list[int]]] = []
    nlls, ratios = [], []
    step = max(1, 8 * cfg.batch_size // (top + ref))  # prompts per call: about 8 * batch_size rows
    for s in range(0, len(prompts), step):
        chunk = prompts[s : s + step]
        drawn = sample(
            lm,
            chunk,
            top + ref,
            max_new_tokens=cfg.max_new_tokens,
            seed=cfg.seed + s,
            batch_size=step,
            **_pool_kwargs(cfg),
        )
        samples += drawn.ids
        nlls.append(drawn.nll)
        ratios.append(drawn.log_ratio)
        tick(len(chunk), "best-of-N: sample")
    nll_all, ratio_all = np.concatenate(nlls), np.concatenate(ratios)  # (P, S) from the sampling pass's own logits
    texts = [[lm.decode(x) for x in row] for row in samples]
    flat = score(reward_fn, [p for p, row in zip(prompts, texts) for _ in row], [t for row in texts for t in row])
    rewards = flat.reshape(len(prompts), top + ref)  # (P, S)
    per_sample = (time.perf_counter() - start) / (top + ref)
    best = {n: rewards[:, :n].argmax(1) for n in cfg.n}  # ties: the first
    chosen = {n: [samples[i][int(best[n][i])] for i in range(len(prompts))] for n in cfg.n}
    out = []
    rows = np.arange(len(prompts))
    for n in sorted(cfg.n):
        r_best = rewards[rows, best[n]]
        forwards = np.array([sum(len(x) for x in row[:n]) for row in samples], dtype=float)
        kl = bon_kl_empirical(r_best, rewards[:, top:], n)
        # KL(π || p) = KL(π || q) + E_π[log q/p]: the same reference as the fine-tuned models' KL
        kl_untruncated = kl + ratio_all[rows, best[n]]
        out.append(
            AgentEval(
                f"best-of-{n}",
                "best-of-n",
                r_best,
                chosen[n],
                np.zeros(len(prompts)),
                nll_all[rows, best[n]],
                kl,
                kl_untruncated,
                forwards,
                per_sample * n,
                kl_method="estimate: log (π/q)(y*) from the reward CDF",
                kl_bound=bon_kl_bound(n),
                texts=[texts[i][int(best[n][i])] for i in range(len(prompts))],
            )
        )
    tick(len(prompts), "best-of-N: score and KL")
    return out


def eval_finetuned(
    lm: FrozenLM, path: str, prompts: list[str], reward_fn: RewardFn, cfg: BenchConfig, tick: Ticker
) -> AgentEval:
    """A fully fine-tuned LLM folder: one sampled response per prompt, scored against the frozen LLM."""
    from proxy_env.engine.models import as_frozen_lm

    tuned = as_frozen_lm(str(Path(path).expanduser()), device=str(lm.device))
    if tuned.vocab_size != lm.vocab_size:
        raise ConfigError(
            f"finetuned={path!r} has a vocabulary of {tuned.vocab_size} tokens, the frozen LLM "
            f"{lm.vocab_size}; pass a model fine-tuned from the frozen LLM ({lm.name!r})."
        )
    meta = read_finetune_meta(path)
    start = time.perf_counter()
    ids: list[list[int]] = []
    for s in range(0, len(prompts), cfg.batch_size):
        chunk = prompts[s : s + cfg.batch_size]
        ids += [
            row[0]
            for row in sample_ids(
                tuned,
                chunk,
                1,
                max_new_tokens=cfg.max_new_tokens,
                seed=cfg.seed + s,
                batch_size=cfg.batch_size,
                **_pool_kwargs(cfg),
            )
        ]
        tick(len(chunk), f"{Path(path).name}: generate")
    texts = [lm.decode(x) for x in ids]
    rewards = score(reward_fn, prompts, texts)
    wall = time.perf_counter() - start
    trajs: list[Trajectory] = []
    for prompt, x in zip(prompts, ids):
        trajs.append(finetuned_trajectory(tuned, lm, lm.encode_prompt(prompt), x, **_pool_kwargs(cfg)))
        tick(1, f"{Path(path).name}: KL")
    tb = meta.get("tensorboard_dir")  # relative paths are relative to the model folder
    tb = str(Path(path).expanduser() / tb) if isinstance(tb, str) else None
    curve, point = meta.get("curve"), meta.get("point")  # how the figure draws it (finetune.json's curve and point)
    return AgentEval(
        f"fine-tuned ({Path(path).name})",
        "finetune",
        rewards,
        ids,
        np.zeros(len(prompts)),
        np.array([t.nll for t in trajs]),
        np.array([t.kl for t in trajs]),
        np.array([t.kl_untruncated for t in trajs]),
        np.array([len(x) for x in ids], dtype=float),
        wall,
        trainable_params=int(meta.get("trainable_params", tuned.num_parameters)),
        kl_method="vs untruncated LLM (footnote)",
        train_wall_s=float(meta.get("wall_s", float("nan"))),
        tensorboard_dir=tb if tb is not None and Path(tb).is_dir() else None,
        texts=texts,
        curve=curve if isinstance(curve, str) else None,
        point=point if isinstance(point, str) else None,
    )


def value_guides(head: str, lm: FrozenLM, cfg: BenchConfig) -> list[tuple[str, Any, dict[str, Any], str]]:
    """(name, agent, env settings, what sets it apart from the head's other rows) of the value head in folder
    ``head`` as a guide for each rule and N of ``cfg``."""
    from agents.value.guide import value_guide
    from agents.value.head import load_value_head

    loaded = load_value_head(head, lm, hidden_layer=-1)
    env_kw = {"observation": "prefix", "hidden_layer": -1}
    return [
        (
            f"value guide ({Path(head).name}) [N={n}{'' if rule == 'distribution' else ', ' + rule}]",
            value_guide(loaded, lm, n, seed=cfg.seed, rule=rule, **_pool_kwargs(cfg)),
            env_kw,
            f"value guide {rule} N={n!r}",
        )
        for rule in cfg.value_rules
        for n in cfg.value_n
    ]
