"""Old import paths, kept for one release after the layout change: each warns and forwards to the new one.

The modules that moved (ARCHITECTURE.md) have no file at their old path. :func:`install` (run by
``import proxy_env`` and ``import agents``) appends a finder to ``sys.meta_path`` that answers only for
the old names in :data:`MOVED`, and only after every other finder has failed, so it never shadows a real
module. Each old module it makes holds a module ``__getattr__`` (PEP 562): ``from agents.bench import
run_bench`` still works, returns the very object of the new module, and raises a
:class:`DeprecationWarning` (``warnings.warn``) naming the new path. Nothing is imported until a name is asked for.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any

# old module -> the modules its names are in now, searched in order
MOVED: dict[str, tuple[str, ...]] = {
    "agents.bench": ("agents.eval.bench", "agents.eval.results", "agents.cli.bench",),
    "agents.bench_agents": ("agents.eval.runners",),
    "agents.bench_report": ("agents.eval.report",),
    "agents.checkpoint": ("agents.saving.checkpoint",),
    "agents.cli_feedback": ("agents.cli.feedback",),
    "agents.compare": ("agents.eval.compare",),
    "agents.export": ("agents.saving.export", "agents.cli.export",),
    "agents.finetune.cli": ("agents.cli.finetune",),
    "agents.kl": ("agents.eval.kl", "agents.accept",),
    "agents.metrics": ("agents.eval.metrics",),
    "agents.model_card": ("agents.saving.model_card",),
    "agents.proxy_folder": ("agents.saving.folder",),
    "agents.proxy_format": ("agents.saving.format",),
    "agents.rllib_backend": ("agents.rllib.backend", "proxy_env.adapters.rllib",),
    "agents.rllib_module": ("agents.rllib.module",),
    "agents.rllib_train": ("agents.rllib.train",),
    "proxy_env.candidates": ("proxy_env.engine.candidates",),
    "proxy_env.checks": ("proxy_env.vector.checks",),
    "proxy_env.feedback": ("feedback",),
    "proxy_env.feedback.bt": ("feedback.bt",),
    "proxy_env.feedback.encoders": ("proxy_env.rewards.encoders",),
    "proxy_env.feedback.judge": ("proxy_env.rewards.judge", "feedback.sources",),
    "proxy_env.feedback.pairs": ("feedback.pairs",),
    "proxy_env.feedback.pairwise": ("proxy_env.rewards.pairwise",),
    "proxy_env.feedback.perplexity": ("feedback.perplexity",),
    "proxy_env.feedback.records": ("feedback.records",),
    "proxy_env.feedback.rm": ("feedback.rm", "proxy_env.rewards.learned",),
    "proxy_env.feedback.sources": ("feedback.sources", "proxy_env.rewards.judge",),
    "proxy_env.host_reads": ("proxy_env.engine.host_reads",),
    "proxy_env.infos": ("proxy_env.vector.infos",),
    "proxy_env.lm": ("proxy_env.engine.lm", "proxy_env.engine.outputs", "proxy_env.engine.models",),
    "proxy_env.row_cache": ("proxy_env.engine.row_cache", "proxy_env.engine.outputs",),
    "proxy_env.sb3": ("proxy_env.adapters.sb3",),
    "proxy_env.seeding": ("proxy_env.vector.seeding",),
    "proxy_env.shaping": ("proxy_env.rewards.shaping",),
    "proxy_env.steering": ("proxy_env.engine.steering",),
    "proxy_env.sub_envs": ("proxy_env.vector.sub_envs",),
    "proxy_env.tiny": ("proxy_env.engine.tiny",),
    "proxy_env.vector_env": ("proxy_env.vector.vector_env",)
}
_PACKAGES = frozenset(name.rpartition(".")[0] for name in MOVED if name.rpartition(".")[0] in MOVED)  # proxy_env.feedback


def forward(old: str, *new: str, names: Iterable[str] | None = None) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``old`` that finds each name in the ``new`` modules (the defining one named first).

    Args:
        old: the old module path (for the messages).
        new: the modules the names moved to, searched in order.
        names: forward only these names (a module that stays but lost a few names); default: any name.
    """
    allowed = None if names is None else frozenset(names)

    def __getattr__(name: str) -> Any:
        if not name.startswith("__") and (allowed is None or name in allowed):
            holders = [target for target in new if name in vars(importlib.import_module(target))]
            if holders:
                value = vars(importlib.import_module(holders[0]))[name]
                home = getattr(value, "__module__", None)  # name the module that defines it, when it is one of them
                target = home if home in holders else holders[0]
                warnings.warn(f"{old}.{name} has moved to {target}.{name}; the old path is kept for one release only.",
                              DeprecationWarning, stacklevel=2)
                return value
        raise AttributeError(f"module {old!r} has no attribute {name!r}")

    return __getattr__


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the old module names of :data:`MOVED` (and nothing else) and makes their forwarding modules."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=fullname in _PACKAGES)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None  # the default module object

    def exec_module(self, module: ModuleType) -> None:
        new = MOVED[module.__name__]
        module.__doc__ = f"Moved to {', '.join(new)}; this path is kept for one release."
        module.__getattr__ = forward(module.__name__, *new)  # type: ignore[method-assign]


def install() -> None:
    """Append the finder of the old paths to ``sys.meta_path`` (once)."""
    if not any(isinstance(finder, _MovedFinder) for finder in sys.meta_path):
        sys.meta_path.append(_MovedFinder())
