"""The ``proxy-rlhf`` command line, all in this folder: one module per command group.

:mod:`~agents.cli.app` is the entry point (``main``: ``train``, ``generate``, ``demo``, and the parser that
adds the others): :mod:`~agents.cli.bench`, :mod:`~agents.cli.feedback` (``prefs``, ``rm``),
:mod:`~agents.cli.finetune` and :mod:`~agents.cli.export`. Each handler imports the heavy parts (torch
models, TRL, Ray) only when it runs, so ``proxy-rlhf --help`` is quick.
"""

from agents.cli.app import main
from agents.cli.flags import add_config_flags

__all__ = ["add_config_flags", "main"]
