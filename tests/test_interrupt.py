"""Ctrl-C and kill (agents/interrupt.py): the first SIGINT or SIGTERM ends training after the current step, the
checkpoint is saved and the previous signal handlers are restored.
"""

from __future__ import annotations

import os
import signal

import pytest

from agents.saving.checkpoint import read_meta
from agents.train import train
from tests.conftest import _cfg, _zero


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_signal_stops_training_and_saves(tmp_path, signum):
    from stable_baselines3.common.callbacks import BaseCallback

    class Kill(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps == 16:
                os.kill(os.getpid(), signum)
            return True

    result = train(_cfg(save_dir=str(tmp_path / "run"), total_timesteps=10_000), reward=_zero, callbacks=[Kill()])
    assert result.interrupted == signal.Signals(signum).name
    assert 16 <= result.model.num_timesteps < 10_000
    assert read_meta(tmp_path / "run").num_timesteps == result.model.num_timesteps
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
