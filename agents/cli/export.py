"""``proxy-rlhf export``: a checkpoint as a pickle-free proxy folder with a model card, optionally pushed to the Hub."""

from __future__ import annotations

import json
from typing import Any

from proxy_env.errors import ConfigError


def _export(args: Any) -> int:
    lm = None
    if args.model is not None:
        from proxy_env.engine.models import as_frozen_lm

        lm = as_frozen_lm(args.model, device="cpu")
    env_kwargs = json.loads(args.env_kwargs) if args.env_kwargs else None
    if env_kwargs is not None and not isinstance(env_kwargs, dict):
        raise ConfigError(
            f'--env-kwargs={args.env_kwargs!r} must be a JSON object, e.g. \'{{"observation": "prefix"}}\'.'
        )
    from agents.saving.export import export, push_to_hub

    folder = export(
        args.checkpoint,
        args.out,
        trust=args.trust_checkpoint,
        bench=args.bench,
        lm=lm,
        algo=args.algo,
        env_kwargs=env_kwargs,
    )
    print(f"wrote {folder} ({', '.join(sorted(p.name for p in folder.iterdir()))})")
    if args.push_to_hub:
        files = push_to_hub(folder, args.push_to_hub, private=args.private)
        print(f"uploaded {', '.join(files)} to {args.push_to_hub}")
    return 0


def add_subcommands(sub: Any) -> None:
    """Add ``export`` to the ``proxy-rlhf`` parser."""
    p = sub.add_parser(
        "export", help="write a checkpoint as a pickle-free proxy folder with a model card (optionally to the Hub)"
    )
    p.add_argument("checkpoint", help="checkpoint folder, or an SB3 .zip (with --trust-checkpoint)")
    p.add_argument("out", help="the proxy folder to write")
    p.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="allow SB3 zips, whose loading unpickles Python objects and can run code",
    )
    p.add_argument("--bench", default=None, help="a `proxy-rlhf bench` results.csv to put in the model card")
    p.add_argument(
        "--model", default=None, help="the LLM, when the checkpoint records no fingerprint (default: its recorded name)"
    )
    p.add_argument("--algo", default="ppo", help="algorithm of a bare SB3 .zip (default: %(default)s)")
    p.add_argument("--env-kwargs", default=None, help="JSON env settings of a bare SB3 .zip (observation, top_k...)")
    p.add_argument(
        "--push-to-hub", default=None, metavar="REPO_ID", help="also upload the folder to this Hub model repo"
    )
    p.add_argument("--private", action="store_true", help="create the Hub repo private")
    p.set_defaults(func=_export)
