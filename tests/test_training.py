"""The outer loop every self-driven backend shares (:func:`agents.training.update_loop`) and run-folder numbering."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from agents.interrupt import GracefulStop
from agents.torch_ppo import TorchPPOConfig
from agents.training import run_folder, update_loop


class Recorder:
    """A stand-in ``save``: records the step count of every save; fails on the calls listed in ``fail``."""

    def __init__(self, fail: tuple[int, ...] = ()) -> None:
        self.saved: list[int] = []
        self.fail = fail

    def __call__(self, agent: SimpleNamespace, path: str | None = None) -> str:
        if len(self.saved) + 1 in self.fail and path is None:
            self.saved.append(-agent.num_timesteps)
            raise OSError("disk full")
        self.saved.append(agent.num_timesteps)
        return path or "final"


def counting(agent: SimpleNamespace, per_update: int, stop: GracefulStop | None = None, stop_after: int = 0):
    def update() -> int:
        agent.num_timesteps += per_update
        if stop is not None and agent.num_timesteps >= stop_after:
            stop.received = "SIGINT"
        return agent.num_timesteps

    return update


def test_update_loop_runs_to_the_budget_with_periodic_and_final_saves(tmp_path) -> None:
    cfg = TorchPPOConfig(total_timesteps=100, save_freq=30, save_dir=str(tmp_path / "run"))
    agent, save = SimpleNamespace(num_timesteps=0), Recorder()
    path = update_loop(cfg, agent, save, GracefulStop(), desc="t", update=counting(agent, 16))
    assert agent.num_timesteps == 112  # the last update may pass the budget, never stop short of it
    assert save.saved == [32, 64, 96, 112] and path == "final"


def test_update_loop_stops_on_a_signal_and_still_saves(tmp_path) -> None:
    cfg = TorchPPOConfig(total_timesteps=1_000, save_dir=str(tmp_path / "run"))
    agent, save, stop = SimpleNamespace(num_timesteps=0), Recorder(), GracefulStop()
    update_loop(cfg, agent, save, stop, desc="t", update=counting(agent, 10, stop, stop_after=30))
    assert agent.num_timesteps == 30 and save.saved == [30]


def test_update_loop_stops_at_the_time_limit() -> None:
    cfg = TorchPPOConfig(total_timesteps=10**9, time_limit_s=1e-9)
    agent = SimpleNamespace(num_timesteps=0)
    assert update_loop(cfg, agent, None, GracefulStop(), desc="t", update=counting(agent, 5)) is None
    assert agent.num_timesteps == 5  # one update, then the limit


def test_a_failed_periodic_save_is_not_fatal(tmp_path) -> None:
    cfg = TorchPPOConfig(total_timesteps=40, save_freq=20, save_dir=str(tmp_path / "run"))
    agent, save = SimpleNamespace(num_timesteps=0), Recorder(fail=(1,))
    assert update_loop(cfg, agent, save, GracefulStop(), desc="t", update=counting(agent, 20)) == "final"
    assert save.saved == [-20, 40, 40]  # the failed one, the next periodic one, the final one


@pytest.mark.parametrize("existing", [[], ["x_1", "x_3", "x_b", "xy_9", "x_2.txt"]])
def test_run_folder_numbers_after_the_last_run(tmp_path, existing) -> None:
    for name in existing:
        (tmp_path / name).mkdir()
    assert run_folder(None, "x") is None and run_folder("", "x") is None
    assert run_folder(str(tmp_path), "x") == tmp_path / ("x_4" if existing else "x_1")
