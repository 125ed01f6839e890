"""``proxy-rlhf bench``: every agent on the same held-out prompts and seeds; the reward–KL frontier.

Agents: always-accept (the unsteered LLM), random-reject, best-of-N for each N, trained proxy
checkpoints, and fully fine-tuned LLMs (plain Hugging Face folders, e.g. from ``agents.finetune``).
Each generates one response per prompt with the same pool (top-k, top-p, temperature), budget and
seeds; :func:`run_bench` returns per-agent metrics (:mod:`agents.eval.report` writes them out).

KL definitions (nats per response): proxies and baselines, the exact ``Σ_i KL(π_i || q_i)`` of the
steered sampler from the unsteered one (:mod:`agents.eval.kl`); best-of-N, the estimate
``log N + (N-1) log F̂`` and the bound ``log N - (N-1)/N`` (:mod:`agents.eval.metrics`); fine-tuned
models, ``Σ_i KL(π_ft,i || p_i)`` against the frozen LLM's untruncated distribution (footnoted).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

from agents.eval.cache import EvalCache, folder_fingerprint
from agents.eval.results import BenchConfig, BenchResult, Progress, Ticker, machine_description
from proxy_env.errors import ConfigError


def run_bench(
    cfg: BenchConfig, *, extra_agents: dict[str, Any] | None = None, lm: Any = None, progress: Progress | None = None
) -> BenchResult:
    """Evaluate every agent of ``cfg`` (plus ``extra_agents``, objects with ``predict``) on the same prompts.

    Args:
        cfg: the benchmark settings.
        extra_agents: more proxies by name (SB3 models or anything with ``predict``; an
            ``accept_prob(obs)`` method makes their exact KL computable).
        lm: the frozen LLM (a :class:`~proxy_env.engine.lm.FrozenLM`), default: loaded from ``cfg.model``.
        progress: called as ``progress(done, total, stage)`` as prompts are processed.
    """
    from agents.baselines import AlwaysAccept, PowerProxy, RandomReject
    from agents.eval.runners import eval_best_of_n, eval_finetuned, eval_proxy, load_proxy, value_guides
    from proxy_env.engine.models import as_frozen_lm
    from proxy_env.prompts import load_prompts
    from proxy_env.rewards import resolve_reward

    cfg = cfg.resolved()
    if cfg.frontier_from:
        from agents.eval.report import read_frontier

        read_frontier(cfg.frontier_from, None)  # an unreadable file fails now, not after the run
    start = time.perf_counter()
    prompts = load_prompts(cfg.prompts)
    if cfg.num_prompts is not None and cfg.num_prompts > len(prompts):
        raise ConfigError(
            f"num_prompts={cfg.num_prompts} but prompts={cfg.prompts!r} holds {len(prompts)}; "
            f"pass --num-prompts {len(prompts)} or fewer (or omit it for all)."
        )
    prompts = prompts[: cfg.num_prompts]
    lm = as_frozen_lm(cfg.model if lm is None else lm, device=cfg.device)
    reward_fn = resolve_reward(cfg.reward, device=lm.device)
    notes: list[str] = []
    # (name, agent, its env settings, TensorBoard dir, act by argmax)
    proxies: list[tuple[str, Any, dict[str, Any], str | None, bool]] = [
        ("always-accept", AlwaysAccept(), {}, None, True),
        (f"random-reject p={cfg.random_reject_p:g}", RandomReject(cfg.random_reject_p, seed=cfg.seed), {}, None, True),
    ]
    trained = [
        load_proxy(path, lm, cfg, cfg.tensorboard[i] if i < len(cfg.tensorboard) else None, notes)
        for i, path in enumerate(cfg.checkpoints)
    ]
    trained += [(name, agent, {}, None) for name, agent in (extra_agents or {}).items()]
    # what makes each row's evaluation what it is, for the cache (None: an extra agent, never cached)
    origin: list[str | None] = [
        f"{folder_fingerprint(p)}\n{tb}" for p, (*_, tb) in zip(cfg.checkpoints, trained, strict=False)
    ]
    origin += [None] * len(extra_agents or {})
    identities: list[str | None] = ["always-accept", f"random-reject p={cfg.random_reject_p!r}"]
    for mode in cfg.proxy_actions:
        suffix = f" [{mode}]" if len(cfg.proxy_actions) > 1 else ""
        proxies += [(name + suffix, agent, env_kw, tb, mode == "argmax") for name, agent, env_kw, tb in trained]
        identities += [None if o is None else f"{o}\n{mode}" for o in origin]
    for power in cfg.accept_powers:
        proxies += [
            (f"{name} [λ={power:g}]", PowerProxy(agent, power, seed=cfg.seed), env_kw, tb, False)
            for name, agent, env_kw, tb in trained
        ]
        identities += [None if o is None else f"{o}\nsample ** {power!r}" for o in origin]
    for head in cfg.value_heads:
        guides, fingerprint = value_guides(head, lm, cfg), folder_fingerprint(head)
        proxies += [(name, agent, env_kw, None, False) for name, agent, env_kw, _ in guides]
        identities += [f"{fingerprint}\n{which}" for *_, which in guides]
    units = len(prompts) * (2 * len(proxies) + 2 + 2 * len(cfg.finetuned))
    tick = Ticker(progress, units)
    cache = EvalCache(cfg.cache_dir, cfg, prompts, cfg.resume, lm) if cfg.cache_dir else None

    def cached(name: str, identity: str | None, units: int, compute: Callable[[], Any]) -> list[Any]:
        """``compute()`` (one evaluation or a list), through the cache when there is one."""

        def listed() -> list[Any]:
            result = compute()
            return result if isinstance(result, list) else [result]

        if cache is None:
            return listed()
        before = len(cache.reused)
        evals = cache.run(name, identity, listed)
        if len(cache.reused) > before:
            tick(units, f"{name}: read from {cfg.cache_dir}")
        return evals

    evals = []
    for (name, agent, env_kw, tb, argmax), identity in zip(proxies, identities, strict=True):
        evals += cached(
            name,
            identity,
            2 * len(prompts),
            partial(eval_proxy, lm, name, agent, env_kw, tb, prompts, reward_fn, cfg, tick, deterministic=argmax),
        )
        if (
            cfg.frontier_from and len(evals) == 1
        ):  # always-accept first: a frontier of another run fails now, not at the end
            from agents.eval.report import read_frontier, summarize

            read_frontier(cfg.frontier_from, summarize(evals))
    for name, *_ in proxies[:2]:
        next(e for e in evals if e.name == name).kind = "baseline"
    if cfg.n:
        bon = f"n={list(cfg.n)!r}"
        evals[2:2] = cached(
            "best-of-n", bon, 2 * len(prompts), lambda: eval_best_of_n(lm, prompts, reward_fn, cfg, tick)
        )
    if cfg.frontier_from:
        notes.append(
            f"best-of-N rows from {cfg.frontier_from} (an earlier run on the same prompts and seed; "
            "always-accept's rewards matched): their s/response are that run's."
        )
    for path in cfg.finetuned:
        evals += cached(
            f"finetuned {path}",
            folder_fingerprint(path),
            2 * len(prompts),
            partial(eval_finetuned, lm, path, prompts, reward_fn, cfg, tick),
        )
    if cache is not None and cache.reused:
        notes.append(
            f"{len(cache.reused)} evaluations read from {cfg.cache_dir} (kept by a stopped run with the same settings "
            f"and agents): {', '.join(cache.reused)}; their s/response are that run's."
        )
    return BenchResult(cfg, evals, prompts, time.perf_counter() - start, machine_description(lm), notes)
