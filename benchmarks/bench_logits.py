"""Cost per token of ``generate`` steered by :class:`~agents.logits_processor.ProxyLogitsProcessor` against plain ``generate``.

    OMP_NUM_THREADS=1 python benchmarks/bench_logits.py --model default --batch-sizes 1 16 --threads 1
    OMP_NUM_THREADS=1 python benchmarks/bench_logits.py --model tiny --batch-sizes 1 4 --new-tokens 8 --repeats 1   # smoke run

Same prompts (the first B of ``default-eval``, chat template, left-padded), same seed, exactly
``--new-tokens`` tokens per row (``min_new_tokens``), in one process, the rows measured round-robin
and the best of ``--repeats`` kept:

* **plain**: ``generate(do_sample=True, top_k=50, top_p=0.95, temperature=1.0)``, HF's own sampler
  over the env's default pool;
* **prefix** / **candidate**: ``generate(do_sample=True, top_k=0, top_p=1.0, temperature=1.0,
  logits_processor=[processor])`` with a proxy of the default shape (LayerNorm, 64, 64 tanh), random
  weights unless ``--proxy FOLDER`` is given, applying the same pool itself. ``candidate`` adds one
  LLM forward over the B·K pool candidates per step.

Cost per token is wall seconds / new tokens (one token per row per step), so a step of B rows counts
once; ``ms/row-token`` divides by B as well. The ratio is against plain at the same batch size.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from agents.logits_processor import ProxyLogitsProcessor
from agents.saving.folder import AcceptNet, ProxyFolder, load_proxy, summary
from proxy_env.config import prefix_dim
from proxy_env.engine.lm import FrozenLM
from proxy_env.prompts import load_prompts

SKAM = {"top_k": 50, "top_p": 0.95, "temperature": 1.0}


@dataclass
class Args:
    model: str = "default"  # LLM: 'default', 'tiny', a hub id or a path
    batch_sizes: list[int] = field(default_factory=lambda: [1, 16])  # rows per generate call
    observations: list[str] = field(default_factory=lambda: ["prefix", "candidate"])  # processor modes measured
    new_tokens: int = 32  # tokens generated per row
    repeats: int = 3  # runs of each row; the best is kept
    threads: int = 1  # torch CPU threads
    proxy: str | None = None  # a proxy folder (its observation replaces --observations); random weights otherwise
    seed: int = 0


def random_proxy(hidden_size: int, observation: str, seed: int) -> ProxyFolder:
    """A proxy of the default shape with random weights (costs what a trained one costs)."""
    torch.manual_seed(seed)
    dim = {"prefix": prefix_dim(hidden_size), "candidate": hidden_size}[observation]
    extractor = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 64), nn.Tanh())
    net = AcceptNet(extractor, nn.Sequential(nn.Linear(64, 64), nn.Tanh()), nn.Linear(64, 2), kind="categorical").eval()
    info = summary({"observation": observation, **SKAM})
    config = {"observation_space": {"type": "Box", "shape": [dim], "dtype": "float32"}, **info}
    return ProxyFolder(Path(f"<random {observation}>"), net, config, observation, -1, info["skam"], {})


def _run(lm: FrozenLM, ids: torch.Tensor, mask: torch.Tensor, args: Args, **sampling: Any) -> float:
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    with torch.no_grad():
        lm.model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=args.new_tokens,
            min_new_tokens=args.new_tokens,
            pad_token_id=int(lm.tokenizer.pad_token_id),
            **sampling,
        )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = Args()
    parser.add_argument("--model", default=d.model)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=d.batch_sizes)
    parser.add_argument("--observations", nargs="+", choices=["prefix", "candidate"], default=d.observations)
    parser.add_argument("--new-tokens", type=int, default=d.new_tokens)
    parser.add_argument("--repeats", type=int, default=d.repeats)
    parser.add_argument("--threads", type=int, default=d.threads)
    parser.add_argument("--proxy", default=None)
    parser.add_argument("--seed", type=int, default=d.seed)
    args = Args(**vars(parser.parse_args()))
    torch.set_num_threads(args.threads)
    if args.model == "tiny":
        from proxy_env.engine.tiny import tiny_lm

        lm = tiny_lm()
    else:
        lm = FrozenLM(args.model, device="cpu", dtype="float32")
    if args.proxy:
        loaded = load_proxy(args.proxy)
        proxies = {loaded.observation: loaded}
    else:
        proxies = {obs: random_proxy(lm.hidden_size, obs, args.seed) for obs in args.observations}
    prompts = load_prompts("default-eval")
    print(
        f"device: CPU, {args.threads} torch threads; torch {torch.__version__}; model {args.model!r}; {args.new_tokens} new tokens "
        f"per row; pool top_k={SKAM['top_k']} top_p={SKAM['top_p']}; best of {args.repeats}\n"
    )
    print("| batch | mode | s per call | ms/token (step) | ms/row-token | vs plain |\n|---|---|---|---|---|---|")
    for b in args.batch_sizes:
        ids, mask = lm.left_pad([lm.encode_prompt(p) for p in prompts[:b]])
        rows: dict[str, Any] = {"plain": dict(do_sample=True, **SKAM)}
        processors = {
            obs: ProxyLogitsProcessor(p, lm.model, lm.tokenizer, check_fingerprint=bool(args.proxy))
            for obs, p in proxies.items()
        }
        rows.update({obs: proc.generate_kwargs() for obs, proc in processors.items()})
        best = {name: float("inf") for name in rows}
        _run(lm, ids, mask, Args(**{**vars(args), "new_tokens": 2}), **rows["plain"])  # warm-up
        for _ in range(args.repeats):  # round-robin: machine noise hits every row alike
            for name, sampling in rows.items():
                best[name] = min(best[name], _run(lm, ids, mask, args, **sampling))
        for proc in processors.values():
            proc.remove()
        for name, seconds in best.items():
            per_step = 1000 * seconds / args.new_tokens
            print(
                f"| {b} | {name} | {seconds:.2f} | {per_step:.1f} | {per_step / b:.2f} | {seconds / best['plain']:.2f} |"
            )


if __name__ == "__main__":
    main()
