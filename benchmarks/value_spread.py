"""How strongly a value head tilts between the candidates of one pool, against the myopic reward change Δ.

    python benchmarks/value_spread.py [--head runs/value/head] [--data runs/tilt/data_32k.pt]

On 3,000 random positions of a tilt collection (every candidate of each pool, with its reward change Δ), prints
the q-weighted within-pool standard deviation of the head's centred log E[u^{N-1} | s + y] (N = 2, 8, 16), the
same for Δ (and Δ/0.3, the tilt recipe's β), and their pooled within-pool correlation. 2 torch threads.
"""

from __future__ import annotations

import argparse

import torch

from agents.tilt.data import Positions
from agents.value.guide import value_deltas
from agents.value.head import load_value_head
from proxy_env.engine.models import as_frozen_lm


def spread(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """(P,) the q-weighted standard deviation of centred values (P, K) within each pool."""
    return (q * x.double() ** 2).sum(-1).sqrt()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--head", default="runs/value/head")
    parser.add_argument("--data", default="runs/tilt/data_32k.pt")
    parser.add_argument("--positions", type=int, default=3000)
    args = parser.parse_args()
    torch.set_num_threads(2)
    lm = as_frozen_lm("default")
    raw = torch.load(args.data, map_location="cpu", weights_only=True)
    data = Positions(**{k: raw[k] for k in Positions._fields if k in raw})
    part = data.take(torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[: args.positions])
    q = part.q().double()
    live = (q > 0).sum(-1) > 1
    head = load_value_head(args.head, lm)
    d = part.delta.double()
    with torch.no_grad():
        for n in (2, 8, 16):
            lw = value_deltas(head, lm, part, n=n, beta=1.0).double()
            sd_v, sd_d = spread(lw, q)[live], spread(d, q)[live]
            corr = (q * lw * d).sum(-1)[live].sum() / (sd_v.pow(2).sum().sqrt() * sd_d.pow(2).sum().sqrt())
            print(
                f"N={n}: within-pool std of log W {sd_v.mean():.4f}; of the myopic Δ {sd_d.mean():.4f} "
                f"(Δ/0.3: {sd_d.mean() / 0.3:.4f}); pooled within-pool corr(log W, Δ) {corr:.3f}; "
                f"{int(live.sum())} positions"
            )


if __name__ == "__main__":
    main()
