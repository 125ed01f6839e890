"""Issue 16: the fine-tune peers on one reward–KL plot: DPO (perplexity-filtered and its random control), online DPO, a GRPO β sweep.

    python benchmarks/bench_finetune.py --pairs runs/feedback/pairs.jsonl --dry-run      # print the commands only
    python benchmarks/bench_finetune.py --pairs runs/feedback/pairs.jsonl                # run them, one after another
    python benchmarks/bench_finetune.py --build-pairs                                    # build the pairs first (~35 min)
    python benchmarks/bench_finetune.py --model tiny --build-pairs --num-prompts 8 --time-limit-s 10 --max-steps 2 \\
        --bench-prompts 4 --bench-n 2 --out-dir runs/ft_tiny                             # a smoke run in ~2 min

Each stage is one ``proxy-rlhf`` command, run in a subprocess with ``OMP_NUM_THREADS=--threads``
(printed before it starts, so every row of BENCHMARKS.md has its exact command); every fine-tune
run stops at ``--time-limit-s`` of training (default 1,200 s, the proxy's budget). A run whose
folder already holds ``finetune.json`` is skipped, so an interrupted sweep resumes where it
stopped (``--overwrite`` redoes it). Stages:

1. ``--build-pairs``: ``prefs build`` on the train prompts (VADER labels, perplexities recorded);
2. DPO on the pairs under the ``--ppl-quantile`` and DPO on as many random pairs (same count, seeded);
3. online DPO, two samples per prompt from the current model, annotated by ``--annotator`` (VADER,
   a ``rm train`` folder) or by ``--judge-model``;
4. GRPO, one run per ``--grpo-betas`` value;
5. ``bench`` of every model folder (plus ``--checkpoints`` proxies) on the same held-out prompts:
   ``OUT_DIR/bench/results.md`` and ``reward_kl.png`` (one line per method).
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--model",
        default="default",
        help="LLM ('default', 'tiny': the random test model saved to OUT_DIR/tiny-model, or a folder)",
    )
    p.add_argument(
        "--pairs",
        nargs="+",
        default=None,
        help="preference JSONL file(s) from `prefs build` (default: OUT_DIR/pairs.jsonl)",
    )
    p.add_argument(
        "--build-pairs", action="store_true", help="build OUT_DIR/pairs.jsonl first (637 prompts x --pairs-per-prompt)"
    )
    p.add_argument("--pairs-per-prompt", type=int, default=4, help="--build-pairs: pairs per train prompt")
    p.add_argument("--num-prompts", type=int, default=0, help="--build-pairs: first N train prompts (0: all)")
    p.add_argument(
        "--ppl-quantile",
        type=float,
        default=0.5,
        help="DPO: keep pairs with both perplexities under this quantile (0.5: about as many pairs as 20 min of DPO sees)",
    )
    p.add_argument("--dpo-betas", type=float, nargs="+", default=[0.1], help="DPO β, one run per arm and β")
    p.add_argument("--dpo-lr", type=float, default=5e-6, help="DPO learning rate")
    p.add_argument(
        "--annotator",
        default="default",
        help="online DPO: the reward that picks the winner ('default' = VADER, an rm folder)",
    )
    p.add_argument("--judge-model", default=None, help="online DPO: an LLM judge instead of --annotator")
    p.add_argument("--online-betas", type=float, nargs="+", default=[0.1], help="online DPO β, one run each")
    p.add_argument("--online-lr", type=float, default=5e-6, help="online DPO learning rate")
    p.add_argument(
        "--grpo-betas",
        type=float,
        nargs="+",
        default=[0.1, 0.5, 2.0],
        help="GRPO β, one run each (TRL's 0.04 reward-hacked on this task: BENCHMARKS.md)",
    )
    p.add_argument("--grpo-lr", type=float, default=2e-5, help="GRPO learning rate")
    p.add_argument(
        "--methods",
        nargs="+",
        choices=["dpo", "online-dpo", "grpo"],
        default=["dpo", "online-dpo", "grpo"],
        help="which peers to run",
    )
    p.add_argument("--time-limit-s", type=float, default=1200.0, help="training wall time per run")
    p.add_argument("--max-steps", type=int, default=100_000, help="optimiser steps per run at most")
    p.add_argument("--max-new-tokens", type=int, default=32, help="response budget (training and bench)")
    p.add_argument("--checkpoints", nargs="*", default=[], help="proxy checkpoints to put on the same plot")
    p.add_argument("--bench-prompts", type=int, default=64, help="held-out prompts of the bench")
    p.add_argument("--bench-n", type=int, nargs="+", default=[2, 4, 8, 16], help="best-of-N sizes of the bench")
    p.add_argument("--skip-bench", action="store_true", help="train only")
    p.add_argument(
        "--out-dir", default="runs/finetune_peers", help="every model folder, pairs.jsonl and bench/ go here"
    )
    p.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of every command (the machine's free cores)")
    p.add_argument("--seed", type=int, default=0, help="seed of every run")
    p.add_argument("--overwrite", action="store_true", help="redo runs whose folder already holds finetune.json")
    p.add_argument("--dry-run", action="store_true", help="print the commands and exit")
    return p


def _model(args: argparse.Namespace, out: Path) -> str:
    """The model every command loads; 'tiny' is saved as a folder once (TRL loads models from folders)."""
    if args.model != "tiny":
        return args.model
    folder = out / "tiny-model"
    if not (folder / "config.json").is_file() and not args.dry_run:
        from proxy_env.engine.tiny import tiny_lm

        lm = tiny_lm()
        lm.model.save_pretrained(folder)
        lm.tokenizer.save_pretrained(folder)
    return str(folder)


def _finetune(
    args: argparse.Namespace,
    model: str,
    out: Path,
    name: str,
    method: str,
    beta: float,
    lr: float,
    batch: int,
    *extra: str,
) -> tuple[str, list[str]]:
    return name, [
        "finetune",
        "--method",
        method,
        "--model",
        model,
        "--out",
        str(out / name),
        "--beta",
        f"{beta:g}",
        "--learning-rate",
        f"{lr:g}",
        "--batch-size",
        str(batch),
        "--max-new-tokens",
        str(args.max_new_tokens),
        "--time-limit-s",
        f"{args.time_limit_s:g}",
        "--max-steps",
        str(args.max_steps),
        "--seed",
        str(args.seed),
        *(["--overwrite"] if args.overwrite else []),
        *extra,
    ]


def plan(args: argparse.Namespace, model: str, out: Path) -> list[tuple[str, list[str]]]:
    """(name, proxy-rlhf argv) of every stage, in order."""
    pairs = args.pairs or [str(out / "pairs.jsonl")]
    stages: list[tuple[str, list[str]]] = []
    if args.build_pairs:
        stages.append(
            (
                "pairs",
                [
                    "prefs",
                    "build",
                    "--out",
                    pairs[0],
                    "--model",
                    model,
                    "--pairs-per-prompt",
                    str(args.pairs_per_prompt),
                    "--num-prompts",
                    str(args.num_prompts),
                    "--max-new-tokens",
                    str(args.max_new_tokens),
                    "--seed",
                    str(args.seed),
                ],
            )
        )
    q = f"{args.ppl_quantile:g}"
    for beta in args.dpo_betas if "dpo" in args.methods else []:
        common = ("--pairs", *pairs, "--ppl-quantile", q)
        stages.append(_finetune(args, model, out, f"dpo-ppl-q{q}-b{beta:g}", "dpo", beta, args.dpo_lr, 8, *common))
        stages.append(
            _finetune(
                args, model, out, f"dpo-random-q{q}-b{beta:g}", "dpo", beta, args.dpo_lr, 8, *common, "--ppl-random"
            )
        )
    annotator = ("--judge-model", args.judge_model) if args.judge_model else ("--reward", args.annotator)
    for beta in (
        args.online_betas if "online-dpo" in args.methods else []
    ):  # 4 prompts x 2 samples: 8 responses a step, as GRPO
        stages.append(
            _finetune(args, model, out, f"online-dpo-b{beta:g}", "online-dpo", beta, args.online_lr, 4, *annotator)
        )
    for beta in args.grpo_betas if "grpo" in args.methods else []:
        stages.append(
            _finetune(args, model, out, f"grpo-b{beta:g}", "grpo", beta, args.grpo_lr, 8, "--num-generations", "4")
        )
    if not args.skip_bench:
        folders = [str(out / name) for name, argv in stages if argv[0] == "finetune"]
        proxies = ["--checkpoints", *args.checkpoints] if args.checkpoints else []
        stages.append(
            (
                "bench",
                [
                    "bench",
                    "--model",
                    model,
                    "--finetuned",
                    *folders,
                    *proxies,
                    "--num-prompts",
                    str(args.bench_prompts),
                    "--n",
                    *map(str, args.bench_n),
                    "--max-new-tokens",
                    str(args.max_new_tokens),
                    "--batch-size",
                    "32",
                    "--seed",
                    str(args.seed),
                    "--out",
                    str(out / "bench"),
                ],
            )
        )
    return stages


def main() -> None:
    args = _parser().parse_args()
    out = Path(args.out_dir)
    model = _model(args, out)
    stages = plan(args, model, out)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    exe = [sys.executable, "-m", "agents.cli"]
    for name, argv in stages:
        shown = f"OMP_NUM_THREADS={args.threads} proxy-rlhf " + " ".join(shlex.quote(a) for a in argv)
        done = argv[0] == "finetune" and (out / name / "finetune.json").is_file() and not args.overwrite
        print(("# done, skipped: " if done else "") + shown, flush=True)
        if args.dry_run or done:
            continue
        start = time.perf_counter()
        subprocess.run([*exe, *argv], env=env, check=True)
        print(f"# {name}: {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
