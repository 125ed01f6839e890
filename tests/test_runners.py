"""agents/eval/runners.py: what the bench reads from a proxy's TensorBoard folder."""

import math

from torch.utils.tensorboard import SummaryWriter

from agents.eval.runners import train_wall


def _log(folder, suffix, times):
    writer = SummaryWriter(str(folder), filename_suffix=suffix)
    for step, t in enumerate(times):
        writer.add_scalar("train/loss", 1.0 / (step + 1), step, walltime=t)
    writer.close()


def test_train_wall_sums_each_attempt_and_skips_the_gap(tmp_path):
    _log(tmp_path / "tilt_1", ".a", [100.0, 130.0])  # an attempt stopped after 30 s
    _log(tmp_path / "tilt_1", ".b", [5000.0, 5200.0, 5400.0])  # the run that saved the checkpoint, an hour later
    assert train_wall(tmp_path) == 430.0  # not 5,300: the hour between them trained nothing


def test_train_wall_of_one_run_and_of_nothing(tmp_path):
    _log(tmp_path / "ppo_1", ".a", [10.0, 25.5])
    assert train_wall(tmp_path) == 15.5
    empty = tmp_path / "empty"
    empty.mkdir()
    assert math.isnan(train_wall(empty))
