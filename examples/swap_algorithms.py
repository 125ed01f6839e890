"""Train the same proxy with every registered algorithm and compare them with the non-learning baselines.

    python examples/swap_algorithms.py           # the embedded default LLM (slow on CPU; use a GPU)
    python examples/swap_algorithms.py --tiny    # a tiny random LLM and a few steps: a smoke test (or PROXY_RLHF_TINY=1)

Only the algorithm's name changes between runs: the proxy network (agents/policies.py) and the
environment are the same, plugged in through SB3's ``policy_kwargs``.
"""

import os
import sys

from agents.algos import ALGOS, get_algo
from agents.baselines import AlwaysAccept, RandomReject
from agents.callbacks import evaluate
from agents.train import SB3Config, make_sb3_env, train
from agents.training import env_kwargs, resolve_lm
from proxy_env.config import EnvConfig

tiny = "--tiny" in sys.argv or os.environ.get("PROXY_RLHF_TINY") == "1"
steps = 128 if tiny else 50_000
env = EnvConfig(model="tiny" if tiny else "default", max_new_tokens=8 if tiny else 48)
common = dict(
    env=env,
    num_envs=4 if tiny else 32,
    total_timesteps=steps,
    seed=0,
)
# small budgets need each family's update schedule scaled down: rollouts per env, or replay warm-up and target syncs
on_policy = dict(n_steps=16 if tiny else 256, batch_size=32 if tiny else 512)
off_policy = dict(algo_kwargs=dict(learning_starts=steps // 8, target_update_interval=steps // 16, train_freq=4))

lm = resolve_lm(env.model)  # one frozen LLM shared by every run
eval_env = make_sb3_env({**env_kwargs(SB3Config(**common)), "model": lm, "prompts": "default-eval"}, common["num_envs"])
episodes = 8 if tiny else 128


def report(name, agent):
    eval_env.seed(0)  # the same held-out prompts and sampling noise for every agent
    r = evaluate(agent, eval_env, episodes)
    print(f"{name:<14} {r.mean_reward:+9.3f} {r.rejection_rate:9.3f} {r.response_length:8.1f}", flush=True)


print(f"{'agent':<14} {'reward':>9} {'rejected':>9} {'length':>8}")
report("always-accept", AlwaysAccept())
report("random-0.2", RandomReject(p=0.2, seed=0))
for algo in ALGOS:
    extra = on_policy if get_algo(algo).on_policy else off_policy
    result = train(SB3Config(algo=algo, **common, **extra), model=lm)
    report(algo, result.model)
