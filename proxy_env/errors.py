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
