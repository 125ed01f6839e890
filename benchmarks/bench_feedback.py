"""Issue 6 end to end: VADER preference pairs -> MiniLM Bradley–Terry RM -> a proxy trained on the RM; the LLM as AI judge.

    python benchmarks/bench_feedback.py                                   # full run (>= 2,000 pairs, default model)
    python benchmarks/bench_feedback.py --num-prompts 16 --pairs-per-prompt 4 --rm-seeds 0 --judge-pairs 0 --train-minutes 0   # quick
    python benchmarks/bench_feedback.py --pairs a.jsonl b.jsonl           # reuse built pairs, several files (skips stage 1)

Stages, each timed: (1) sample ``2 * pairs_per_prompt`` responses per default train prompt from the
frozen LLM, label pairs by VADER (exact ties dropped), record perplexities; (2) train the MiniLM
Bradley–Terry head once per ``--rm-seeds`` seed (each a different split by prompt), report held-out
accuracy overall and on pairs with VADER margin >= 0.3, and the reward/length correlation, for the
standard sentence embedding (mean-pooled last layer) and for the encoder settings given (default: a
per-token head over layers 0-2, averaged: the shape of VADER's word lexicon); the first seed's RMs
are saved; (3) ``--judge-pairs``: the LLM judges that many pairs, agreement with VADER; (4)
optionally train a PPO proxy against the learned RM and compare it with always-accept on held-out
prompts, scored by VADER (the true reward the RM approximates).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="frozen LLM")
    parser.add_argument("--num-prompts", type=int, default=0, help="first N default train prompts (0: all 637)")
    parser.add_argument("--pairs-per-prompt", type=int, default=4, help="pairs per prompt (637 x 4 = 2,548 sampled)")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="response budget (the proxy runs use 32)")
    parser.add_argument("--batch-size", type=int, default=32, help="sequences per generate call")
    parser.add_argument(
        "--margin-threshold", type=float, default=0.3, help="report accuracy on pairs with VADER margin >= this"
    )
    parser.add_argument("--pairs", nargs="+", default=None, help="existing pairs JSONL file(s): skip building")
    parser.add_argument(
        "--pooling", default="tokens", help="MiniLM pooling of the RM the proxy trains on: 'mean', 'sum' or 'tokens'"
    )
    parser.add_argument(
        "--layers", type=int, nargs="+", default=[0, 1, 2], help="MiniLM hidden states pooled (0: embeddings)"
    )
    parser.add_argument(
        "--rm-seeds",
        type=int,
        nargs="+",
        default=[0, 1, 2],
        help="split/init seeds of the RM; the first trains the saved RM, all are reported (split variance)",
    )
    parser.add_argument(
        "--judge-pairs",
        type=int,
        default=256,
        help="AI-judge stage: the LLM judges this many of the pairs (0: skip); agreement with VADER is reported",
    )
    parser.add_argument(
        "--judge-modes",
        nargs="+",
        choices=["logits", "generate"],
        default=["logits", "generate"],
        help="judge answer modes",
    )
    parser.add_argument(
        "--skip-rm", action="store_true", help="skip the RM stage; the proxy stage then reads OUT_DIR/rm"
    )
    parser.add_argument("--train-minutes", type=float, default=20.0, help="PPO proxy training against the RM (0: skip)")
    parser.add_argument("--num-envs", type=int, default=8, help="envs of the proxy training")
    parser.add_argument("--eval-prompts", type=int, default=128, help="held-out prompts for the VADER comparison")
    parser.add_argument("--out-dir", default="runs/feedback", help="pairs.jsonl, rm/, proxy/ go here")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0, help="seed")
    return parser


def main() -> None:
    args = _parser().parse_args()

    import torch

    from agents.training import resolve_lm
    from feedback import RewardFeedback, build_preferences, write_jsonl
    from proxy_env.errors import ConfigError
    from proxy_env.prompts import load_prompts
    from proxy_env.rewards import VaderReward
    from proxy_env.rewards.learned import is_reward_model_dir

    if args.num_prompts < 0:
        raise ConfigError(f"--num-prompts {args.num_prompts} must be >= 0 (0: all prompts; N: the first N).")
    out = Path(args.out_dir)
    if args.skip_rm and args.train_minutes > 0 and not is_reward_model_dir(out / "rm"):
        raise ConfigError(
            f"--skip-rm with --train-minutes {args.train_minutes:g} trains the proxy on {out / 'rm'}, which holds no "
            "reward model; drop --skip-rm or pass --train-minutes 0."
        )
    torch.set_num_threads(args.threads)
    out.mkdir(parents=True, exist_ok=True)
    figures: dict[str, object] = {}
    t0 = time.perf_counter()
    lm = resolve_lm(args.model, None)
    prompts = load_prompts("default")
    prompts = prompts[: args.num_prompts] if args.num_prompts else prompts
    if args.pairs:
        from feedback import load_pair_files

        pairs = load_pair_files(args.pairs)
        print(f"[1/3] {len(pairs)} pairs read from {', '.join(args.pairs)}", flush=True)
        figures.update(pairs_file=args.pairs, pairs_kept=len(pairs))
    else:
        print(
            f"[1/3] building pairs: {len(prompts)} prompts x {args.pairs_per_prompt} pairs, max_new_tokens={args.max_new_tokens}",
            flush=True,
        )
        built = build_preferences(
            lm,
            prompts,
            RewardFeedback(VaderReward()),
            pairs_per_prompt=args.pairs_per_prompt,
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
            seed=args.seed,
            progress=lambda d, n: print(f"  {d}/{n} prompts, {time.perf_counter() - t0:.0f} s", flush=True),
        )
        write_jsonl(out / "pairs.jsonl", built.pairs)
        pairs, s = built.pairs, built.summary
        figures.update(
            pairs_sampled=s.sampled,
            identical_dropped=s.identical,
            ties_dropped=s.ties,
            pairs_kept=s.kept,
            build_seconds=round(time.perf_counter() - t0, 1),
            build_stage_seconds={k: round(v, 1) for k, v in s.seconds.items()},
        )
    figures["strong_pairs"] = sum(p.margin is not None and p.margin >= args.margin_threshold for p in pairs)
    print(json.dumps(figures, indent=2), flush=True)

    if not args.skip_rm:
        _train_rms(pairs, args, out, figures)
    if args.judge_pairs > 0:
        figures["judge"] = _judge(lm, pairs[: args.judge_pairs], args)
    if args.train_minutes > 0:
        figures.update(_proxy(lm, out / "rm", args))
    figures["total_seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(figures, indent=2))
    (out / "figures.json").write_text(json.dumps(figures, indent=2))


def _train_rms(pairs: list, args: argparse.Namespace, out: Path, figures: dict[str, object]) -> None:
    """Stage 2: both encoders x every seed; figures per seed and their mean; the first seed's RMs saved (OUT_DIR/rm is the tuned one)."""
    from feedback import RMTrainConfig, train_reward_model
    from proxy_env.rewards.encoders import SentenceEncoder

    for name, pooling, layers in (("rm_mean_last", "mean", [-1]), ("rm", args.pooling, args.layers)):
        encoder, by_seed = _EmbedOnce(SentenceEncoder(pooling=pooling, layers=layers)), []
        for seed in args.rm_seeds:
            t1 = time.perf_counter()
            print(
                f"[2/3] training the MiniLM Bradley–Terry reward model ({pooling} pooling, layers {layers}, seed {seed})",
                flush=True,
            )
            trained = train_reward_model(
                pairs, encoder, RMTrainConfig(margin_threshold=args.margin_threshold, seed=seed)
            )
            metrics = {
                **_rounded(trained.metrics),
                "pooling": pooling,
                "layers": layers,
                "seed": seed,
                "seconds_total": round(time.perf_counter() - t1, 1),
            }
            print(json.dumps(metrics, indent=2), flush=True)
            if not by_seed:  # the first seed's RM is saved (and trains the proxy)
                trained.model.save(out / name)
                figures[name] = metrics
            by_seed.append(
                {
                    key: metrics[key]
                    for key in ("seed", "test_accuracy", "test_accuracy_margin", "test_pairs_margin", "seconds_total")
                }
            )
        figures[f"{name}_by_seed"] = by_seed
        accs = [
            m["test_accuracy_margin"] for m in by_seed if m["test_accuracy_margin"] is not None
        ]  # None: no strong test pairs
        figures[f"{name}_accuracy_margin_mean"] = round(sum(accs) / len(accs), 4) if accs else None


def _judge(lm: object, pairs: list, args: argparse.Namespace) -> dict[str, object]:
    """The LLM as an AI judge of VADER-labelled pairs: agreement with VADER, parse failures, position bias."""
    from feedback.sources import judge_agreement
    from proxy_env.rewards.judge import LLMJudge

    report: dict[str, object] = {"pairs": len(pairs)}
    for mode in args.judge_modes:
        t0 = time.perf_counter()
        print(f"[judge] {lm.name} judges {len(pairs)} pairs, mode={mode}", flush=True)  # type: ignore[attr-defined]
        figures = judge_agreement(LLMJudge(lm, mode=mode, seed=args.seed), pairs, args.margin_threshold)
        report[mode] = {**_rounded(figures), "seconds": round(time.perf_counter() - t0, 1)}
        print(json.dumps(report[mode]), flush=True)
    return report


def _rounded(figures: dict[str, object]) -> dict[str, object]:
    return {key: (round(v, 4) if isinstance(v, float) else v) for key, v in figures.items()}


class _EmbedOnce:
    """An encoder that embeds a given list of texts once: the RM seeds share the (slow) encoder pass."""

    def __init__(self, encoder: object) -> None:
        self.encoder, self.cache = encoder, {}

    def __getattr__(self, name: str) -> object:
        return getattr(self.encoder, name)

    def embed(self, prompts: list[str], responses: list[str]) -> object:
        key = (tuple(prompts), tuple(responses))
        if key not in self.cache:
            self.cache[key] = self.encoder.embed(prompts, responses)  # type: ignore[attr-defined]
        return self.cache[key]


def _proxy(lm: object, rm_dir: Path, args: argparse.Namespace) -> dict[str, object]:
    from agents.baselines import AlwaysAccept
    from agents.eval.compare import mean_ci, run_agents, table
    from agents.train import SB3Config, train
    from proxy_env.config import EnvConfig
    from proxy_env.prompts import load_prompts
    from proxy_env.rewards import VaderReward

    t2 = time.perf_counter()
    print(f"[3/3] training a PPO proxy against the learned RM for {args.train_minutes:g} min", flush=True)
    cfg = SB3Config(
        env=EnvConfig(model=args.model, reward=str(rm_dir), max_new_tokens=args.max_new_tokens),
        num_envs=args.num_envs,
        total_timesteps=10**9,
        time_limit_s=args.train_minutes * 60,
        seed=args.seed,
        n_steps=64,
        batch_size=128,
        learning_rate=1e-3,
        algo_kwargs={"n_epochs": 4, "ent_coef": 0.01},
        eval_prompts="",
        save_dir=str(Path(args.out_dir) / "proxy"),
        tensorboard_log=str(Path(args.out_dir) / "proxy-tb"),
    )
    result = train(cfg, model=lm)  # type: ignore[arg-type]
    train_s = time.perf_counter() - t2
    prompts = load_prompts("default-eval")[: args.eval_prompts]
    results = run_agents(
        lm,
        {"always-accept": AlwaysAccept(), "PPO proxy (learned RM)": result.model},
        prompts,
        VaderReward(),  # type: ignore[arg-type]
        seed=args.seed,
        batch_size=32,
        max_new_tokens=args.max_new_tokens,
    )
    print(table(results, reference="always-accept"), flush=True)
    base, proxy = results
    diff = mean_ci(proxy.rewards - base.rewards)
    return {
        "proxy_decisions": int(result.model.num_timesteps),
        "proxy_train_seconds": round(train_s, 1),
        "vader_always_accept": round(mean_ci(base.rewards)[0], 4),
        "vader_proxy": round(mean_ci(proxy.rewards)[0], 4),
        "vader_gain_ci": [round(v, 4) for v in diff],
        "eval_prompts": len(prompts),
        "proxy_eval_seconds": round(time.perf_counter() - t2 - train_s, 1),
    }


if __name__ == "__main__":
    main()
