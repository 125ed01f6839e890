"""Train a proxy with PPO (frozen SmolLM2-135M-Instruct, VADER positivity reward), then generate with it.

python examples/train_ppo.py           # the embedded default LLM; TensorBoard logs in ./runs
python examples/train_ppo.py --tiny    # a tiny random LLM and a few steps: a smoke test (or PROXY_RLHF_TINY=1)
"""

import os
import sys

from agents.generate import ProxyGenerator
from agents.train import SB3Config, train
from proxy_env.config import EnvConfig

tiny = "--tiny" in sys.argv or os.environ.get("PROXY_RLHF_TINY") == "1"
cfg = SB3Config(
    env=EnvConfig(model="tiny" if tiny else "default", max_new_tokens=8 if tiny else 48),
    algo="ppo",
    num_envs=4 if tiny else 32,
    total_timesteps=256 if tiny else 200_000,
    n_steps=32 if tiny else 256,
    batch_size=64 if tiny else 512,
    eval_freq=0 if tiny else 20_000,
    tensorboard_log=None if tiny else "runs",
    save_dir="checkpoints/ppo",
    progress_bar=True,
)
result = train(cfg)
print(result.params, f"\ncheckpoint: {result.checkpoint}")
for g in ProxyGenerator.from_checkpoint(result.checkpoint).generate(
    ["What is your favourite book?", "Tell me a joke."]
):
    print(f"\nPROMPT: {g.prompt}\nRESPONSE: {g.text!r}\n({g.rejections} of {g.decisions} candidates rejected)")
