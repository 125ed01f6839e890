"""Diagnostic: is a value head's candidate preference right but too flat? The guide with W raised to λ.

    python benchmarks/value_sharpen.py --head runs/value/head --n 8 --power 8

The value guide (``agents.value.guide.ValueGuide``) steers toward ``q·W(s + y)``, ``W = E[u^{N−1} | s + y]``. A
head that shrinks toward the marginal gives a W almost flat across a pool. Steering toward ``q·W^λ`` instead
multiplies the head's within-pool log-spread by λ: if the reward then rises like best-of-N's at the same KL, the
head's direction is right and only its scale is off; if not, the direction is the problem. Not a recipe: λ has no
meaning in best-of-N's rule. All 266 ``default-eval`` prompts, sampled actions, the bench's settings and exact KL;
prints reward (95% CI), KL, rejection rate, perplexity, distinct-2 and s / response. 2 torch threads.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from agents.baselines import PowerProxy
from agents.eval.metrics import distinct_n
from agents.eval.results import BenchConfig, Ticker
from agents.eval.runners import eval_proxy
from agents.value.guide import ValueGuide
from agents.value.head import load_value_head
from proxy_env.engine.models import as_frozen_lm
from proxy_env.prompts import load_prompts
from proxy_env.rewards import resolve_reward


class SharpenedGuide(ValueGuide):
    """:class:`ValueGuide` toward ``q·W^λ``."""

    def __init__(self, *args: object, power: float, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.power = power

    def _weight(self, probs: torch.Tensor) -> torch.Tensor:
        return super()._weight(probs) ** self.power


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--head", default="runs/value/head")
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--power", type=float, nargs="+", default=[8.0])
    args = parser.parse_args()
    torch.set_num_threads(2)
    cfg = BenchConfig(prompts="default-eval", max_new_tokens=32, batch_size=32)
    lm = as_frozen_lm(cfg.model)
    prompts = load_prompts(cfg.prompts)
    reward_fn = resolve_reward(cfg.reward, device=lm.device)
    head = load_value_head(args.head, lm, hidden_layer=-1)
    pool = {"top_k": cfg.top_k, "top_p": cfg.top_p, "temperature": cfg.temperature}
    for power in args.power:
        agent = PowerProxy(SharpenedGuide(head, lm, args.n, power=power, **pool), 1.0, seed=cfg.seed)
        name = f"value guide N={args.n}, W^{power:g}"
        e = eval_proxy(
            lm,
            name,
            agent,
            {"observation": "prefix", "hidden_layer": -1},
            None,
            prompts,
            reward_fn,
            cfg,
            Ticker(None, 2 * len(prompts)),
            deterministic=False,
        )
        half = 1.96 * e.rewards.std(ddof=1) / np.sqrt(len(e.rewards))
        lengths = np.array([max(len(ids), 1) for ids in e.token_ids])
        print(
            f"{name}: reward {e.rewards.mean():.3f} [{e.rewards.mean() - half:.3f}, {e.rewards.mean() + half:.3f}], "
            f"KL {e.kl.mean():.3f} nats, rejection rate {e.rejection_rates.mean():.3f}, "
            f"perplexity {np.exp(e.nll / lengths).mean():.2f}, distinct-2 {distinct_n(e.token_ids, 2):.3f}, "
            f"{e.wall_s / len(e.rewards):.3f} s / response",
            flush=True,
        )


if __name__ == "__main__":
    main()
