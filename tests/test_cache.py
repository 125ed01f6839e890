"""Each agent's evaluation kept as it ends (agents/eval/cache.py): a stopped bench resumes at the next agent and
its table equals an uninterrupted run's; nothing of other settings or of a rewritten checkpoint is reused."""

import os
import shutil

import numpy as np
import pytest

import agents.eval.runners as runners
from agents.eval.bench import BenchConfig, run_bench
from agents.eval.cache import from_json, to_json
from agents.eval.results import AgentEval
from proxy_env.errors import ConfigError

REAL_EVAL_PROXY = runners.eval_proxy
QUICK = dict(quick=True, n=(2,), bon_reference=2, max_new_tokens=4, num_prompts=3)


def _table(result):
    """Every agent's per-prompt results, timing left out."""
    return {
        e.name: (e.rewards.tolist(), e.kl.tolist(), e.nll.tolist(), e.token_ids, e.texts, e.forwards.tolist())
        for e in result.agents
    }


class Stop(Exception):
    pass


def _counting(monkeypatch, fail_on=None):
    """Count the proxy evaluations that really run; raise ``Stop`` instead of running the one named ``fail_on``."""
    ran: list[str] = []
    real = REAL_EVAL_PROXY  # not the counter an earlier call put there

    def counted(lm, name, *args, **kwargs):
        if fail_on is not None and fail_on in name:
            raise Stop(name)
        ran.append(name)
        return real(lm, name, *args, **kwargs)

    monkeypatch.setattr(runners, "eval_proxy", counted)
    return ran


def test_a_stopped_bench_resumes_at_the_next_agent(tiny, saved, tmp_path, monkeypatch):
    cfg = BenchConfig(**QUICK, checkpoints=(str(saved),), cache_dir=str(tmp_path / "evals"))
    whole = run_bench(BenchConfig(**QUICK, checkpoints=(str(saved),)), lm=tiny)
    _counting(monkeypatch, fail_on=saved.name)
    with pytest.raises(Stop):  # killed while evaluating the checkpoint: the two baselines were kept
        run_bench(cfg, lm=tiny)
    assert len(list((tmp_path / "evals").glob("*.json"))) == 2
    ran = _counting(monkeypatch)
    resumed = run_bench(BenchConfig(**{**cfg.__dict__, "resume": True}), lm=tiny)
    assert len(ran) == 1 and saved.name in ran[0]  # only the checkpoint ran
    assert _table(resumed) == _table(whole)
    assert [e.kind for e in resumed.agents] == [e.kind for e in whole.agents]
    assert any("2 evaluations read from" in n for n in resumed.notes)
    ran.clear()
    again = run_bench(BenchConfig(**{**cfg.__dict__, "resume": True}), lm=tiny)
    assert ran == [] and any("4 evaluations read from" in n for n in again.notes)  # best-of-N's included


def test_without_resume_everything_runs_again(tiny, tmp_path, monkeypatch):
    cfg = BenchConfig(**QUICK, cache_dir=str(tmp_path / "evals"))
    run_bench(cfg, lm=tiny)
    ran = _counting(monkeypatch)
    result = run_bench(cfg, lm=tiny)
    assert len(ran) == 2 and not any("read from" in n for n in result.notes)


def test_other_settings_or_a_rewritten_checkpoint_are_not_reused(tiny, saved, tmp_path, monkeypatch):
    ckpt = tmp_path / "proxy"
    shutil.copytree(saved, ckpt)
    cfg = BenchConfig(**QUICK, checkpoints=(str(ckpt),), cache_dir=str(tmp_path / "evals"), resume=True)
    run_bench(cfg, lm=tiny)
    ran = _counting(monkeypatch)
    run_bench(BenchConfig(**{**cfg.__dict__, "random_reject_p": 0.5}), lm=tiny)
    assert [n.startswith("random-reject") for n in ran] == [True]  # only the baseline whose setting changed
    ran.clear()
    run_bench(BenchConfig(**{**cfg.__dict__, "max_new_tokens": 3}), lm=tiny)
    assert len(ran) == 3  # a setting every agent depends on
    ran.clear()
    weights = next(p for p in ckpt.rglob("*") if p.is_file())
    stat = weights.stat()  # the agent trained again in the same folder: a new time stamp
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    run_bench(cfg, lm=tiny)
    assert len(ran) == 1 and ckpt.name in ran[0]


def test_a_damaged_cache_file_is_run_again(tiny, tmp_path, monkeypatch):
    cfg = BenchConfig(**QUICK, cache_dir=str(tmp_path / "evals"), resume=True)
    first = run_bench(cfg, lm=tiny)
    for f in (tmp_path / "evals").glob("always-accept*.json"):
        f.write_text(f.read_text()[:100])  # cut short
    ran = _counting(monkeypatch)
    again = run_bench(cfg, lm=tiny)
    assert ran == ["always-accept"] and _table(again) == _table(first)


def test_resume_needs_a_cache_dir():
    with pytest.raises(ConfigError, match="--cache-dir"):
        BenchConfig(**QUICK, resume=True).resolved()


def test_an_evaluation_round_trips_through_json():
    e = AgentEval(
        "x",
        "proxy",
        np.array([0.5, np.nan]),
        [[1, 2], [3]],
        np.array([0.0, 0.25], dtype=np.float32),
        np.array([1.0, 2.0]),
        np.array([0.1, 0.2]),
        np.array([0.3, 0.4]),
        np.array([3, 4]),
        1.5,
        trainable_params=7,
        texts=["a", "b"],
    )
    import json

    back = from_json(json.loads(json.dumps(to_json(e))))
    for name, value in e.__dict__.items():
        if isinstance(value, np.ndarray):
            assert back.__dict__[name].dtype == value.dtype
            np.testing.assert_array_equal(back.__dict__[name], value)
        else:
            np.testing.assert_equal(back.__dict__[name], value)  # NaN (kl_bound, train_wall_s) equals NaN
