"""The ``proxy-rlhf`` command.

Every error a user can cause prints one line (``proxy-rlhf <command>: error: ...``) naming the
argument or file and the fix, and exits with code 2; ``--debug`` shows the traceback instead.
Training stopped by Ctrl-C or SIGTERM still saves its checkpoint and exits with 130 or 143.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

from agents.cli import demo
from agents.cli.flags import add_config_flags, config_from_args, flag_names

# modules that define ``add_subcommands(subparsers)``: `bench`, `prefs` and `rm`, `finetune`, `export`, `leaderboard`
_SUBCOMMAND_MODULES = (
    "agents.cli.bench",
    "agents.cli.feedback",
    "agents.cli.finetune",
    "agents.cli.export",
    "agents.cli.leaderboard",
    "agents.cli.value",
)


def _demo(args: argparse.Namespace) -> int:
    """``proxy-rlhf demo`` (:mod:`agents.cli.demo`): train to a fixed budget, then compare on held-out prompts."""
    lm, result = demo.train_demo(args)
    if result.interrupted:
        return _interrupted("demo", result)
    return demo.compare(lm, result.model, args)


def _train(args: argparse.Namespace) -> int:
    cfg = config_from_args(backend_config(args.backend), args)
    if args.backend == "tilt":
        from agents.tilt.backend import train_tilt

        result = train_tilt(cfg)
    elif args.backend == "rllib":
        from agents.rllib.train import train_rllib

        result = train_rllib(cfg)
    elif args.backend == "tianshou":
        from agents.tianshou_backend import train_tianshou

        result = train_tianshou(cfg)
    elif args.backend == "torch":
        from agents.torch_ppo import train_torch_ppo

        result = train_torch_ppo(cfg)
    else:
        from agents.train import train

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


# --backend -> (module, its config class): each backend's flags are generated from its own config
BACKENDS = {
    "sb3": ("agents.train", "SB3Config"),
    "tilt": ("agents.tilt.backend", "TiltConfig"),
    "rllib": ("agents.rllib.backend", "RLlibConfig"),
    "tianshou": ("agents.tianshou_backend", "TianshouConfig"),
    "torch": ("agents.torch_ppo", "TorchPPOConfig"),
}


def backend_config(name: str) -> Any:
    """The config class of ``--backend name`` (imported only when that backend is asked for)."""
    module, cls = BACKENDS[name]
    return getattr(importlib.import_module(module), cls)


def _chosen_backend(argv: list[str]) -> str:
    """``--backend X`` (or ``--backend=X``) of a ``train`` command line; sb3 when absent or not a backend."""
    for i, token in enumerate(argv):
        value = token.split("=", 1)[1] if token.startswith("--backend=") else None
        if token == "--backend" and i + 1 < len(argv):
            value = argv[i + 1]
        if value in BACKENDS:
            return value
    return "sb3"


def _configs() -> dict[str, Any]:
    return {name: backend_config(name) for name in BACKENDS}


def _other_backend_flags(unknown: list[str], backend: str) -> str | None:
    """A one-line error when ``unknown`` holds flags of another backend (``--tilt-epochs`` without ``--backend tilt``)."""
    flags = {name: flag_names(cfg, skip=cfg.refused_env_settings) for name, cfg in _configs().items()}
    found = [t for t in dict.fromkeys(t.split("=", 1)[0] for t in unknown) if any(t in f for f in flags.values())]
    if not found:
        return None
    owners = [name for name in BACKENDS if name != backend and all(t in flags[name] for t in found)]
    if not owners:
        return f"{', '.join(found)} belong to different backends; pass one --backend and its flags."
    return f"{', '.join(found)} apply to --backend {' or '.join(owners)} only; add --backend {owners[0]} or drop them."


def _interrupted(command: str, result: Any) -> int:
    import signal

    where = f"checkpoint saved to {result.checkpoint}" if result.checkpoint is not None else "nothing saved"
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
    demo.add_arguments(
        sub.add_parser(
            "demo", help="train a KL-regularised proxy to a fixed budget, then compare it with the LLM and best-of-N"
        )
    ).set_defaults(func=_demo)
    train = sub.add_parser(
        "train", help="train a proxy (--backend sb3, tilt, rllib, tianshou or torch); checkpoints and TensorBoard logs"
    )
    train.add_argument(
        "--backend",
        choices=tuple(BACKENDS),
        default="sb3",
        help="sb3 (any SB3 algorithm, one process), tilt (the exact KL-regularised objective of each position over "
        "the LLM's own samples: needs --observation prefix and --kl-coef β > 0; see agents/tilt/), rllib (Ray "
        "RLlib env runners, GPUs, nodes; pip install -e '.[rllib]'), tianshou (tianshou 2.x PPO on the batched "
        "env, one process; pip install -e '.[tianshou]'), or torch (our CleanRL-style PPO whose rollouts stay on "
        "the device as torch tensors). Each shows its own flags: "
        "proxy-rlhf train --backend tilt --help",
    )
    argv = sys.argv[1:] if argv is None else argv
    backend = _chosen_backend(argv) if argv[:1] == ["train"] else "sb3"
    # the CLI shows a bar; library calls do not print
    cfg_cls = backend_config(backend)
    add_config_flags(train, cfg_cls, defaults={"progress_bar": True}, skip=cfg_cls.refused_env_settings)
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
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        hint = _other_backend_flags(unknown, backend) if args.command == "train" else None
        if hint is None:
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        print(f"proxy-rlhf train: error: {hint}", file=sys.stderr)
        return 2
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
