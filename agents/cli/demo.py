"""``proxy-rlhf demo``: train a KL-regularised proxy to a fixed budget, then put it beside the LLM and best-of-N.

What ``make demo`` runs. ``--recipe tilt`` (the default): the exact objective of each position over the
LLM's own samples (:mod:`agents.tilt`); ``--recipe ppo``: PPO with the per-token KL penalty and reward shaping.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

DEMO_BETA = {"tilt": 0.2, "ppo": 0.05}  # --kl-coef when not given, per --recipe
DEMO_DECISIONS = 4096
# Passes over the 4,096 positions: with 6 the proxy underfits and its gain's CI sat at zero; 12 cost seconds (BENCHMARKS.md).
DEMO_TILT_EPOCHS = 12


def train_demo(args: argparse.Namespace) -> tuple[Any, Any]:
    """Train a KL-regularised proxy to ``--decisions``; return the loaded LLM and the :class:`~agents.training.TrainResult`."""
    from dataclasses import replace

    from agents.saving.checkpoint import check_save_dir
    from agents.tilt.backend import TiltConfig, train_tilt
    from agents.train import SB3Config, train
    from agents.training import resolve_lm
    from proxy_env.config import EnvConfig
    from proxy_env.errors import ConfigError

    check_save_dir(args.out, arg="--out")
    for name, low in (("decisions", 1), ("eval_prompts", 2), ("show", 0), ("n_epochs", 1), ("tilt_epochs", 1)):
        if getattr(args, name) < low:
            raise ConfigError(f"--{name.replace('_', '-')}={getattr(args, name)} must be >= {low}.")
    beta = args.kl_coef if args.kl_coef is not None else DEMO_BETA[args.recipe]
    # None means the recipe's default; 0 or a negative value is refused by the config's validation, not replaced
    args.num_envs = {"tilt": 32, "ppo": 16}[args.recipe] if args.num_envs is None else args.num_envs
    lr = {"tilt": 3e-3, "ppo": 1e-3}[args.recipe] if args.learning_rate is None else args.learning_rate
    env = EnvConfig(model=args.model, max_new_tokens=args.max_new_tokens, observation="prefix", kl_coef=beta)
    common = dict(
        num_envs=args.num_envs,
        total_timesteps=args.decisions,
        seed=args.seed,
        save_dir=args.out,
        progress_bar=not args.no_progress_bar,
    )
    if args.recipe == "tilt":
        cfg: SB3Config | TiltConfig = TiltConfig(
            env=env, **common, learning_rate=lr, batch_size=64, tilt_epochs=args.tilt_epochs
        )  # small batches: enough Adam steps on 4k decisions
        what = (
            f"the tilt recipe: {args.decisions:,} decisions of the LLM's own sampler on {args.num_envs} envs, every candidate's "
            f"reward change scored, then {args.tilt_epochs} epochs fitting the proxy to q·exp(Δ/β), β={beta:g}"
        )
    else:
        cfg = SB3Config(
            env=replace(env, reward_shaping=True, forced_steps=args.forced_steps),
            **common,
            eval_prompts="",
            init_accept_prob=args.init_accept_prob,
            n_steps=64,
            batch_size=256,
            learning_rate=lr,
            algo_kwargs={"n_epochs": args.n_epochs, "gae_lambda": args.gae_lambda, "ent_coef": 0.0},
        )
        what = (
            f"PPO (observation 'prefix', potential-based reward shaping, KL penalty β={beta:g}) for {args.decisions:,} decisions "
            f"on {args.num_envs} envs"
        )
    cfg.validate()  # before the model loads: a bad --out or --num-envs fails in a second, not after loading
    print(f"loading {args.model!r} (default: SmolLM2-135M-Instruct), VADER reward, chatterbot prompts...", flush=True)
    start = time.perf_counter()
    lm = resolve_lm(args.model, None)
    print(f"loaded in {time.perf_counter() - start:.0f} s; training with {what} ...", flush=True)
    start = time.perf_counter()
    result = train_tilt(cfg, model=lm) if isinstance(cfg, TiltConfig) else train(cfg, model=lm)
    print(
        f"trained {result.model.num_timesteps:,} decisions in {time.perf_counter() - start:.0f} s; proxy "
        f"{result.params.proxy:,} trainable parameters = {100 * result.params.ratio:.3f}% of the LLM's {result.params.llm:,}; "
        f"checkpoint {result.checkpoint}"
    )
    return lm, result


def compare(lm: Any, proxy: Any, args: argparse.Namespace) -> int:
    """Always-accept, best-of-2, best-of-4 and the proxy (sampling its actions) on the same held-out prompts."""
    from agents.baselines import AlwaysAccept
    from agents.eval.compare import mean_ci, paired_gain
    from agents.eval.results import BenchConfig, Ticker
    from agents.eval.runners import eval_best_of_n, eval_proxy
    from proxy_env.prompts import load_prompts
    from proxy_env.rewards import resolve_reward

    prompts = load_prompts("default-eval")[: args.eval_prompts]
    cfg = BenchConfig(
        n=(2, 4), bon_reference=4, max_new_tokens=args.max_new_tokens, seed=args.seed, batch_size=len(prompts)
    )
    reward_fn = resolve_reward("default")
    print(f"evaluating on {len(prompts)} held-out prompts (same prompts and seeds for every agent) ...", flush=True)
    tick = Ticker(None, len(prompts))  # counts prompts; the demo prints its own stage times

    def timed(what: str, run: Any) -> Any:
        start = time.perf_counter()
        out = run()
        print(f"  {what}: {time.perf_counter() - start:.0f} s", flush=True)
        return out

    base = timed(
        "always-accept (generate, score, exact KL)",
        lambda: eval_proxy(lm, "always-accept", AlwaysAccept(), {}, None, prompts, reward_fn, cfg, tick),
    )
    bon = timed(
        f"best-of-2 and best-of-4 ({4 + cfg.bon_reference} samples per prompt, {cfg.bon_reference} of them the KL's reference)",
        lambda: eval_best_of_n(lm, prompts, reward_fn, cfg, tick),
    )
    tuned = timed(
        "the proxy (generate, score, exact KL)",
        lambda: eval_proxy(
            lm,
            f"{args.recipe} proxy (sampled actions)",
            proxy,
            {"observation": "prefix"},
            None,
            prompts,
            reward_fn,
            cfg,
            tick,
            deterministic=False,
        ),
    )
    rows = [base, *bon, tuned]
    print(
        "\n| agent | reward [95% CI] | gain vs always-accept, paired [95% CI] | win rate | KL from the LLM's sampler (nats) |"
    )
    print("|---|---|---|---|---|")
    for row in rows:
        m, lo, hi = mean_ci(row.rewards)
        gain = win = "—"
        if row is not base:
            d, dlo, dhi, w = paired_gain(row.rewards, base.rewards)
            gain, win = f"{d:+.3f} [{dlo:+.3f}, {dhi:+.3f}]", f"{w:.2f}"
        k, klo, khi = mean_ci(row.kl)
        kl = f"{k:.3f} [{klo:.3f}, {khi:.3f}]" + (
            f" (estimate; bound {row.kl_bound:.3f})" if row.kind == "best-of-n" else " (exact)"
        )
        print(f"| {row.name} | {m:+.3f} [{lo:+.3f}, {hi:+.3f}] | {gain} | {win} | {kl} |")
    proxy_row = rows[-1]
    order = sorted(range(len(prompts)), key=lambda i: proxy_row.rewards[i] - base.rewards[i], reverse=True)
    for i in order[: args.show]:
        print(
            f"\nPROMPT: {prompts[i]}\n  LLM   ({base.rewards[i]:+.2f}): {base.texts[i]}\n"
            f"  proxy ({proxy_row.rewards[i]:+.2f}): {proxy_row.texts[i]}"
        )
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The demo's flags on ``parser`` (returned, for ``set_defaults``)."""
    parser.add_argument("--model", default="default", help="frozen LLM ('default', 'tiny', a hub id or a path)")
    parser.add_argument(
        "--recipe",
        choices=("tilt", "ppo"),
        default="tilt",
        help="tilt: fit the exact KL-regularised objective of each position (agents/tilt.py); ppo: PPO with the KL penalty",
    )
    parser.add_argument("--decisions", type=int, default=DEMO_DECISIONS, help="training budget in proxy decisions")
    parser.add_argument(
        "--kl-coef",
        type=float,
        default=None,
        help=f"β of the KL penalty (default: {DEMO_BETA['tilt']} with --recipe tilt, {DEMO_BETA['ppo']} with ppo)",
    )
    parser.add_argument(
        "--tilt-epochs", type=int, default=DEMO_TILT_EPOCHS, help="--recipe tilt: passes over the collected positions"
    )
    parser.add_argument(
        "--init-accept-prob", type=float, default=0.9, help="--recipe ppo: the proxy starts near the unsteered LLM"
    )
    parser.add_argument(
        "--learning-rate", type=float, default=None, help="learning rate (default: 3e-3 tilt, 1e-3 ppo)"
    )
    parser.add_argument("--n-epochs", type=int, default=4, help="--recipe ppo: PPO epochs per rollout")
    parser.add_argument(
        "--gae-lambda",
        type=float,
        default=0.0,
        help="--recipe ppo: GAE λ (0 credits each decision with its shaped reward plus the value of where it leads)",
    )
    parser.add_argument("--num-envs", type=int, default=None, help="envs run in parallel (default: 32 tilt, 16 ppo)")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="response budget")
    parser.add_argument("--eval-prompts", type=int, default=48, help="held-out prompts to compare on")
    parser.add_argument("--show", type=int, default=3, help="side-by-side responses to print")
    parser.add_argument("--out", default="runs/demo", help="checkpoint folder")
    parser.add_argument("--no-progress-bar", action="store_true", help="no progress bar")
    parser.add_argument(
        "--forced-steps",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="offer forced candidates as steps (one LLM forward per step: faster with many envs)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed")
    return parser
