"""Throughput of the env through each RL library's documented entry point, beside the bare env's.

    python benchmarks/bench_clients.py                  # tiny model, 8 envs, 1 torch thread
    python benchmarks/bench_clients.py --steps 400

Steps are env transitions (num_envs per vector step). Rollout rows take random actions (30%
rejections, the same seeded draws in every row) through the client's env interface; training rows
run PPO in the library, updates included. Every row starts from seed 0. The rows are measured
round-robin ``--repeats`` times (so a busy spell of another process hits all rows alike) and each
shows its best run, after one discarded warm-up run of the bare env. The task keeps every position a decision (``top_k=5, top_p=1.0``: full pools, so
almost no forced commits on the tiny model) and scores with a constant reward, so the figures
measure the env and the client, not the reward model. Libraries that are not installed are
skipped (``pip install -e '.[clients]'``).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, fields

import gymnasium as gym
import numpy as np
import torch

import proxy_env
from proxy_env.engine.tiny import tiny_lm


@dataclass
class Args:
    num_envs: int = 8  # envs per vector env
    steps: int = 200  # timed vector steps per rollout row
    train_steps: int = 4096  # env transitions per training row
    repeats: int = 3  # each row is the best of this many runs (other processes on a shared machine only slow it)
    threads: int = 1  # torch CPU threads


def _zero_reward(prompts: list[str], responses: list[str]) -> list[float]:
    return [0.0] * len(responses)


def env_kwargs(lm) -> dict:
    return dict(model=lm, prompts="default-eval", max_new_tokens=48, top_k=5, top_p=1.0, reward=_zero_reward)


def make(lm, n: int, mode: str = "same_step"):
    return gym.make_vec(
        proxy_env.ENV_ID, num_envs=n, vectorization_mode="vector_entry_point", autoreset_mode=mode, **env_kwargs(lm)
    )


def _timed(step: Callable[[np.ndarray], None], n: int, steps: int, warmup: int = 10) -> float:
    """Env transitions per second of ``step(actions)`` over ``steps`` vector steps after ``warmup``."""
    rng = np.random.default_rng(0)
    for _ in range(warmup):
        step((rng.random(n) > 0.3).astype(np.int64))
    start = time.perf_counter()
    for _ in range(steps):
        step((rng.random(n) > 0.3).astype(np.int64))
    return n * steps / (time.perf_counter() - start)


def bare(lm, args: Args, mode: str) -> float:
    venv = make(lm, args.num_envs, mode)
    venv.reset(seed=0)
    done = np.zeros(args.num_envs, bool)

    def step(actions):
        nonlocal done
        if mode == "disabled" and done.any():
            venv.reset(options={"reset_mask": done})
        *_, terminated, truncated, _ = venv.step(actions)
        done = terminated | truncated

    return _timed(step, args.num_envs, args.steps)


def gymnasium_wrapper(name: str) -> Callable[[object, Args], float]:
    def run(lm, args: Args) -> float:
        from gymnasium.wrappers import vector as wrappers

        env = getattr(wrappers, name)(make(lm, args.num_envs, "next_step"))
        env.reset(seed=0)
        as_torch = name == "NumpyToTorch"
        return _timed(lambda a: env.step(torch.as_tensor(a) if as_torch else a), args.num_envs, args.steps)

    return run


def sb3_vecnormalize(lm, args: Args) -> float:
    from stable_baselines3.common.vec_env import VecNormalize

    from proxy_env.adapters.sb3 import SB3VecEnv

    env = VecNormalize(SB3VecEnv(make(lm, args.num_envs)))
    env.seed(0)  # the bare env's seeds: the same episodes
    env.reset()
    return _timed(env.step, args.num_envs, args.steps)


def sb3_make_vec_env(lm, args: Args) -> float:
    from stable_baselines3.common.env_util import make_vec_env

    with warnings.catch_warnings():  # make_vec_env passes render_mode="rgb_array", which the env ignores
        warnings.simplefilter("ignore")
        env = make_vec_env(proxy_env.ENV_ID, n_envs=args.num_envs, seed=0, env_kwargs=env_kwargs(lm))
    env.reset()
    return _timed(env.step, args.num_envs, args.steps)


def sb3_ppo(lm, args: Args) -> float:
    from stable_baselines3 import PPO

    from proxy_env.adapters.sb3 import SB3VecEnv

    model = PPO(
        "MlpPolicy", SB3VecEnv(make(lm, args.num_envs)), n_steps=64, batch_size=128, n_epochs=4, seed=0, device="cpu"
    )
    model.learn(args.num_envs * 64)  # warm-up rollout and update
    start = time.perf_counter()
    model.learn(args.train_steps, reset_num_timesteps=False)
    return args.train_steps / (time.perf_counter() - start)


def skrl_rollout(lm, args: Args) -> float:
    from skrl.envs.wrappers.torch import wrap_env

    env = wrap_env(make(lm, args.num_envs), wrapper="gymnasium", verbose=False)
    env.reset()
    return _timed(lambda a: env.step(torch.as_tensor(a).view(-1, 1)), args.num_envs, args.steps)


def _skrl_mlp(env, out: int) -> torch.nn.Module:
    """SB3's MlpPolicy default network (64, 64, tanh), for a like-for-like training row."""
    return torch.nn.Sequential(
        torch.nn.Linear(env.observation_space.shape[0], 64),
        torch.nn.Tanh(),
        torch.nn.Linear(64, 64),
        torch.nn.Tanh(),
        torch.nn.Linear(64, out),
    )


def skrl_ppo(lm, args: Args) -> float:
    import tempfile

    from skrl.agents.torch.ppo import PPO, PPO_CFG
    from skrl.envs.wrappers.torch import wrap_env
    from skrl.memories.torch import RandomMemory
    from skrl.models.torch import CategoricalMixin, DeterministicMixin, Model
    from skrl.trainers.torch import SequentialTrainer

    env = wrap_env(make(lm, args.num_envs), wrapper="gymnasium", verbose=False)

    class Policy(CategoricalMixin, Model):
        def __init__(self):
            Model.__init__(
                self, observation_space=env.observation_space, action_space=env.action_space, device=env.device
            )
            CategoricalMixin.__init__(self)
            self.net = _skrl_mlp(env, self.num_actions)

        def compute(self, inputs, role=""):
            return self.net(inputs["observations"]), {}

    class Value(DeterministicMixin, Model):
        def __init__(self):
            Model.__init__(
                self, observation_space=env.observation_space, action_space=env.action_space, device=env.device
            )
            DeterministicMixin.__init__(self)
            self.net = _skrl_mlp(env, 1)

        def compute(self, inputs, role=""):
            return self.net(inputs["observations"]), {}

    cfg = PPO_CFG(rollouts=64, learning_epochs=4, mini_batches=4)
    cfg.experiment.directory, cfg.experiment.write_interval, cfg.experiment.checkpoint_interval = (
        tempfile.mkdtemp(),
        0,
        0,
    )
    agent = PPO(
        models={"policy": Policy(), "value": Value()},
        observation_space=env.observation_space,
        memory=RandomMemory(memory_size=64, num_envs=env.num_envs, device=env.device),
        action_space=env.action_space,
        device=env.device,
        cfg=cfg,
    )
    timesteps = args.train_steps // args.num_envs
    trainer = SequentialTrainer(
        env=env,
        agents=agent,
        cfg={"timesteps": timesteps, "disable_progressbar": True, "close_environment_at_exit": False},
    )
    start = time.perf_counter()
    trainer.train()
    return timesteps * args.num_envs / (time.perf_counter() - start)


def torchrl_rollout(lm, args: Args) -> float:
    from torchrl.envs import GymWrapper

    env = GymWrapper(make(lm, args.num_envs, "disabled"))
    env.set_seed(0)
    env.rollout(10, break_when_any_done=False)
    start = time.perf_counter()
    env.rollout(args.steps, break_when_any_done=False)
    return args.num_envs * args.steps / (time.perf_counter() - start)


def torchrl_gym_env(lm, args: Args) -> float:
    """TorchRL's multi-process path: one single env (and one tiny LLM) per AsyncVectorEnv worker."""
    from torchrl.envs import GymEnv

    kwargs = {**env_kwargs(lm), "model": "tiny"}  # plain data: each spawned worker builds its own model
    env = GymEnv(f"proxy_env:{proxy_env.ENV_ID}", num_envs=args.num_envs, **kwargs)
    try:
        env.set_seed(0)
        env.rollout(10, break_when_any_done=False)
        start = time.perf_counter()
        env.rollout(args.steps, break_when_any_done=False)
        return args.num_envs * args.steps / (time.perf_counter() - start)
    finally:
        env.close()


# (client, autoreset mode, what runs, the module it needs, the measurement)
ROWS: list[tuple[str, str, str, str | None, Callable[[object, Args], float]]] = [
    ("bare env", "SAME_STEP", "venv.step, random actions", None, lambda lm, a: bare(lm, a, "same_step")),
    ("bare env", "NEXT_STEP", "venv.step, random actions", None, lambda lm, a: bare(lm, a, "next_step")),
    (
        "bare env",
        "DISABLED",
        "venv.step + reset(reset_mask), random actions",
        None,
        lambda lm, a: bare(lm, a, "disabled"),
    ),
    *[
        (
            f"Gymnasium {w}",
            "NEXT_STEP",
            "wrapped step, random actions",
            "array_api_compat" if w == "NumpyToTorch" else None,
            gymnasium_wrapper(w),
        )
        for w in (
            "RecordEpisodeStatistics",
            "NormalizeObservation",
            "NormalizeReward",
            "NumpyToTorch",
            "DictInfoToList",
        )
    ],
    ("SB3 SB3VecEnv + VecNormalize", "SAME_STEP", "VecEnv.step, random actions", None, sb3_vecnormalize),
    ("SB3 make_vec_env (8 single envs)", "(single envs)", "DummyVecEnv.step, random actions", None, sb3_make_vec_env),
    ("SB3 PPO on SB3VecEnv", "SAME_STEP", "PPO.learn (MlpPolicy), updates included", None, sb3_ppo),
    ("skrl wrap_env", "SAME_STEP", "wrapper.step, random actions", "skrl", skrl_rollout),
    ("skrl PPO", "SAME_STEP", "SequentialTrainer.train (64-64 MLP), updates included", "skrl", skrl_ppo),
    ("TorchRL GymWrapper", "DISABLED", "env.rollout, random policy", "torchrl", torchrl_rollout),
    (
        "TorchRL GymEnv(id, num_envs=8): 8 worker processes",
        "(single envs)",
        "env.rollout, random policy",
        "torchrl",
        torchrl_gym_env,
    ),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in fields(Args):
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=int, default=f.default)
    args = Args(**vars(parser.parse_args()))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    lm = tiny_lm()
    bare(lm, args, "same_step")  # warm-up: first forwards, allocator
    print(
        f"CPU, {args.threads} torch thread(s); Python {platform.python_version()}, torch {torch.__version__}; "
        f"tiny model, {args.num_envs} envs, {env_kwargs(lm)['max_new_tokens']}-token responses, top_k=5, top_p=1.0"
    )
    rows = [row for row in ROWS if row[3] is None or importlib.util.find_spec(row[3]) is not None]
    runs: dict[int, list[float]] = {i: [] for i in range(len(rows))}
    for _ in range(args.repeats):
        for i, (*_, measure) in enumerate(rows):
            runs[i].append(measure(lm, args))
    best = {i: max(r) for i, r in runs.items()}
    bare_rates = {row[1]: best[i] for i, row in enumerate(rows) if row[0] == "bare env"}
    print("| client | autoreset mode | what runs | steps/s (best of runs) | runs | vs bare (same mode) |")
    print("|---|---|---|---|---|---|")
    for i, (client, mode, what, _, _) in enumerate(rows):
        base = bare_rates.get(mode, bare_rates["SAME_STEP"])
        spread = ", ".join(f"{r:,.0f}" for r in runs[i])
        print(f"| {client} | {mode} | {what} | {best[i]:,.0f} | {spread} | {best[i] / base:.2f} |")
    for client, _, _, needs, _ in ROWS:
        if needs is not None and importlib.util.find_spec(needs) is None:
            print(f"skipped {client}: pip install -e '.[clients]'")


if __name__ == "__main__":
    main()
