"""Generate aligned responses with a trained proxy, next to the frozen LLM alone and best-of-N sampling.

python examples/generate.py --checkpoint checkpoints/ppo "Tell me a joke."
python examples/generate.py --tiny     # trains a throwaway proxy on a tiny random LLM first (or PROXY_RLHF_TINY=1)
"""

import argparse
import os
import tempfile

from agents.baselines import AlwaysAccept, best_of_n
from agents.generate import ProxyGenerator
from agents.train import SB3Config, train
from proxy_env.config import EnvConfig
from proxy_env.rewards import VaderReward

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("prompts", nargs="*", default=["What is your favourite book?", "How was your day?"])
parser.add_argument(
    "--checkpoint", help="a checkpoint folder (proxy-rlhf train --save-dir); default: train a quick one"
)
parser.add_argument("--tiny", action="store_true", help="tiny random LLM, a few training steps")
parser.add_argument("--n", type=int, default=4, help="samples for best-of-N")
args = parser.parse_args()
tiny = args.tiny or os.environ.get("PROXY_RLHF_TINY") == "1"

checkpoint = args.checkpoint
if checkpoint is None:  # a throwaway proxy, so the example runs on its own
    checkpoint = os.path.join(tempfile.mkdtemp(), "proxy")
    train(
        SB3Config(
            env=EnvConfig(model="tiny" if tiny else "default", max_new_tokens=8 if tiny else 32),
            num_envs=4,
            total_timesteps=128 if tiny else 4096,
            n_steps=32,
            batch_size=64,
            save_dir=checkpoint,
        )
    )

proxy = ProxyGenerator.from_checkpoint(checkpoint)
frozen = ProxyGenerator(proxy.lm, AlwaysAccept(), **proxy.env_kwargs)  # same pool, no proxy
reward = VaderReward()
best = best_of_n(proxy.lm, reward, args.prompts, n=args.n, max_new_tokens=proxy.env_kwargs.get("max_new_tokens", 48))
for p, a, f, b in zip(args.prompts, proxy.generate(args.prompts), frozen.generate(args.prompts), best):
    print(f"\nPROMPT: {p}")
    print(f"  frozen LLM   [{reward([p], [f.text])[0]:+.2f}] {f.text!r}")
    print(f"  proxy        [{reward([p], [a.text])[0]:+.2f}] {a.text!r}  ({a.rejections}/{a.decisions} rejected)")
    print(f"  best-of-{args.n:<4} [{b.reward:+.2f}] {b.text!r}")
