"""The leaderboard (agents/eval/leaderboard.py, its CLI agents/cli/leaderboard.py): the smoke run end to end, and bad input."""

import dataclasses
import json
import shutil

import pytest

from agents.cli import main
from agents.eval.board import TrainedAgent
from agents.eval.leaderboard import AGENTS, AgentSpec, LeaderboardConfig, run_leaderboard
from agents.saving.checkpoint import load_checkpoint
from proxy_env.errors import ConfigError


def test_the_smoke_run_trains_benchmarks_reseeds_and_writes_the_board(tmp_path, monkeypatch):
    # an agent whose settings its backend refuses: a failure is a row, not the end of the run
    monkeypatch.setitem(AGENTS, "broken", AgentSpec("sb3", {"algo": "ppo", "algo_kwargs": {"n_epochs": 0}}))
    cfg = LeaderboardConfig(
        smoke=True, task="instructions", agents=("ppo", "tilt", "broken"), top_seeds=1, out=str(tmp_path)
    )
    lines = []
    board = run_leaderboard(cfg, log=lines.append)
    first = [t for t in board.trained if t.seed == 0]
    assert [t.name for t in first] == ["ppo", "tilt-b0.3", "broken"]
    assert first[2].checkpoint is None and "n_epochs" in first[2].error
    for t in first[:2]:
        meta = load_checkpoint(t.checkpoint, device="cpu").meta
        assert 0 < meta.num_timesteps <= 256 + 4  # the budget, not SB3's default 2,048 steps per env
        assert meta.env_kwargs["prompts"] == "instructions" and meta.env_kwargs["reward"] == "instructions"
    again = [t for t in board.trained if t.seed == 1]
    assert len(again) == 1 and again[0].name in ("ppo", "tilt-b0.3") and again[0].checkpoint
    assert len(board.benches) == 2 and not any(a.kind == "best-of-n" for a in board.benches[1].agents)
    task_dir = tmp_path / "instructions"
    assert json.loads((task_dir / "leaderboard.json").read_text())["decisions"] == 256
    for seed in (0, 1):
        assert (task_dir / f"seed{seed}" / "results.csv").is_file()
    text = (tmp_path / "LEADERBOARD.md").read_text()
    assert "## proxy_env/Instructions-v0" in text and "256 decisions per agent" in text
    assert "| broken | 0 |" in text and "Agents that did not train" in text
    assert "best-of-4" in text and "instructions/seed0/reward_kl.png" in text
    assert "| instruction | kind | prompts |" in text  # the per-instruction table of this task
    ranked_rows = [line for line in text.splitlines() if line.startswith("| 1 |") or line.startswith("| 2 |")]
    assert len(ranked_rows) == 2
    assert any("training tilt-b0.3" in line for line in lines)
    # the board is rebuilt from disk alone (a run stopped after its first round loses nothing measured)
    (task_dir / "board.md").unlink()
    run_leaderboard(dataclasses.replace(cfg, rebuild=True))
    assert (task_dir / "board.md").read_text() in (tmp_path / "LEADERBOARD.md").read_text()
    assert "| broken | 0 |" in (task_dir / "board.md").read_text()
    # resumed after a stop before the second round's bench: nothing is trained again, the first round is read back
    (task_dir / "seed1" / "per_prompt.json").unlink()
    first_round = (task_dir / "seed0" / "per_prompt.json").read_bytes()

    def no_training(*args, **kwargs):
        raise AssertionError("a resumed run trained an agent that has a record")

    monkeypatch.setattr("agents.eval.leaderboard.train_agent", no_training)
    lines.clear()
    resumed = run_leaderboard(dataclasses.replace(cfg, resume=True), log=lines.append)
    assert any("seed0: benchmarked before" in line for line in lines)
    assert len(resumed.benches) == 1 and (task_dir / "seed1" / "per_prompt.json").is_file()
    assert (task_dir / "seed0" / "per_prompt.json").read_bytes() == first_round
    assert [(t.name, t.seed, t.checkpoint) for t in resumed.trained] == [
        (t.name, t.seed, t.checkpoint) for t in board.trained
    ]
    # the second round's evaluations were kept as each ended: none ran again
    assert any("evaluations read from" in note and "evals" in note for note in resumed.benches[0].notes)
    # every invocation is in the ledger, and the board's wall time is their sum
    runs = json.loads((task_dir / "runs.json").read_text())
    assert [r["outcome"] for r in runs] == ["finished", "finished"]
    assert resumed.wall_s == pytest.approx(sum(r["wall_s"] for r in runs), abs=1.0)
    assert "Wall time over 2 invocations" in (task_dir / "board.md").read_text()
    # a record of an earlier run with other settings is not reused: that agent is trained again
    record = task_dir / "agents" / "tilt-b0.3-s0.json"
    stale = json.loads(record.read_text())
    record.write_text(json.dumps({**stale, "settings": "0" * 16}))
    trained_again = []
    monkeypatch.setattr(
        "agents.eval.leaderboard.train_agent", lambda cfg, name, *a: trained_again.append(name) or board.trained[1]
    )
    run_leaderboard(dataclasses.replace(cfg, resume=True), log=lines.append)
    assert trained_again == ["tilt-b0.3"]
    # a run stopped by Ctrl-C is in the ledger too
    (task_dir / "seed1" / "per_prompt.json").unlink()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("agents.eval.bench.run_bench", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_leaderboard(dataclasses.replace(cfg, resume=True), log=lines.append)
    assert [r["outcome"] for r in json.loads((task_dir / "runs.json").read_text())][-2:] == ["finished", "interrupted"]
    # resumed on a fresh clone of the board (agents/ is not in git): the benchmarked round's agents are read from
    # trained.json, not trained again; only the seed-1 agent, whose round has not run, needs training
    shutil.rmtree(task_dir / "agents")
    trained_again.clear()

    def record_training(cfg, name, spec, extra, seed, lm):
        trained_again.append((name, seed))
        return TrainedAgent(name, seed, None, 0.0, "stopped by the test")

    monkeypatch.setattr("agents.eval.leaderboard.train_agent", record_training)
    cloned = run_leaderboard(dataclasses.replace(cfg, resume=True), log=lines.append)
    assert trained_again == [(again[0].name, 1)]
    assert [(t.name, t.seed, t.checkpoint, t.error) for t in cloned.trained if t.seed == 0] == [
        (t.name, t.seed, t.checkpoint, t.error) for t in first
    ]
    assert not cloned.benches and (task_dir / "seed0" / "per_prompt.json").read_bytes() == first_round
    with pytest.raises(ConfigError, match="decisions=256 there, 512 here"):
        run_leaderboard(dataclasses.replace(cfg, resume=True, decisions=512))
    with pytest.raises(ConfigError, match="no run to continue"):
        run_leaderboard(dataclasses.replace(cfg, resume=True, out=str(tmp_path / "elsewhere")))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"agents": ("ppo", "dqnn")}, "Did you mean 'dqn'"),
        ({"task": "sentimant"}, "Did you mean 'sentiment'"),
        ({"betas": (0.0,)}, "betas"),
        ({"n": (1, 2)}, "best-of-N sizes"),
        ({"decisions": 0}, "decisions=0"),
        ({"kl_coef": -1.0}, "kl_coef=-1.0"),
    ],
)
def test_bad_settings_are_refused_before_anything_loads(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        LeaderboardConfig(**kwargs).resolved()


def test_the_command_line_exposes_the_config_and_names_a_bad_value(capsys, tmp_path):
    with pytest.raises(SystemExit):
        main(["leaderboard", "--help"])
    out = capsys.readouterr().out
    for flag in ("--task", "--decisions", "--agents", "--top-seeds", "--betas", "--smoke", "--out"):
        assert flag in out
    assert main(["leaderboard", "--smoke", "--agents", "a2d", "--out", str(tmp_path)]) != 0
    err = capsys.readouterr().err
    assert "agents=['a2d']" in err and "Did you mean 'a2c'" in err
    assert not (tmp_path / "LEADERBOARD.md").exists()
