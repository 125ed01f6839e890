"""Output folders (proxy_env/folders.py): a folder that proxy-rlhf did not write is never replaced, whichever
command writes it (train --save-dir, save_checkpoint, demo --out, finetune --out), and one run at a time writes one.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agents.saving.checkpoint import load_checkpoint, save_checkpoint
from agents.train import train
from proxy_env.errors import FolderInUseError, OutputPathError
from proxy_env.folders import FolderLock
from tests.conftest import _cfg, _cli, _no_model, _zero


# ---------------------------------------------------------------------------------- a folder proxy-rlhf did not write
def _thesis(tmp_path: Path) -> Path:
    docs = tmp_path / "mydocs"
    (docs / "thesis").mkdir(parents=True)
    (docs / "thesis" / "ch1.tex").write_text("x")
    return docs


def test_save_dir_holding_user_files_is_refused_before_training(tmp_path, monkeypatch):
    docs = _thesis(tmp_path)
    _no_model(monkeypatch)
    with pytest.raises(
        OutputPathError, match=r"save_dir=.*mydocs.*holds 1 entry that proxy-rlhf did not write \(thesis\)"
    ):
        train(_cfg(save_dir=str(docs)), reward=_zero)
    assert (docs / "thesis" / "ch1.tex").read_text() == "x"


def test_save_dir_holding_checkpoints_is_refused(saved, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    shutil.copytree(saved, runs / "demo")  # `--save-dir runs` must not wipe the checkpoints under it
    _no_model(monkeypatch)
    with pytest.raises(OutputPathError, match="did not write \\(demo\\)"):
        train(_cfg(save_dir=str(runs)), reward=_zero)
    assert (runs / "demo" / "model.safetensors").is_file()


@pytest.mark.parametrize(
    "where, match",
    [("afile/sub", "lies under .*afile.*which is a file"), (".", "current or home folder"), ("afile", "is a file")],
    ids=["under-file", "cwd", "file"],
)
def test_save_path_checked_before_training(tmp_path, monkeypatch, where, match):
    (tmp_path / "afile").write_text("x")
    monkeypatch.chdir(tmp_path)
    _no_model(monkeypatch)
    with pytest.raises(OutputPathError, match=match):
        train(_cfg(save_dir=where), reward=_zero)
    assert (tmp_path / "afile").read_text() == "x"


def test_save_checkpoint_never_empties_a_foreign_folder(saved, tmp_path):
    docs = _thesis(tmp_path)
    model = load_checkpoint(saved, device="cpu").model
    with pytest.raises(OutputPathError, match="did not write"):
        save_checkpoint(model, docs, env_kwargs={"model": "tiny"})
    (tmp_path / "lone").mkdir()
    (tmp_path / "lone" / "model.safetensors").write_bytes(b"someone's model")  # our file name, but no marker: not ours
    with pytest.raises(OutputPathError, match="did not write"):
        save_checkpoint(model, tmp_path / "lone", env_kwargs={"model": "tiny"})
    assert (docs / "thesis" / "ch1.tex").is_file() and (
        tmp_path / "lone" / "model.safetensors"
    ).read_bytes() == b"someone's model"


def test_demo_out_and_finetune_out_refuse_user_folders(tmp_path, capsys):
    docs = _thesis(tmp_path)
    code, err = _cli(capsys, "demo", "--model", "tiny", "--out", str(docs))
    assert code == 2 and "--out=" in err and "did not write (thesis)" in err and err.count("\n") == 1
    from agents.finetune import FinetuneConfig

    with pytest.raises(OutputPathError, match="did not write"):
        FinetuneConfig(out=str(docs), overwrite=True).validate()
    assert (docs / "thesis" / "ch1.tex").is_file()


# ---------------------------------------------------------------------------------- one run per folder
def test_second_run_on_a_locked_save_dir_fails_at_once(tmp_path, monkeypatch):
    target = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from proxy_env.folders import FolderLock; "
            f"FolderLock({str(target)!r}).acquire(); print('locked', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        _no_model(monkeypatch)
        with pytest.raises(
            FolderInUseError, match=rf"save_dir=.*run.* is being written by another run \(pid {holder.pid}"
        ):
            train(_cfg(save_dir=str(target)), reward=_zero)
    finally:
        holder.kill()
        holder.wait()
    with FolderLock(target):  # the kernel released the dead holder's lock
        with pytest.raises(FolderInUseError):
            FolderLock(target).acquire()  # and one process cannot take it twice
    assert not (tmp_path / ".run.lock").exists()
