"""``proxy-rlhf prefs build`` and ``proxy-rlhf rm train|eval``: from feedback to a trained reward model.

proxy-rlhf prefs build --out runs/prefs.jsonl --source reward --reward vader --pairs-per-prompt 4
proxy-rlhf prefs build --out runs/judge.jsonl --source judge --judge-mode generate --num-prompts 64
proxy-rlhf prefs build --out runs/human.jsonl --source human --human labels.jsonl --ppl-quantile 0.9
proxy-rlhf rm train --pairs runs/prefs.jsonl --out runs/rm            # MiniLM encoder
proxy-rlhf train --reward runs/rm                                      # a proxy against the learned RM
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from proxy_env.config import EnvConfig


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _judge_template(path: str | None) -> str | None:
    """The text of ``--judge-template`` (None: the default template), read before any model loads."""
    if path is None:
        return None
    from pathlib import Path

    from proxy_env.errors import ConfigError

    try:
        return Path(path).expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"--judge-template {path!r} cannot be read ({exc.__class__.__name__}: {exc}); "
            "pass a UTF-8 text file with {prompt}, {response_1} and {response_2}."
        ) from exc


def _source(args: argparse.Namespace, lm: Any, template: str | None = None) -> Any:
    from feedback import RewardFeedback
    from proxy_env.rewards import resolve_reward
    from proxy_env.rewards.judge import LLMJudge

    if args.source == "reward":
        return RewardFeedback(resolve_reward(args.reward, lm=lm), tie_tolerance=args.tie_tolerance)
    from proxy_env.engine.models import as_frozen_lm

    judge_lm = lm if args.judge_model in (None, args.model) else as_frozen_lm(args.judge_model, device=args.device)
    kwargs: dict[str, Any] = {"template": template} if template is not None else {}
    return LLMJudge(judge_lm, mode=args.judge_mode, batch_size=args.judge_batch_size, seed=args.seed, **kwargs)


def _prefs_build(args: argparse.Namespace) -> int:
    from feedback import build_preferences, import_human, write_jsonl
    from proxy_env.config import check_pool
    from proxy_env.engine.models import as_frozen_lm
    from proxy_env.errors import ConfigError
    from proxy_env.folders import check_not_a_file
    from proxy_env.prompts import load_prompts

    if args.source == "human" and not args.human:
        raise ConfigError(
            "--source human needs --human FILE.jsonl (records with prompt/chosen/rejected or response_1/response_2/preferred)."
        )
    if args.num_prompts < 0:
        raise ConfigError(f"--num-prompts {args.num_prompts} must be >= 0 (0: all prompts; N: the first N).")
    template = _judge_template(args.judge_template) if args.source == "judge" else None
    # before the model loads and the sampling runs: a bad pool or --out used to fail after it, or write nothing
    check_pool(args.top_k, args.top_p, args.temperature)
    if Path(args.out).expanduser().is_dir():
        raise ConfigError(f"--out={args.out!r} is a folder; pass the path of a .jsonl file to write.")
    check_not_a_file(Path(args.out).expanduser().parent, arg="--out's folder")
    start = time.perf_counter()
    _log(f"loading {args.model!r} ...")
    lm = as_frozen_lm(args.model, device=args.device)
    if args.source == "human":
        result = import_human(args.human, lm, ppl_quantile=args.ppl_quantile, max_ppl=args.max_ppl)
    else:
        prompts = load_prompts(args.prompts)
        prompts = prompts[: args.num_prompts] if args.num_prompts else prompts
        source = _source(args, lm, template)
        _log(
            f"sampling {2 * args.pairs_per_prompt} responses for each of {len(prompts)} prompts, labelling with {source.name} ..."
        )
        result = build_preferences(
            lm,
            prompts,
            source,
            pairs_per_prompt=args.pairs_per_prompt,
            max_new_tokens=args.max_new_tokens,
            top_k=args.top_k,
            top_p=args.top_p,
            temperature=args.temperature,
            batch_size=args.batch_size,
            seed=args.seed,
            ppl_quantile=args.ppl_quantile,
            max_ppl=args.max_ppl,
            progress=lambda done, total: _log(f"  {done}/{total} prompts ({time.perf_counter() - start:.0f} s)"),
        )
    written = write_jsonl(args.out, result.pairs)
    summary = {
        **asdict(result.summary),
        "written": written,
        "out": str(args.out),
        "seconds_total": time.perf_counter() - start,
    }
    print(json.dumps(summary, indent=2))
    return 0


def _encoder(args: argparse.Namespace) -> Any:
    from proxy_env.errors import ConfigError
    from proxy_env.rewards.encoders import LMEncoder, SentenceEncoder

    if args.encoder == "lm":
        from proxy_env.engine.models import as_frozen_lm

        if args.pooling != "mean" or args.layers != [-1] or args.input_format != "response":
            raise ConfigError(
                f"--pooling {args.pooling} / --layers {' '.join(map(str, args.layers))} / --input-format {args.input_format} "
                "apply to sentence encoders; --encoder lm averages the LLM's --layer over the response. Drop them."
            )

        return LMEncoder(as_frozen_lm(args.model, device=args.device), layer=args.layer)
    path = None if args.encoder == "minilm" else args.encoder
    return SentenceEncoder(
        path,
        input_format=args.input_format,
        pooling=args.pooling,
        layers=args.layers,
        device=None if args.device in (None, "auto") else args.device,
    )


def _rm_train(args: argparse.Namespace) -> int:
    from feedback import RMTrainConfig, load_pair_files, train_reward_model
    from proxy_env.folders import check_output_dir
    from proxy_env.rewards.learned import CONFIG_NAME, WEIGHTS_NAME

    cfg = RMTrainConfig(**{f.name: getattr(args, f.name) for f in fields(RMTrainConfig)})
    cfg.validate()
    check_output_dir(args.out, arg="--out", markers=(CONFIG_NAME,), names=(WEIGHTS_NAME,))  # before training, not after
    pairs = load_pair_files(args.pairs)
    start = time.perf_counter()
    encoder = _encoder(args)
    _log(f"training a Bradley–Terry head over {encoder.name} on {len(pairs)} pairs ...")
    result = train_reward_model(pairs, encoder, cfg)
    path = result.model.save(args.out)
    print(json.dumps({**result.metrics, "out": str(path), "seconds_total": time.perf_counter() - start}, indent=2))
    return 0


def _rm_eval(args: argparse.Namespace) -> int:
    import numpy as np

    from feedback import load_pair_files
    from proxy_env.rewards.learned import load_reward_model

    lm = None
    if args.model is not None:
        from proxy_env.engine.models import as_frozen_lm

        lm = as_frozen_lm(args.model, device=args.device)
    model = load_reward_model(args.rm, lm=lm)
    pairs = load_pair_files(args.pairs)
    prompts = [p.prompt for p in pairs]
    diff = np.array(model(prompts, [p.chosen for p in pairs])) - np.array(model(prompts, [p.rejected for p in pairs]))
    strong = np.array([p.margin is not None and p.margin >= args.margin_threshold for p in pairs])
    out = {
        "pairs": len(pairs),
        "accuracy": float((diff > 0).mean()),
        "margin_threshold": args.margin_threshold,
        "pairs_margin": int(strong.sum()),
        "accuracy_margin": float((diff[strong] > 0).mean()) if strong.any() else None,
    }
    print(json.dumps(out, indent=2))
    return 0


def _add_build_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="JSONL file to write (atomically)")
    p.add_argument(
        "--source", choices=["reward", "judge", "human"], default="reward", help="feedback source (default: reward)"
    )
    p.add_argument(
        "--model", default="default", help="the frozen LLM being aligned: samples the responses, measures perplexity"
    )
    p.add_argument(
        "--prompts", default="default", help="prompt set: 'default', a .txt/.jsonl file or a datasets folder"
    )
    p.add_argument("--num-prompts", type=int, default=0, help="use the first N prompts (0: all)")
    p.add_argument("--pairs-per-prompt", type=int, default=1, help="pairs sampled per prompt (2 responses each)")
    p.add_argument("--reward", default="default", help="--source reward: 'default'/'vader', a reward-model path or id")
    p.add_argument(
        "--tie-tolerance", type=float, default=0.0, help="--source reward: drop pairs whose reward gap is <= this"
    )
    p.add_argument("--judge-model", default=None, help="--source judge: the judge LLM (default: --model)")
    p.add_argument(
        "--judge-mode",
        choices=["logits", "generate"],
        default="logits",
        help="read the judge's '1'/'2' logits or parse a reply",
    )
    p.add_argument(
        "--judge-template", default=None, help="text file with the judge prompt ({prompt}, {response_1}, {response_2})"
    )
    p.add_argument("--judge-batch-size", type=int, default=8, help="judge prompts per forward")
    p.add_argument("--human", default=None, help="--source human: JSONL of labels to import")
    p.add_argument(
        "--ppl-quantile",
        type=float,
        default=None,
        help="keep pairs whose responses are both under this perplexity quantile",
    )
    p.add_argument(
        "--max-ppl", type=float, default=None, help="keep pairs whose responses both have perplexity <= this"
    )
    p.add_argument("--max-new-tokens", type=int, default=32, help="response budget")
    p.add_argument("--top-k", type=int, default=EnvConfig.top_k, help="sampling top-k (as the env's pool)")
    p.add_argument("--top-p", type=float, default=EnvConfig.top_p, help="sampling top-p")
    p.add_argument("--temperature", type=float, default=EnvConfig.temperature, help="sampling temperature")
    p.add_argument("--batch-size", type=int, default=32, help="sequences per generate call")
    p.add_argument("--seed", type=int, default=0, help="seed of the samples and the judge's order")
    p.add_argument("--device", default=None, help="device of the LLMs (default: CUDA when available)")


def _add_rm_train_flags(p: argparse.ArgumentParser) -> None:
    from agents.cli.flags import add_config_flags
    from feedback.rm import RMTrainConfig

    p.add_argument(
        "--pairs",
        required=True,
        nargs="+",
        help="preference JSONL file(s) (from `prefs build` or with prompt/chosen/rejected)",
    )
    p.add_argument("--out", required=True, help="folder to write: model.safetensors + reward_model.json")
    p.add_argument(
        "--encoder",
        default="minilm",
        help="'minilm' (shipped all-MiniLM-L6-v2), 'lm' (the frozen LLM's hidden states) or an encoder folder",
    )
    p.add_argument(
        "--input-format",
        choices=["response", "pair"],
        default="response",
        help="sentence encoders: the response alone or (prompt, response)",
    )
    p.add_argument(
        "--pooling",
        choices=["mean", "sum", "tokens"],
        default="mean",
        help="sentence encoders: 'mean' (L2-normalised, the standard embedding), 'sum' of token states, or 'tokens' "
        "(the head scores each token and averages: best on lexicon-like rewards such as VADER)",
    )
    p.add_argument(
        "--layers",
        type=int,
        nargs="+",
        default=[-1],
        metavar="L",
        help="sentence encoders: hidden states to pool, concatenated (0: embeddings, -1: last; default: -1)",
    )
    p.add_argument("--model", default="default", help="--encoder lm: the frozen LLM")
    p.add_argument("--layer", type=int, default=-1, help="--encoder lm: which hidden state")
    p.add_argument("--device", default=None, help="device of the encoder")
    add_config_flags(p, RMTrainConfig)


def add_subcommands(sub: Any) -> None:
    """Add ``prefs build`` and ``rm train|eval`` to the ``proxy-rlhf`` parser (heavy imports stay in the handlers)."""
    prefs = sub.add_parser("prefs", help="preference data: sample pairs from the frozen LLM and label them")
    prefs_sub = prefs.add_subparsers(dest="action", required=True)
    build = prefs_sub.add_parser("build", help="build a preference JSONL (reward, AI judge or human labels)")
    _add_build_flags(build)
    build.set_defaults(func=_prefs_build)
    rm = sub.add_parser("rm", help="Bradley–Terry reward models over a frozen encoder")
    rm_sub = rm.add_subparsers(dest="action", required=True)
    train = rm_sub.add_parser("train", help="train a reward model on a preference JSONL")
    _add_rm_train_flags(train)
    train.set_defaults(func=_rm_train)
    ev = rm_sub.add_parser("eval", help="pairwise accuracy of a saved reward model on a preference JSONL")
    ev.add_argument("--rm", required=True, help="reward-model folder")
    ev.add_argument("--pairs", required=True, nargs="+", help="preference JSONL file(s)")
    ev.add_argument(
        "--margin-threshold", type=float, default=0.3, help="also report accuracy on pairs with margin >= this"
    )
    ev.add_argument(
        "--model", default=None, help="the frozen LLM, for an --encoder lm model (default: the one it was trained on)"
    )
    ev.add_argument("--device", default=None, help="device")
    ev.set_defaults(func=_rm_eval)
