"""The bench (agents/eval/bench.py, `proxy-rlhf bench`): a finite, deterministic table at tiny scale, fine-tuned
folders and checkpoints as rows, best-of-N's KL from the untruncated LLM, the frontier of an earlier run.
"""

import csv
import math

import numpy as np
import pytest

from agents.eval.bench import BenchConfig, run_bench
from agents.eval.report import COLUMNS, TIMING_COLUMNS, write_outputs
from proxy_env.errors import ConfigError

QUICK = dict(quick=True, n=(2,), bon_reference=2, max_new_tokens=4, num_prompts=3)


class RejectFirstDimPositive:
    """A proxy with a computable accept probability that rejects often."""

    def predict(self, obs, state=None, episode_start=None, deterministic=True):
        return (np.asarray(obs)[:, 1] <= 0.7).astype(np.int64), state

    def accept_prob(self, obs):
        return (np.asarray(obs)[:, 1] <= 0.7).astype(np.float64)


def _rows(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_bench_table_is_finite_and_deterministic(tiny, tmp_path):
    results = []
    for run in range(2):
        res = run_bench(BenchConfig(**QUICK), lm=tiny, extra_agents={"picky": RejectFirstDimPositive()})
        files = write_outputs(res, tmp_path / f"run{run}")
        results.append(_rows(files[1]))
    rows = results[0]
    assert list(rows[0]) == COLUMNS
    assert [r["agent"] for r in rows] == ["always-accept", "random-reject p=0.2", "best-of-2", "picky"]
    for r in rows:
        for key in ("reward", "win_rate", "length", "perplexity", "kl", "distinct_1", "forwards_per_response"):
            assert math.isfinite(float(r[key])), (r["agent"], key)
    by = {r["agent"]: r for r in rows}
    assert abs(float(by["always-accept"]["kl"])) < 1e-9 and float(by["picky"]["kl"]) > 0
    assert float(by["picky"]["rejection_rate"]) > 0 and float(by["best-of-2"]["kl_bound"]) == pytest.approx(
        np.log(2) - 0.5
    )
    strip = lambda rs: [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in rs]  # noqa: E731
    assert strip(results[0]) == strip(results[1])


def test_finetuned_folder_and_checkpoint(tiny, tmp_path):
    import json

    from stable_baselines3 import PPO

    from agents.policies import proxy_policy_kwargs
    from agents.saving.checkpoint import save_checkpoint
    from agents.train import make_sb3_env

    folder = tmp_path / "ft"
    tiny.model.save_pretrained(folder)
    tiny.tokenizer.save_pretrained(folder)
    (folder / "finetune.json").write_text(json.dumps({"wall_s": 12.5}))
    env_kwargs = {"model": tiny, "prompts": ["Hi"], "max_new_tokens": 4}
    agent = PPO(
        "MlpPolicy",
        make_sb3_env(env_kwargs, 1, seed=0),
        policy_kwargs=proxy_policy_kwargs(),
        device="cpu",
        n_steps=8,
        batch_size=8,
    )
    ckpt = save_checkpoint(agent, tmp_path / "ppo", env_kwargs=env_kwargs, seed=0)
    tb = tmp_path / "ppo-tb"
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(tb / "ppo_1")) as writer:
        for step in range(3):
            writer.add_scalar("rollout/ep_rew_mean", 0.1 * step, step)
    res = run_bench(
        BenchConfig(**QUICK, finetuned=(str(folder),), checkpoints=(str(ckpt),), proxy_actions=("argmax", "sample")),
        lm=tiny,
    )
    by = {a.name: a for a in res.agents}
    ft, proxy, sampled = by["fine-tuned (ft)"], by["ppo proxy (ppo) [argmax]"], by["ppo proxy (ppo) [sample]"]
    # a fresh PPO policy accepts with probability ~0.5, so its sampled-action KL is finite and positive
    assert np.isfinite(sampled.kl).all() and sampled.kl.mean() > 0
    assert ft.trainable_params == tiny.num_parameters and ft.train_wall_s == 12.5
    # the same weights as the frozen LLM: KL(π_ft || p) along a response is Σ -log Z_i (pool mass), exactly what
    # always-accept's KL from the untruncated LLM is along the same tokens
    from agents.eval.kl import trajectory

    same = [
        trajectory(tiny, tiny.encode_prompt(p), ids, 1.0, top_k=50, top_p=0.95, temperature=1.0).kl_untruncated
        for p, ids in zip(res.prompts, ft.token_ids)
    ]
    np.testing.assert_allclose(ft.kl, same, atol=1e-4)
    assert 0 < proxy.trainable_params < tiny.num_parameters and np.isfinite(proxy.kl).all()
    assert proxy.tensorboard_dir == str(tb)
    files = write_outputs(res, tmp_path / "out")
    assert (tmp_path / "out" / "training_curves.png") in files


def test_cli_quick_writes_files(tmp_path, capsys):
    from agents.cli import main

    out = tmp_path / "bench"
    assert main(["bench", "--quick", "--n", "2", "--num-prompts", "2", "--bon-reference", "2", "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} >= {"results.md", "results.csv", "reward_kl.png"}
    assert "| always-accept |" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="best-of-N sizes"):
        BenchConfig(n=(0,)).resolved()
    with pytest.raises(ConfigError, match=r"proxy_actions=\('greedy',\).*'argmax', 'sample'"):
        BenchConfig(proxy_actions=("greedy",)).resolved()


def test_best_of_n_has_a_kl_from_the_untruncated_llm(tiny):
    res = run_bench(BenchConfig(**QUICK), lm=tiny)
    bon = next(a for a in res.agents if a.name == "best-of-2")
    assert np.isfinite(bon.kl_untruncated).all() and (bon.kl_untruncated > bon.kl).all()  # truncation adds Σ -log Z > 0


def test_frontier_from_an_earlier_run_joins_the_table_and_is_checked(tiny, tmp_path):
    first = run_bench(
        BenchConfig(**{**QUICK, "n": (2, 4), "bon_reference": 2}),
        lm=tiny,
        extra_agents={"rejecter": RejectFirstDimPositive()},
    )
    write_outputs(first, tmp_path / "a")
    earlier = {r["agent"]: r for r in _rows(tmp_path / "a" / "results.csv")}
    # the same prompts and seed, no best-of-N of its own: the earlier frontier gives φ
    again = run_bench(
        BenchConfig(**{**QUICK, "n": (), "frontier_from": str(tmp_path / "a" / "results.csv")}),
        lm=tiny,
        extra_agents={"rejecter": RejectFirstDimPositive()},
    )
    assert not any(a.kind == "best-of-n" for a in again.agents)
    write_outputs(again, tmp_path / "b")
    rows = {r["agent"]: r for r in _rows(tmp_path / "b" / "results.csv")}
    assert rows["best-of-4"]["reward"] == earlier["best-of-4"]["reward"]
    assert rows["rejecter"]["phi"] == earlier["rejecter"]["phi"]
    assert "best-of-N rows from" in (tmp_path / "b" / "results.md").read_text()
    # another seed gives always-accept other responses: that frontier is not this run's
    # (checked right after always-accept, before any other agent runs)
    with pytest.raises(ConfigError, match="frontier_from=.*another run's: always-accept "):
        run_bench(
            BenchConfig(**{**QUICK, "n": (), "seed": 5, "frontier_from": str(tmp_path / "a" / "results.csv")}), lm=tiny
        )
    with pytest.raises(ConfigError, match="frontier_from=.*cannot be read"):
        run_bench(BenchConfig(**{**QUICK, "frontier_from": str(tmp_path / "missing.csv")}), lm=tiny)


def test_cli_out_that_is_a_file_is_refused_before_the_benchmark_runs(tmp_path, capsys, monkeypatch):
    """The benchmark's results must not be thrown away at the end: a bad --out fails before anything runs."""
    import agents.eval.bench
    from agents.cli import main

    def not_run(*args, **kwargs):
        raise AssertionError("the benchmark ran")

    monkeypatch.setattr(agents.eval.bench, "run_bench", not_run)
    afile = tmp_path / "afile"
    afile.write_text("mine")
    for out, says in ((afile, "is a file"), (afile / "sub", "lies under")):
        assert main(["bench", "--quick", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"--out={str(out)!r} {says}" in err and "pass a folder" in err, err
    assert afile.read_text() == "mine"
