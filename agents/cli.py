"""The ``proxy-rlhf`` command."""

from __future__ import annotations

import argparse
import sys


def _demo(args: argparse.Namespace) -> int:
    import gymnasium as gym
    import numpy as np

    import proxy_env

    print(f"loading the embedded default (SmolLM2-135M-Instruct, VADER reward, chatterbot prompts)...", flush=True)
    venv = gym.make_vec(proxy_env.ENV_ID, num_envs=args.num_envs, vectorization_mode="vector_entry_point",
                        prompts="default-eval", max_new_tokens=args.max_new_tokens)
    venv.reset(seed=args.seed)
    rng = np.random.default_rng(args.seed)
    done = 0
    while done < args.episodes:
        actions = (rng.random(args.num_envs) > args.reject_prob).astype(np.int64)
        _, _, terminated, truncated, info = venv.step(actions)
        for i in np.flatnonzero(terminated | truncated):
            final = info["final_info"]
            print(f"\nPROMPT: {final['prompt'][i]}\nRESPONSE: {final['response'][i]}\n"
                  f"reward={final['reward_raw'][i]:+.3f} decisions={final['decisions'][i]} rejections={final['num_rejections'][i]}")
            done += 1
    venv.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="proxy-rlhf", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run a few episodes of the default environment and print them")
    demo.add_argument("--episodes", type=int, default=4, help="episodes to print")
    demo.add_argument("--num-envs", type=int, default=4, help="envs run in parallel")
    demo.add_argument("--max-new-tokens", type=int, default=32, help="response budget")
    demo.add_argument("--reject-prob", type=float, default=0.2, help="probability that the random proxy rejects")
    demo.add_argument("--seed", type=int, default=0, help="seed")
    demo.set_defaults(func=_demo)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
