"""The ``proxy-rlhf`` command."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def _demo(args: argparse.Namespace) -> int:
    import gymnasium as gym
    import numpy as np

    import proxy_env

    print(f"loading the embedded default (SmolLM2-135M-Instruct, VADER reward, chatterbot prompts)...", flush=True)
    venv = gym.make_vec(proxy_env.ENV_ID, num_envs=args.num_envs, vectorization_mode="vector_entry_point",
                        prompts="default-eval", max_new_tokens=args.max_new_tokens)
    venv.reset(seed=args.seed)
    rng = np.random.default_rng(args.seed)
    done = 0
    while done < args.episodes:
        actions = (rng.random(args.num_envs) > args.reject_prob).astype(np.int64)
        _, _, terminated, truncated, info = venv.step(actions)
        for i in np.flatnonzero(terminated | truncated):
            final = info["final_info"]
            print(f"\nPROMPT: {final['prompt'][i]}\nRESPONSE: {final['response'][i]}\n"
                  f"reward={final['reward_raw'][i]:+.3f} decisions={final['decisions'][i]} rejections={final['num_rejections'][i]}")
            done += 1
    venv.close()
    return 0


def _optional(convert: Any) -> Any:
    def parse(text: str) -> Any:
        return None if text.lower() == "none" else convert(text)

    return parse


def _number_or_text(text: str) -> Any:
    """``--reward-baseline``: None, a float, or a name such as 'reference'."""
    if text.lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        return text


def _json_object(text: str) -> dict[str, Any]:
    """``--algo-kwargs``: a JSON object such as '{"n_epochs": 4}'."""
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError(text)
    return value


_json_object.__name__ = "JSON object"  # argparse names the converter in its error message

_CONVERTERS: dict[str, Any] = {
    "str": str, "int": int, "float": float,
    "str | None": _optional(str), "int | None": _optional(int), "float | None": _optional(float),
    "float | str | None": _number_or_text, "dict[str, Any]": _json_object,
}


def _add_train_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per :class:`agents.train.TrainConfig` field, with its help text and default."""
    from agents.train import TrainConfig, config_fields

    defaults = TrainConfig()
    for f in config_fields():
        flag, default, help_text = f"--{f.name.replace('_', '-')}", getattr(defaults, f.name), f.metadata.get("help", "")
        if f.name == "progress_bar":
            default = True  # the CLI shows a bar; library calls do not print
        if f.type == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        elif f.type.startswith("tuple[int"):
            parser.add_argument(flag, type=int, nargs="+", default=list(default), metavar="N", help=f"{help_text} (default: {default})")
        else:
            parser.add_argument(flag, type=_CONVERTERS[f.type], default=default, help=f"{help_text} (default: {default!r})")


def _train(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from agents.train import TrainConfig, train

    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig)}
    values["hidden"] = tuple(values["hidden"])
    result = train(TrainConfig(**values))
    print(result.params)
    for step, evaluation in result.evaluations:
        print(f"eval @ {step}: reward {evaluation.mean_reward:+.3f}  rejection rate {evaluation.rejection_rate:.3f}  "
              f"length {evaluation.response_length:.1f}")
    if result.checkpoint is not None:
        print(f"checkpoint: {result.checkpoint}")
    return 0


def _generate(args: argparse.Namespace) -> int:
    from agents.generate import ProxyGenerator

    overrides = {"max_new_tokens": args.max_new_tokens} if args.max_new_tokens is not None else {}
    generator = ProxyGenerator.from_checkpoint(args.checkpoint, model=args.model, device=args.device, batch_size=args.batch_size,
                                               deterministic=not args.sample, seed=args.seed, **overrides)
    for g in generator.generate(args.prompts):
        print(f"\nPROMPT: {g.prompt}\nRESPONSE: {g.text}\ndecisions={g.decisions} rejections={g.rejections}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="proxy-rlhf", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run a few episodes of the default environment and print them")
    demo.add_argument("--episodes", type=int, default=4, help="episodes to print")
    demo.add_argument("--num-envs", type=int, default=4, help="envs run in parallel")
    demo.add_argument("--max-new-tokens", type=int, default=32, help="response budget")
    demo.add_argument("--reject-prob", type=float, default=0.2, help="probability that the random proxy rejects")
    demo.add_argument("--seed", type=int, default=0, help="seed")
    demo.set_defaults(func=_demo)
    train = sub.add_parser("train", help="train a proxy with an SB3 algorithm; checkpoints and TensorBoard logs")
    _add_train_flags(train)
    train.set_defaults(func=_train)
    gen = sub.add_parser("generate", help="generate aligned responses with a trained proxy checkpoint")
    gen.add_argument("prompts", nargs="+", metavar="PROMPT", help="prompts to answer")
    gen.add_argument("--checkpoint", required=True, help="checkpoint folder (proxy.zip + meta.json)")
    gen.add_argument("--model", default=None, help="frozen LLM override ('tiny', a hub id or path; default: the checkpoint's)")
    gen.add_argument("--max-new-tokens", type=int, default=None, help="response budget (default: the checkpoint's)")
    gen.add_argument("--batch-size", type=int, default=16, help="prompts generated at once")
    gen.add_argument("--sample", action="store_true", help="sample the proxy's actions instead of taking the most likely")
    gen.add_argument("--seed", type=int, default=0, help="seed of the candidate order")
    gen.add_argument("--device", default="auto", help="torch device of the proxy policy")
    gen.set_defaults(func=_generate)
    args = parser.parse_args(argv)
    from proxy_env.errors import ProxyEnvError

    try:
        return int(args.func(args))
    except ProxyEnvError as exc:  # a user error: the message says what to fix, a traceback adds nothing
        print(f"proxy-rlhf {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
