"""Validated keyword arguments of the environment (plain data: safe to register and deep-copy)."""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field, fields
from enum import Enum, IntEnum
from typing import Any

import numpy as np
from gymnasium import logger
from gymnasium.vector import AutoresetMode

from proxy_env.errors import ActionError, ConfigError, ConfigTypeError, check_choice, did_you_mean

ORDERS = ("sample", "greedy")
OBSERVATIONS = ("candidate", "candidate_stats", "prefix")
RENDER_MODES = ("ansi",)
NUM_STATS = 3  # extra features of observation="candidate_stats"
NUM_PREFIX_STATS = 2  # log-probabilities after the three hidden-size blocks of observation="prefix"


def prefix_dim(hidden_size: int) -> int:
    """Size of an ``observation="prefix"`` vector: ``[h, e, ē, log p, log q]``."""
    return 3 * hidden_size + NUM_PREFIX_STATS


class Action(IntEnum):
    """The proxy's decision about the candidate on offer."""

    REJECT = 0
    ACCEPT = 1


def _setting(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True, kw_only=True)
class EnvConfig:
    """The env's settings: the one declaration of each keyword argument, its default and its help.

    The env's constructor, its registration, ``proxy-rlhf train``'s flags, saved proxy folders and the
    docstring's argument table are all derived from these fields. ``model``, ``reward`` and ``prompts``
    are names or paths on the command line and in saved folders; the env also takes objects for them.
    """

    model: Any = _setting(
        "default",
        "frozen LLM: 'default' (SmolLM2-135M-Instruct), 'tiny' (random, for tests), a hub id, a path or a FrozenLM",
    )
    reward: Any = _setting(
        "default",
        "reward: 'default' (VADER positivity), 'pairwise' (LLM judge vs the unsteered response), a callable "
        "(prompts, responses) -> floats, an `rm train` folder, or a reward-model id or path",
    )
    prompts: Any = _setting(
        "default", "prompts: 'default', 'default-eval', a list of strings, a .txt/.jsonl file or a datasets folder"
    )
    max_new_tokens: int = _setting(48, "response budget in tokens")
    top_k: int = _setting(50, "the pool: top-k (ties with the k-th score are kept, as Hugging Face does)")
    top_p: float = _setting(0.95, "the pool: top-p (1.0 truncates nothing)")
    temperature: float = _setting(1.0, "the pool: temperature")
    max_rejections: int | None = _setting(None, "rejections allowed per position (None: pool size - 1)")
    order: str = _setting(
        "sample", "candidate order: 'sample' (the LLM's own sampling order) or 'greedy' (descending probability)"
    )
    observation: str = _setting(
        "candidate",
        "'candidate' (the candidate's hidden state: one LLM forward per decision), 'candidate_stats' (+ its "
        "log-probabilities and offer index) or 'prefix' (the prefix's hidden state + the candidate's embedding and "
        "log-probabilities: no forward on a rejection; needed by kl_coef)",
    )
    hidden_layer: int = _setting(-1, "which hidden state the proxy sees (an index into hidden_states; -1 is the last)")
    forced_steps: bool = _setting(
        False,
        "offer a forced candidate (one-token pool, or the rejection cap) as a step whose action is ignored: one LLM forward per step",
    )
    reward_baseline: str | None = _setting(
        None, "subtracted from the terminal reward: None, or 'reference' (the reward of the LLM's own greedy response)"
    )
    reward_shaping: bool = _setting(
        False, "pay the reward of the response so far as it changes (potential-based: the same return)"
    )
    reward_workers: int = _setting(
        0,
        "score finished responses in this many worker processes (a reward named by a string, e.g. 'vader'); "
        "0 scores in the env's process",
    )
    kl_coef: float = _setting(
        0.0,
        "β of the per-token KL charge β·(log π − log q) under the proxy's accept probabilities ('prefix' only; needs set_accept_fn)",
    )

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> EnvConfig:
        """An EnvConfig from keyword arguments; an unknown name is refused with the closest valid one."""
        names = [f.name for f in fields(cls)]
        for key in kwargs:
            if key not in names:
                # Python's own wording: libraries retry without a keyword on exactly this message (TorchRL's frameskip)
                raise ConfigTypeError(
                    f"got an unexpected keyword argument {key!r}: it is not a setting of the env."
                    + did_you_mean(key, names)
                    + f" Its settings: {names}."
                )
        return cls(**kwargs)

    def kwargs(self) -> dict[str, Any]:
        """The settings as keyword arguments (values as given: a model object stays that object)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def __post_init__(self) -> None:
        _int("max_new_tokens", self.max_new_tokens, minimum=1)
        _int("hidden_layer", self.hidden_layer)
        if self.max_rejections is not None:
            _int("max_rejections", self.max_rejections, minimum=0, hint="or None (= pool size - 1)")
        check_pool(self.top_k, self.top_p, self.temperature, min_top_k=2)
        if not isinstance(self.forced_steps, bool):
            raise ConfigTypeError(
                f"forced_steps={self.forced_steps!r} must be a bool (True: a forced candidate is a step whose action is ignored)."
            )
        if not isinstance(self.reward_shaping, bool):
            raise ConfigTypeError(
                f"reward_shaping={self.reward_shaping!r} must be a bool (True: potential-based shaping by the reward so far)."
            )
        _int("reward_workers", self.reward_workers, minimum=0, hint="0 scores in the env's process")
        if not _real(self.kl_coef) or self.kl_coef < 0.0:
            raise ConfigError(f"kl_coef={self.kl_coef!r} must be a finite float >= 0 (0 disables the KL penalty).")
        check_choice("order", self.order, ORDERS)
        check_choice("observation", self.observation, OBSERVATIONS)
        if self.kl_coef > 0 and self.observation != "prefix":
            raise ConfigError(
                f"kl_coef={self.kl_coef} needs observation='prefix' (got {self.observation!r}): the penalty needs the accept "
                "probability of every pool candidate, which only 'prefix' gives without an LLM forward per candidate."
            )
        if self.reward_baseline is not None and self.reward_baseline != "reference":
            raise ConfigError(
                f"reward_baseline={self.reward_baseline!r} must be None or 'reference'; a constant baseline moves no "
                "policy gradient in expectation (a critic learns it): drop it, or wrap the env in Gymnasium's "
                "TransformReward." + did_you_mean(str(self.reward_baseline), ["reference"])
            )


def check_pool(top_k: object, top_p: object, temperature: object, *, min_top_k: int = 1) -> None:
    """The pool's settings (what every sampler of this package truncates with), each refused with its fix.

    The env needs ``top_k >= 2`` (one candidate leaves the proxy no choice); a plain sampler takes 1.
    """
    _int("top_k", top_k, minimum=min_top_k, hint="(top_k=1 leaves the proxy no choice)" if min_top_k > 1 else "")
    if not _real(top_p) or not 0.0 < top_p <= 1.0:  # type: ignore[operator]
        raise ConfigError(f"top_p={top_p!r} must be a float in (0, 1]; 1.0 disables nucleus truncation.")
    if not _real(temperature) or not temperature > 0.0:  # type: ignore[operator]
        raise ConfigError(f"temperature={temperature!r} must be a float > 0; use order='greedy' for greedy decoding.")


def _real(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _int(name: str, value: object, minimum: int | None = None, hint: str = "") -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigTypeError(f"{name}={value!r} must be an int {hint}".rstrip() + ".")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name}={value} must be >= {minimum} {hint}".rstrip() + ".")


def check_render_mode(render_mode: object) -> str | None:
    """The ``render_mode`` to use: None or one of :data:`RENDER_MODES`.

    A mode the env cannot draw (``"rgb_array"``, ``"human"``) is accepted and ignored with a
    warning, as ``gym.make`` does: SB3's ``make_vec_env`` passes ``render_mode="rgb_array"`` to every
    env and retries without it only on ``TypeError``. It is ignored (None), not kept, so that
    ``render()`` returning None is what ``render_mode`` says.
    """
    if render_mode is None or render_mode in RENDER_MODES:
        return render_mode
    if not isinstance(render_mode, str):
        raise ConfigTypeError(f"render_mode={render_mode!r} must be None or a string; supported: {list(RENDER_MODES)}.")
    logger.warn(
        f"render_mode={render_mode!r} is not supported (supported: None, {', '.join(map(repr, RENDER_MODES))}); "
        "it is ignored and render() returns None. Pass render_mode='ansi' for text frames."
        + did_you_mean(render_mode, RENDER_MODES)
    )
    return None


def check_info_text(info_text: object) -> bool:
    """Validate ``info_text`` (a bool)."""
    if not isinstance(info_text, (bool, np.bool_)):
        raise ConfigTypeError(
            f"info_text={info_text!r} must be a bool: True adds the text fields (token, prompt, response, "
            "response_ids) to info; False, the default, keeps every info entry numeric."
        )
    return bool(info_text)


def check_actions(actions: object, num_envs: int) -> np.ndarray:
    """``step``'s actions as an int64 array (num_envs,) of 0/1; (num_envs, 1) and tensors are accepted."""
    if getattr(getattr(actions, "device", None), "type", None) == "meta":
        raise ActionError("actions are a tensor on the 'meta' device, which holds no values; pass real actions.")
    array = np.asarray(
        actions.detach().cpu() if hasattr(actions, "detach") else actions
    )  # a torch tensor, on any device
    if array.shape == (num_envs, 1):
        array = array[:, 0]
    if array.shape != (num_envs,):
        raise ActionError(f"actions must have shape ({num_envs},), got {array.shape}.")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.bool_)):
        raise ActionError(f"actions must be integers (REJECT=0, ACCEPT=1), got dtype {array.dtype}.")
    if ((array != 0) & (array != 1)).any():
        raise ActionError(f"actions must be 0 (REJECT) or 1 (ACCEPT), got values {sorted(set(array.tolist()))}.")
    return array.astype(np.int64)


def check_autoreset_mode_arg(mode: AutoresetMode | str) -> AutoresetMode:
    """The env's ``autoreset_mode`` argument (an :class:`AutoresetMode` or its name, any case) as an AutoresetMode."""
    if isinstance(mode, AutoresetMode):
        return mode
    names = {m.name.lower(): m for m in AutoresetMode} | {m.value: m for m in AutoresetMode}
    if isinstance(mode, str) and mode.lower() in names:
        return names[mode.lower()]
    raise ConfigError(
        f"autoreset_mode={mode!r} is not valid; expected one of {[m.name for m in AutoresetMode]}."
        + did_you_mean(mode, names)
    )


def settings_table(signature: inspect.Signature, runtime_help: dict[str, str], *, indent: str = "") -> str:
    """The env's argument table (markdown): the constructor's own arguments, then every :class:`EnvConfig` field.

    Generated, so the docstring cannot drift from the defaults: ``signature`` gives the defaults,
    ``runtime_help`` the meaning of the arguments that are not settings, each field's metadata the rest.
    """
    rows = ["| argument | default | meaning |", "|---|---|---|"]
    params = signature.parameters
    for name, text in runtime_help.items():
        default = params[name].default
        shown = default.name if isinstance(default, Enum) else repr(default)
        rows.append(f"| ``{name}`` | ``{shown}`` | {text} |")
    for f in fields(EnvConfig):
        rows.append(f"| ``{f.name}`` | ``{f.default!r}`` | {f.metadata['help']} |")
    return f"\n{indent}".join(rows)
