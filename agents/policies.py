"""The proxy network: a small features extractor over frozen-LLM hidden states, plugged into SB3.

The proxy is what Proxy-RLHF trains instead of the LLM: a LayerNorm over the hidden state (whose
scale differs wildly between models and layers), one linear projection to ``features_dim`` and a
small MLP head per output (policy / value or Q), configured through SB3's ``policy_kwargs``.

>>> kwargs = proxy_policy_kwargs("ppo")
>>> kwargs["features_extractor_kwargs"], kwargs["net_arch"]
({'features_dim': 64}, [64])
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from agents.algos import get_algo
from proxy_env.errors import ConfigError

# modules that are copies of the trained network, updated by polyak averaging, not by gradients
_TARGET_MARKERS = ("target",)


class HiddenStateExtractor(BaseFeaturesExtractor):
    """LayerNorm over the LLM hidden state, then ``Linear(d, features_dim)`` and an activation.

    Args:
        observation_space: ``Box((d,), float32)`` of hidden states (plus optional stats).
        features_dim: width of the features the policy and value heads read.
        activation: ``"tanh"`` or ``"relu"``.
    """

    def __init__(self, observation_space: spaces.Box, features_dim: int = 64, activation: str = "tanh") -> None:
        if len(observation_space.shape) != 1:
            raise ConfigError(
                f"HiddenStateExtractor needs flat observations (d,), got shape {observation_space.shape}."
            )
        if activation not in ("tanh", "relu"):
            raise ConfigError(f"activation={activation!r} is not supported; expected 'tanh' or 'relu'.")
        super().__init__(observation_space, features_dim)
        d = int(observation_space.shape[0])
        self.net = nn.Sequential(
            nn.LayerNorm(d),
            nn.Linear(d, features_dim),
            nn.Tanh() if activation == "tanh" else nn.ReLU(),
        )

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.net(observations.float())  # (B, d) -> (B, features_dim)


def proxy_policy_kwargs(
    algo: str = "ppo", *, features_dim: int = 64, hidden: tuple[int, ...] = (64,), activation: str = "tanh"
) -> dict[str, Any]:
    """``policy_kwargs`` that make any SB3 policy a Proxy-RLHF proxy.

    Args:
        algo: registry name of the algorithm (``"ppo"``, ``"dqn"``, ``"recurrentppo"``...); recurrent
            ones get an LSTM of width ``features_dim``.
        features_dim: width of :class:`HiddenStateExtractor`'s output.
        hidden: hidden layer widths of each head (policy, value, or Q-network).
        activation: ``"tanh"`` or ``"relu"``.
    """
    if features_dim < 1 or any(h < 1 for h in hidden):
        raise ConfigError(f"features_dim={features_dim}, hidden={hidden}: widths must be >= 1.")
    kwargs: dict[str, Any] = {
        "features_extractor_class": HiddenStateExtractor,
        "features_extractor_kwargs": {"features_dim": features_dim},
        "net_arch": list(hidden),
    }
    if activation != "tanh":
        kwargs["features_extractor_kwargs"]["activation"] = activation
    if get_algo(algo).recurrent:
        kwargs["lstm_hidden_size"] = features_dim
    return kwargs


class ParamReport(NamedTuple):
    """Trainable parameters of the proxy next to the frozen LLM's."""

    proxy: int
    llm: int

    @property
    def ratio(self) -> float:
        """``proxy / llm`` (the paper's claim is about 1%)."""
        return self.proxy / self.llm if self.llm else float("inf")

    def __str__(self) -> str:
        return f"proxy {self.proxy:,} trainable params = {100 * self.ratio:.3f}% of the LLM's {self.llm:,}"


def count_trainable(model: BaseAlgorithm | nn.Module) -> int:
    """Parameters trained by gradient in ``model``'s policy; target networks (DQN's copies) excluded."""
    module = model.policy if isinstance(model, BaseAlgorithm) else model
    seen: set[int] = set()
    total = 0
    for name, param in module.named_parameters():
        if not param.requires_grad or any(m in name.split(".")[0] for m in _TARGET_MARKERS) or id(param) in seen:
            continue
        seen.add(id(param))
        total += param.numel()
    return total


def param_report(model: BaseAlgorithm | nn.Module, llm_params: int) -> ParamReport:
    """Count ``model``'s trainable proxy parameters and pair them with the LLM's ``llm_params``.

    Args:
        model: an SB3 algorithm (its policy is counted) or a module.
        llm_params: the frozen LLM's parameter count (``FrozenLM.num_parameters``).
    """
    return ParamReport(count_trainable(model), int(llm_params))


def init_accept_bias(agent: Any, accept_prob: float) -> bool:
    """Start an actor-critic proxy at ``P(ACCEPT) = accept_prob`` whatever the observation.

    The proxy then begins close to the unsteered LLM (as RLHF starts from the SFT model) and learns
    which tokens to reject, instead of starting as a coin flip that rejects half of all tokens.
    The action head's weights are zeroed and its bias set to the log-odds. Returns False (and
    changes nothing) for agents without an ``action_net`` (value-based ones such as DQN).
    """
    import math

    import torch

    if not 0.0 < accept_prob < 1.0:
        raise ConfigError(f"accept_prob={accept_prob!r} must be in (0, 1); 0.5 is the usual uniform start.")
    head = getattr(getattr(agent, "policy", None), "action_net", None)
    if not isinstance(head, torch.nn.Linear) or head.out_features != 2:
        return False
    with torch.no_grad():
        head.weight.mul_(0.01)
        head.bias.copy_(torch.tensor([0.0, math.log(accept_prob / (1.0 - accept_prob))]))
    return True


def fresh_ppo_proxy(observation_space: Any, cfg: Any, *, learning_rate: float, n_epochs: int) -> Any:
    """An SB3 PPO without an env holding a fresh proxy: the network (and checkpoint) of backends with their own loop.

    ``cfg`` is a training config (:class:`agents.training.RLConfig`): its ``features_dim``, ``hidden``,
    ``policy_device``, ``gamma`` and ``init_accept_prob`` (the accept bias) shape the proxy. The backend updates
    ``model.policy``'s tensors itself; saved, the model is an ordinary SB3 proxy checkpoint.
    """
    from stable_baselines3 import PPO

    model = PPO(
        "MlpPolicy",
        None,  # type: ignore[arg-type]  # no env: SB3's own load() builds a model this way
        policy_kwargs=proxy_policy_kwargs("ppo", features_dim=cfg.features_dim, hidden=tuple(cfg.hidden)),
        device=cfg.policy_device,
        gamma=cfg.gamma,
        learning_rate=learning_rate,
        n_epochs=n_epochs,
        _init_setup_model=False,
    )
    model.observation_space, model.action_space, model.n_envs = observation_space, spaces.Discrete(2), 1
    model._setup_model()  # what SB3's load() does for a model without an env
    if cfg.init_accept_prob is not None:
        init_accept_bias(model, cfg.init_accept_prob)
    return model


def copy_policy(agent: Any, source: Any, *, where: str, source_algo: str, algo: str) -> None:
    """Copy ``source``'s policy weights into the fresh ``agent`` (``train --init-from``; ``where`` names the folder).

    Raises :class:`ConfigError` naming what to pass when the architectures differ (another algorithm's policy, another
    observation or width).
    """
    try:
        agent.policy.load_state_dict(source.policy.state_dict())
    except RuntimeError as exc:  # missing keys or other shapes
        raise ConfigError(
            f"{where} holds a {source_algo!r} policy that does not fit this run's {algo!r} one "
            f"({str(exc).splitlines()[0]}); pass the checkpoint's own --observation, --features-dim and --hidden "
            "and an algorithm with the same policy (ppo, a2c and trpo share theirs)."
        ) from exc
