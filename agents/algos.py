"""The registry of RL algorithms that can train a proxy: SB3 and sb3-contrib ones with Discrete actions.

>>> get_algo("ppo").policy, get_algo("recurrentppo").recurrent
('MlpPolicy', True)
>>> get_algo("ppo2")
Traceback (most recent call last):
...
proxy_env.errors.ConfigError: algo='ppo2' is not a known algorithm; expected one of ['ppo', 'a2c', 'dqn', 'qrdqn', 'recurrentppo', 'trpo']. Did you mean 'ppo'?
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from proxy_env.errors import ConfigError, MissingDependencyError, did_you_mean


@dataclass(frozen=True)
class AlgoSpec:
    """Where an algorithm lives and how the proxy plugs into it."""

    module: str  # importable module holding the class
    cls: str  # class name
    policy: str  # SB3 policy name used with it
    on_policy: bool  # rollouts of n_steps per env (PPO family) vs a replay buffer (DQN family)
    recurrent: bool = False  # predict() carries an LSTM state
    pip: str = "stable-baselines3"

    def load_class(self) -> Any:
        """Import and return the algorithm class."""
        try:
            module = importlib.import_module(self.module)
        except ImportError as exc:
            raise MissingDependencyError(f"{self.cls} needs the package {self.pip!r}: pip install {self.pip}") from exc
        return getattr(module, self.cls)


ALGOS: dict[str, AlgoSpec] = {
    "ppo": AlgoSpec("stable_baselines3", "PPO", "MlpPolicy", on_policy=True),
    "a2c": AlgoSpec("stable_baselines3", "A2C", "MlpPolicy", on_policy=True),
    "dqn": AlgoSpec("stable_baselines3", "DQN", "MlpPolicy", on_policy=False),
    "qrdqn": AlgoSpec("sb3_contrib", "QRDQN", "MlpPolicy", on_policy=False, pip="sb3-contrib"),
    "recurrentppo": AlgoSpec(
        "sb3_contrib", "RecurrentPPO", "MlpLstmPolicy", on_policy=True, recurrent=True, pip="sb3-contrib"
    ),
    "trpo": AlgoSpec("sb3_contrib", "TRPO", "MlpPolicy", on_policy=True, pip="sb3-contrib"),
}


def get_algo(name: str) -> AlgoSpec:
    """The :class:`AlgoSpec` registered as ``name`` (case-insensitive); a did-you-mean error otherwise."""
    key = name.lower() if isinstance(name, str) else name
    if key not in ALGOS:
        raise ConfigError(
            f"algo={name!r} is not a known algorithm; expected one of {list(ALGOS)}." + did_you_mean(name, ALGOS)
        )
    return ALGOS[key]


def algo_name(model: Any) -> str:
    """The registry name of a trained SB3 model's class (``PPO`` -> ``"ppo"``)."""
    cls = type(model).__name__
    for name, spec in ALGOS.items():
        if spec.cls == cls:
            return name
    raise ConfigError(
        f"model of type {cls} is not a registered algorithm; expected one of {[s.cls for s in ALGOS.values()]}."
    )
