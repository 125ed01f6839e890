"""``proxy-rlhf bench``: the parser and its handler (the work is :func:`agents.eval.bench.run_bench`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agents.eval.results import PROXY_ACTIONS, BenchConfig
from agents.value import VALUE_RULES


def _bench(args: Any) -> int:
    import shlex
    import sys

    from tqdm import tqdm

    from agents.eval.bench import run_bench
    from agents.eval.report import read_rows, write_outputs
    from proxy_env.folders import check_not_a_file

    cfg = BenchConfig(
        model=args.model,
        checkpoints=tuple(args.checkpoints),
        finetuned=tuple(args.finetuned),
        tensorboard=tuple(args.tensorboard),
        prompts=args.prompts,
        num_prompts=args.num_prompts,
        n=tuple(args.n),
        bon_reference=args.bon_reference,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
        batch_size=args.batch_size,
        out=args.out,
        quick=args.quick,
        proxy_actions=("sample",) if args.sample else tuple(args.proxy_actions),
        random_reject_p=args.random_reject_p,
        accept_powers=tuple(args.accept_powers),
        value_heads=tuple(args.value_heads),
        value_n=tuple(args.value_n),
        value_rules=tuple(args.value_rules),
        trust_checkpoint=args.trust_checkpoint,
        frontier_from=args.frontier_from,
        device=args.device,
        cache_dir=args.cache_dir,
        resume=args.resume,
    )
    check_not_a_file(cfg.out, arg="--out")  # before the benchmark runs, not after its results exist
    if cfg.cache_dir:
        check_not_a_file(cfg.cache_dir, arg="--cache-dir")
    if cfg.frontier_from:  # likewise: a cut or unreadable file fails now, not after the run
        read_rows(cfg.frontier_from, "--frontier-from")
    bar = tqdm(total=1, unit="prompt", desc="bench")

    def progress(done: int, total: int, stage: str) -> None:
        bar.total = total
        bar.n = done
        bar.set_description(stage)
        bar.refresh()

    try:
        result = run_bench(cfg, progress=progress)
    finally:
        bar.close()
    command = "proxy-rlhf " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else "proxy-rlhf bench"
    files = write_outputs(result, cfg.out, command=command)
    print(Path(files[0]).read_text(encoding="utf-8"))
    print("wrote " + ", ".join(str(f) for f in files))
    return 0


def add_subcommands(sub: Any) -> None:
    """Add ``bench`` to the ``proxy-rlhf`` parser (heavy imports stay in the handler)."""
    d = BenchConfig()
    p = sub.add_parser("bench", help="benchmark agents on held-out prompts: table, CSV, reward-KL plot")
    p.add_argument("--checkpoints", nargs="*", default=[], metavar="DIR", help="proxy checkpoint folders")
    p.add_argument(
        "--finetuned", nargs="*", default=[], metavar="DIR", help="fine-tuned model folders (Hugging Face format)"
    )
    p.add_argument(
        "--tensorboard", nargs="*", default=[], metavar="DIR", help="TensorBoard dirs of the checkpoints, in order"
    )
    p.add_argument("--model", default=d.model, help="frozen LLM ('default', 'tiny', a hub id or a path)")
    p.add_argument("--prompts", default=d.prompts, help="prompt set or path (default: %(default)s)")
    p.add_argument("--num-prompts", type=int, default=None, help="first N prompts only (default: all)")
    p.add_argument(
        "--n",
        type=int,
        nargs="*",
        default=list(d.n),
        help="best-of-N sizes (default: %(default)s; none: --n with no value)",
    )
    p.add_argument(
        "--frontier-from",
        default=None,
        metavar="CSV",
        help=BenchConfig.__dataclass_fields__["frontier_from"].metadata["help"],
    )
    p.add_argument(
        "--bon-reference",
        type=int,
        default=d.bon_reference,
        help="reference samples per prompt for best-of-N's KL estimate",
    )
    p.add_argument(
        "--max-new-tokens", type=int, default=d.max_new_tokens, help="response budget (default: %(default)s)"
    )
    p.add_argument(
        "--random-reject-p",
        type=float,
        default=d.random_reject_p,
        help="random-reject baseline's rejection probability",
    )
    p.add_argument(
        "--proxy-actions",
        nargs="+",
        choices=PROXY_ACTIONS,
        default=list(d.proxy_actions),
        help="how checkpoint proxies act, one table row per mode (default: %(default)s)",
    )
    p.add_argument("--sample", action="store_true", help="shorthand for --proxy-actions sample")
    p.add_argument(
        "--accept-powers",
        type=float,
        nargs="*",
        default=[],
        metavar="LAMBDA",
        help="also one row per checkpoint and λ with the accept probability raised to λ (sampled actions)",
    )
    p.add_argument(
        "--value-head",
        dest="value_heads",
        nargs="*",
        default=[],
        metavar="DIR",
        help="value head folders (`proxy-rlhf value`), each also a decoding-time guide: one row per --value-n",
    )
    p.add_argument(
        "--value-n",
        type=int,
        nargs="+",
        default=list(d.value_n),
        metavar="N",
        help="the best-of-N each value-guide row steers toward (default: %(default)s)",
    )
    p.add_argument(
        "--value-rules",
        nargs="+",
        choices=VALUE_RULES,
        default=list(d.value_rules),
        help="how the value-guide rows read the head: E[u^(N-1)] ('distribution') and/or E[u]^(N-1) ('mean')",
    )
    p.add_argument("--seed", type=int, default=d.seed, help="seed (default: %(default)s)")
    p.add_argument(
        "--batch-size", type=int, default=d.batch_size, help="prompts generated at once (default: %(default)s)"
    )
    p.add_argument("--device", default=None, help="torch device (default: CUDA when available)")
    p.add_argument("--out", default=d.out, help="output folder (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="tiny model, 4 prompts, small N: a smoke run in seconds")
    p.add_argument(
        "--cache-dir",
        default=None,
        metavar="DIR",
        help="keep each agent's evaluation in DIR as soon as it ends (a stopped bench continues with --resume)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="with --cache-dir: read the evaluations DIR holds for these same settings and agents instead of rerunning them",
    )
    p.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="also load SB3 proxy.zip checkpoints, whose loading unpickles Python objects and can run code",
    )
    p.set_defaults(func=_bench)
