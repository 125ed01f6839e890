"""The ``proxy-rlhf`` command.

Every error a user can cause prints one line (``proxy-rlhf <command>: error: ...``) naming the
argument or file and the fix, and exits with code 2; ``--debug`` shows the traceback instead.
Training stopped by Ctrl-C or SIGTERM still saves its checkpoint and exits with 130 or 143.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from typing import Any

from agents.cli.flags import add_config_flags, config_from_args

# modules that define ``add_subcommands(subparsers)``: `bench`, `prefs` and `rm`, `finetune`, `export`
_SUBCOMMAND_MODULES = ("agents.cli.bench", "agents.cli.feedback", "agents.cli.finetune", "agents.cli.export")
DEMO_BETA = {"tilt": 0.2, "ppo": 0.05}  # --kl-coef when not given, per --recipe
DEMO_DECISIONS = 4096
# Passes over the 4,096 positions: with 6 the proxy underfits and its gain's CI sat at zero; 12 cost seconds (BENCHMARKS.md).
DEMO_TILT_EPOCHS = 12


def _demo(args: argparse.Namespace) -> int:
    """Train a KL-regularised proxy to a fixed budget of decisions, then put it beside best-of-N on held-out prompts.

    ``--recipe tilt`` (the default): the exact objective of each position over the LLM's own samples
    (:mod:`agents.tilt`); ``--recipe ppo``: PPO with the per-token KL penalty and reward shaping.
    """
    from dataclasses import replace

    from agents.saving.checkpoint import check_save_dir
    from agents.train import TrainConfig, resolve_lm, train
    from proxy_env.config import EnvConfig
    from proxy_env.errors import ConfigError

    check_save_dir(args.out, arg="--out")
    for name, low in (("decisions", 1), ("eval_prompts", 2), ("show", 0), ("n_epochs", 1), ("tilt_epochs", 1)):
        if getattr(args, name) < low:
            raise ConfigError(f"--{name.replace('_', '-')}={getattr(args, name)} must be >= {low}.")
    beta = args.kl_coef if args.kl_coef is not None else DEMO_BETA[args.recipe]
    args.num_envs = args.num_envs or {"tilt": 32, "ppo": 16}[args.recipe]
    env = EnvConfig(model=args.model, max_new_tokens=args.max_new_tokens, observation="prefix", kl_coef=beta)
    common = dict(
        num_envs=args.num_envs,
        total_timesteps=args.decisions,
        seed=args.seed,
        eval_prompts="",
        save_dir=args.out,
        progress_bar=not args.no_progress_bar,
    )
    if args.recipe == "tilt":
        from agents.tilt import TiltConfig, check_tilt, train_tilt

        cfg = TrainConfig(
            env=env, **common, learning_rate=args.learning_rate or 3e-3, batch_size=64
        )  # small batches: enough Adam steps on 4k decisions
        tilt = TiltConfig(tilt_epochs=args.tilt_epochs)
        check_tilt(cfg, tilt)  # before the model loads: a bad --out or --num-envs fails in a second, not after loading
        what = (
            f"the tilt recipe: {args.decisions:,} decisions of the LLM's own sampler on {args.num_envs} envs, every candidate's "
            f"reward change scored, then {args.tilt_epochs} epochs fitting the proxy to q·exp(Δ/β), β={beta:g}"
        )
    else:
        cfg = TrainConfig(
            env=replace(env, reward_shaping=True, forced_steps=args.forced_steps),
            **common,
            init_accept_prob=args.init_accept_prob,
            n_steps=64,
            batch_size=256,
            learning_rate=args.learning_rate or 1e-3,
            algo_kwargs={"n_epochs": args.n_epochs, "gae_lambda": args.gae_lambda, "ent_coef": 0.0},
        )
        cfg.validate()
        what = (
            f"PPO (observation 'prefix', potential-based reward shaping, KL penalty β={beta:g}) for {args.decisions:,} decisions "
            f"on {args.num_envs} envs"
        )
    print(f"loading {args.model!r} (default: SmolLM2-135M-Instruct), VADER reward, chatterbot prompts...", flush=True)
    start = time.perf_counter()
    lm = resolve_lm(args.model, None)
    print(f"loaded in {time.perf_counter() - start:.0f} s; training with {what} ...", flush=True)
    start = time.perf_counter()
    result = train_tilt(cfg, tilt, model=lm) if args.recipe == "tilt" else train(cfg, model=lm)
    print(
        f"trained {result.model.num_timesteps:,} decisions in {time.perf_counter() - start:.0f} s; proxy "
        f"{result.params.proxy:,} trainable parameters = {100 * result.params.ratio:.3f}% of the LLM's {result.params.llm:,}; "
        f"checkpoint {result.checkpoint}"
    )
    if result.interrupted:
        return _interrupted("demo", result)
    return _demo_compare(lm, result.model, args)


def _demo_compare(lm: Any, proxy: Any, args: argparse.Namespace) -> int:
    """Always-accept, best-of-2, best-of-4 and the proxy (sampling its actions) on the same held-out prompts."""
    from agents.baselines import AlwaysAccept
    from agents.eval.compare import mean_ci, paired_gain
    from agents.eval.results import BenchConfig
    from agents.eval.runners import eval_best_of_n, eval_proxy
    from proxy_env.prompts import load_prompts
    from proxy_env.rewards import resolve_reward

    prompts = load_prompts("default-eval")[: args.eval_prompts]
    cfg = BenchConfig(
        n=(2, 4), bon_reference=4, max_new_tokens=args.max_new_tokens, seed=args.seed, batch_size=len(prompts)
    )
    reward_fn = resolve_reward("default")
    print(f"evaluating on {len(prompts)} held-out prompts (same prompts and seeds for every agent) ...", flush=True)
    tick = lambda n, stage: None  # noqa: E731

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


def _train(args: argparse.Namespace) -> int:
    from agents.train import TrainConfig, train

    cfg = config_from_args(TrainConfig, args)
    if args.backend == "tilt":
        from agents.tilt import TiltConfig, train_tilt

        _check_backend_flags(args, "tilt")
        result = train_tilt(cfg, config_from_args(TiltConfig, args))
    elif args.backend == "rllib":
        from agents.rllib.backend import RLlibConfig
        from agents.rllib.train import train_rllib

        _check_backend_flags(args, "rllib")
        result = train_rllib(cfg, config_from_args(RLlibConfig, args))
    else:
        _check_backend_flags(args, "sb3")
        result = train(cfg)
    if result.interrupted:
        return _interrupted("train", result)
    print(result.params)
    for step, evaluation in result.evaluations:
        print(
            f"eval @ {step}: reward {evaluation.mean_reward:+.3f}  rejection rate {evaluation.rejection_rate:.3f}  "
            f"length {evaluation.response_length:.1f}"
        )
    if result.checkpoint is not None:
        print(f"checkpoint: {result.checkpoint}")
    return 0


def _check_backend_flags(args: argparse.Namespace, backend: str) -> None:
    """A flag of another backend (``--num-env-runners`` with sb3, ``--tilt-epochs`` with rllib) is an error, not silently ignored."""
    from dataclasses import fields

    from agents.rllib.backend import RLlibConfig
    from agents.tilt import TiltConfig
    from proxy_env.errors import ConfigError

    for owner, config in (("rllib", RLlibConfig), ("tilt", TiltConfig)):
        if owner == backend:
            continue
        base = config()
        changed = [
            f"--{f.name.replace('_', '-')}" for f in fields(config) if getattr(args, f.name) != getattr(base, f.name)
        ]
        if changed:
            raise ConfigError(
                f"{', '.join(changed)} apply to --backend {owner} only; add --backend {owner} or drop them."
            )


def _interrupted(command: str, result: Any) -> int:
    import signal

    where = (
        f"checkpoint saved to {result.checkpoint}" if result.checkpoint is not None else "nothing saved (no --save-dir)"
    )
    print(
        f"proxy-rlhf {command}: {result.interrupted} received: stopped after {result.model.num_timesteps:,} decisions; {where}.",
        file=sys.stderr,
    )
    return 128 + int(signal.Signals[result.interrupted])


def _generate(args: argparse.Namespace) -> int:
    from agents.generate import ProxyGenerator
    from proxy_env.errors import ConfigError
    from proxy_env.vector.seeding import single_seed

    single_seed(args.seed, "--seed")
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens={args.max_new_tokens} must be >= 1 (or left out: the checkpoint's).")
    overrides = {"max_new_tokens": args.max_new_tokens} if args.max_new_tokens is not None else {}
    generator = ProxyGenerator.from_checkpoint(
        args.checkpoint,
        model=args.model,
        device=args.device,
        batch_size=args.batch_size,
        deterministic=not args.sample,
        seed=args.seed,
        trust=args.trust_checkpoint,
        **overrides,
    )
    for g in generator.generate(args.prompts):
        print(f"\nPROMPT: {g.prompt}\nRESPONSE: {g.text}\ndecisions={g.decisions} rejections={g.rejections}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the flag, the problem, ``--help``), not the whole usage text."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="proxy-rlhf", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo", help="train a KL-regularised proxy to a fixed budget, then compare it with the LLM and best-of-N"
    )
    demo.add_argument("--model", default="default", help="frozen LLM ('default', 'tiny', a hub id or a path)")
    demo.add_argument(
        "--recipe",
        choices=("tilt", "ppo"),
        default="tilt",
        help="tilt: fit the exact KL-regularised objective of each position (agents/tilt.py); ppo: PPO with the KL penalty",
    )
    demo.add_argument("--decisions", type=int, default=DEMO_DECISIONS, help="training budget in proxy decisions")
    demo.add_argument(
        "--kl-coef",
        type=float,
        default=None,
        help=f"β of the KL penalty (default: {DEMO_BETA['tilt']} with --recipe tilt, {DEMO_BETA['ppo']} with ppo)",
    )
    demo.add_argument(
        "--tilt-epochs", type=int, default=DEMO_TILT_EPOCHS, help="--recipe tilt: passes over the collected positions"
    )
    demo.add_argument(
        "--init-accept-prob", type=float, default=0.9, help="--recipe ppo: the proxy starts near the unsteered LLM"
    )
    demo.add_argument("--learning-rate", type=float, default=None, help="learning rate (default: 3e-3 tilt, 1e-3 ppo)")
    demo.add_argument("--n-epochs", type=int, default=4, help="--recipe ppo: PPO epochs per rollout")
    demo.add_argument(
        "--gae-lambda",
        type=float,
        default=0.0,
        help="--recipe ppo: GAE λ (0 credits each decision with its shaped reward plus the value of where it leads)",
    )
    demo.add_argument("--num-envs", type=int, default=None, help="envs run in parallel (default: 32 tilt, 16 ppo)")
    demo.add_argument("--max-new-tokens", type=int, default=32, help="response budget")
    demo.add_argument("--eval-prompts", type=int, default=48, help="held-out prompts to compare on")
    demo.add_argument("--show", type=int, default=3, help="side-by-side responses to print")
    demo.add_argument("--out", default="runs/demo", help="checkpoint folder")
    demo.add_argument("--no-progress-bar", action="store_true", help="no progress bar")
    demo.add_argument(
        "--forced-steps",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="offer forced candidates as steps (one LLM forward per step: faster with many envs)",
    )
    demo.add_argument("--seed", type=int, default=0, help="seed")
    demo.set_defaults(func=_demo)
    train = sub.add_parser("train", help="train a proxy with an SB3 algorithm; checkpoints and TensorBoard logs")
    from agents.train import TrainConfig

    add_config_flags(
        train, TrainConfig, defaults={"progress_bar": True}
    )  # the CLI shows a bar; library calls do not print
    from agents.rllib.backend import ALGOS as RLLIB_ALGOS
    from agents.rllib.backend import RLlibConfig

    train.add_argument(
        "--backend",
        choices=("sb3", "rllib", "tilt"),
        default="sb3",
        help=f"sb3 (one process), rllib (Ray RLlib env runners, GPUs, nodes; algo one of {list(RLLIB_ALGOS)}; "
        "pip install -e '.[rllib]'), or tilt (the exact KL-regularised objective of each position over the "
        "LLM's own samples: needs --observation prefix and --kl-coef β > 0; see agents/tilt.py)",
    )
    add_config_flags(train, RLlibConfig)
    from agents.tilt import TiltConfig

    add_config_flags(train, TiltConfig)
    train.set_defaults(func=_train)
    gen = sub.add_parser("generate", help="generate aligned responses with a trained proxy checkpoint")
    gen.add_argument("prompts", nargs="+", metavar="PROMPT", help="prompts to answer")
    gen.add_argument("--checkpoint", required=True, help="checkpoint folder (model.safetensors + proxy_config.json)")
    gen.add_argument(
        "--model", default=None, help="frozen LLM override ('tiny', a hub id or path; default: the checkpoint's)"
    )
    gen.add_argument("--max-new-tokens", type=int, default=None, help="response budget (default: the checkpoint's)")
    gen.add_argument("--batch-size", type=int, default=16, help="prompts generated at once")
    gen.add_argument(
        "--sample", action="store_true", help="sample the proxy's actions instead of taking the most likely"
    )
    gen.add_argument("--seed", type=int, default=0, help="seed of the candidate order")
    gen.add_argument("--device", default="auto", help="torch device of the proxy policy")
    gen.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="also load an SB3 proxy.zip checkpoint, whose loading unpickles Python objects and can run code",
    )
    gen.set_defaults(func=_generate)
    for module in _SUBCOMMAND_MODULES:  # each adds its own subcommands; heavy imports stay inside their handlers
        importlib.import_module(module).add_subcommands(sub)
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    _add_debug_flag(sub)
    args = parser.parse_args(argv)
    if args.debug:
        return int(args.func(args))
    try:
        return int(args.func(args))
    except Exception as exc:
        code, message = _explain(exc)
        print(f"proxy-rlhf {args.command}: error: {message}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        print(f"proxy-rlhf {args.command}: interrupted.", file=sys.stderr)
        return 130


def _add_debug_flag(sub: Any) -> None:
    """``--debug`` after the subcommand too (``proxy-rlhf train ... --debug``), on every subcommand and nested one."""
    for parser in set(sub.choices.values()):
        parser.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help="show the traceback of an error"
        )
        for action in parser._subparsers._group_actions if parser._subparsers else ():
            if isinstance(action, argparse._SubParsersAction):
                _add_debug_flag(action)


def _explain(exc: Exception) -> tuple[int, str]:
    """(exit code, one line) for an error: ours say what to fix; the usual others get a fix here."""
    from proxy_env.errors import ProxyEnvError

    if isinstance(exc, ProxyEnvError):  # a user error: the message says what to fix, a traceback adds nothing
        return 2, _one_line(str(exc))
    if isinstance(exc, OSError):
        name = f" {exc.filename!r}" if exc.filename else ""
        return 2, _one_line(
            f"{exc.strerror or exc}:{name}; check that the path exists and that you may read or write it."
        )
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return 2, "out of memory; lower --num-envs, --batch-size or --max-new-tokens."
    return 1, _one_line(
        f"unexpected {type(exc).__name__}: {exc} (a bug: rerun with --debug for the traceback and report it)"
    )


def _one_line(text: str) -> str:
    return " ".join(text.split())


if __name__ == "__main__":
    sys.exit(main())
