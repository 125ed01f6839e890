"""Stop training cleanly on Ctrl-C or ``kill``: the first SIGINT/SIGTERM ends training after the current step, so the
checkpoint is saved; a second one interrupts at once (``KeyboardInterrupt``).

>>> with GracefulStop() as stop:
...     stop.received is None
True
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Any

from stable_baselines3.common.callbacks import BaseCallback

logger = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class GracefulStop:
    """While active (a ``with`` block in the main thread), SIGINT and SIGTERM set :attr:`received` instead of killing.

    Outside the main thread signals cannot be handled, so nothing changes there. The previous
    handlers are restored on exit, and by the second signal, which is then handled as before
    (Ctrl-C twice: ``KeyboardInterrupt`` at once).
    """

    def __init__(self) -> None:
        self.received: str | None = None  # "SIGINT" or "SIGTERM" once one arrived
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:  # the second one: behave as if we were not here
            self._restore()
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            signal.raise_signal(signum)
            return
        self.received = signal.Signals(signum).name
        logger.warning(
            "%s received: training stops after this step and saves its checkpoint (send it again to stop at once)",
            self.received,
        )

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def __exit__(self, *exc: object) -> None:
        self._restore()

    @property
    def exit_code(self) -> int:
        """The shell's code for death by the received signal (130 for SIGINT, 143 for SIGTERM), 0 if none."""
        return 128 + int(signal.Signals[self.received]) if self.received else 0


class StopOnSignalCallback(BaseCallback):
    """Ends ``learn`` at the next step once ``stop.received`` is set."""

    def __init__(self, stop: GracefulStop) -> None:
        super().__init__()
        self.stop = stop

    def _on_step(self) -> bool:
        return self.stop.received is None
