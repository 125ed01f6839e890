"""The project's error hierarchy.

Every error raised for bad user input derives from :class:`ProxyEnvError` and, where it fits, from
the matching built-in (``ValueError``, ``TypeError``, ``RuntimeError``), so callers can catch
either. Messages say what was received, why it is wrong and how to fix it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ProxyEnvError(Exception):
    """Root of every error raised by ``proxy_env`` and ``agents``."""


class ConfigError(ProxyEnvError, ValueError):
    """An argument has an invalid value."""


class ConfigTypeError(ProxyEnvError, TypeError):
    """An argument has an invalid type."""


class AutoresetModeError(ConfigError):
    """A vector env's ``autoreset_mode`` is not the one its client needs (each RL library needs one, and few check)."""


class ModelNotFoundError(ConfigError):
    """A model id or path names nothing that can be loaded (offline: nothing is downloaded)."""


class RewardError(ProxyEnvError, ValueError):
    """A reward source returned something that is not one finite float per response."""


class ActionError(ProxyEnvError, ValueError):
    """An action batch has the wrong shape, dtype or values."""


class StateError(ProxyEnvError, RuntimeError):
    """A method was called in a state where it is not allowed (e.g. ``step`` before ``reset``)."""


class DataError(ProxyEnvError, ValueError):
    """A data file (prompts, preferences, checkpoint) is malformed."""


class MissingDependencyError(ProxyEnvError, ImportError):
    """An optional dependency is not installed."""


class OutputPathError(ConfigError):
    """An output path (``--save-dir``, ``--out``) cannot be written without destroying what is there."""


class FolderInUseError(StateError):
    """Another process holds the lock of an output folder (two runs writing one ``--save-dir``)."""


def did_you_mean(value: object, choices: Iterable[str]) -> str:
    """Return ``" Did you mean 'x'?"`` for the closest choice, or ``""`` when none is close."""
    matches = difflib.get_close_matches(str(value), list(choices), n=1, cutoff=0.5)
    return f" Did you mean {matches[0]!r}?" if matches else ""


def check_choice(name: str, value: object, choices: Iterable[str]) -> str:
    """Validate that ``value`` is one of ``choices``; raise :class:`ConfigError` naming the argument."""
    choices = list(choices)
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(
            f"{name}={value!r} is not a valid choice; expected one of {choices}." + did_you_mean(value, choices)
        )
    return value


def check_autoreset_mode(client: str, mode: object, expected: object, why: str) -> None:
    """Raise :class:`AutoresetModeError` unless a vector env's ``metadata["autoreset_mode"]`` is ``expected``.

    Args:
        client: who needs the mode (e.g. ``"SB3VecEnv"``).
        mode: the env's ``metadata["autoreset_mode"]``.
        expected: the :class:`~gymnasium.vector.AutoresetMode` the client needs.
        why: what goes wrong with another mode, for the message.
    """
    if mode == expected:
        return
    name = lambda m: getattr(m, "name", repr(m))  # noqa: E731
    wanted = name(expected).lower()
    raise AutoresetModeError(
        f"the vector env has autoreset_mode={name(mode)}, but {client} needs autoreset_mode={name(expected)}: {why}. "
        f"Make the env with autoreset_mode={wanted!r}, e.g. gym.make_vec(ENV_ID, num_envs, "
        f"vectorization_mode='vector_entry_point', autoreset_mode={wanted!r})."
    )


def require_package(module: str, pip_name: str | None = None, extra: str | None = None) -> None:
    """Import ``module`` or raise :class:`MissingDependencyError` with the exact install command."""
    import importlib

    try:
        importlib.import_module(module)
    except ImportError as exc:
        hint = f"pip install {pip_name or module}"
        if extra:
            hint += f"  (or: pip install 'proxy-rlhf[{extra}]')"
        raise MissingDependencyError(f"this feature needs the package {pip_name or module!r}: {hint}") from exc
