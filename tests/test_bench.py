import csv
import math
from collections import Counter

import numpy as np
import pytest

from agents.eval.bench import BenchConfig, run_bench
from agents.eval.metrics import bon_kl_empirical, distinct_n
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


def test_metrics_helpers():
    assert distinct_n([[1, 1, 1]], 1) == pytest.approx(1 / 3) and distinct_n([[]], 2) == 0.0
    est = bon_kl_empirical(np.array([1.0, 0.0, 0.0]), np.array([[0.0, 0.5], [0.0, 1.0], [0.0, 0.0]]), 4)
    # prompt 0: above both refs, no tie -> log N; prompt 1: one tie, one above -> F̂ = 2/3, F̂⁻ = 0 -> log((2/3)^3);
    # prompt 2: every sample ties -> best-of-N is a plain sample, KL 0
    np.testing.assert_allclose(est, [np.log(4), 3 * np.log(2 / 3), 0.0], atol=1e-12)
    assert (bon_kl_empirical(np.array([0.2]), np.array([[0.1, 0.3, 0.5]]), 8) == np.log(8) + 7 * np.log(2 / 4)).all()


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


def test_phi_interpolates_best_of_n_and_flags_collapse():
    from agents.eval.report import _frontier_scores

    def row(agent, kind, kl, reward, d2=0.8, ppl=6.0):
        return {"agent": agent, "kind": kind, "kl": kl, "reward": reward, "distinct_2": d2, "perplexity": ppl}

    rows = [
        row("always-accept", "baseline", 0.0, 0.2),
        row("best-of-2", "best-of-n", 0.2, 0.4),
        row("best-of-4", "best-of-n", 0.6, 0.5),
        row("best-of-16", "best-of-n", 1.8, 0.8, ppl=6.5),
        row("proxy", "proxy", 0.4, 0.4),
        row("hacked", "proxy", 1.0, 0.9, d2=0.3),
        row("far", "proxy", 5.0, 0.9),
    ]
    _frontier_scores(rows)
    phi = {r["agent"]: r["phi"] for r in rows}
    assert phi["proxy"] == pytest.approx(0.2 / 0.25)  # best-of-N at KL 0.4: 0.45
    assert phi["hacked"] == pytest.approx(0.7 / (0.5 + 0.3 * 0.4 / 1.2 - 0.2))
    assert np.isnan(phi["far"]) and np.isnan(phi["best-of-2"])  # beyond the frontier's range; the frontier itself
    collapsed = {r["agent"]: r["collapsed"] for r in rows}
    assert collapsed == {
        "always-accept": False,
        "best-of-2": False,
        "best-of-4": False,
        "best-of-16": False,
        "proxy": False,
        "hacked": True,
        "far": False,
    }
    rows[4]["perplexity"] = 7.6  # more than best-of-16's + 1
    _frontier_scores(rows)
    assert rows[4]["collapsed"]


def test_truncation_log_ratio_is_exact_at_the_limits(tiny):
    """No truncation: q = p, the ratio is 0. A one-token pool (top_k=1): q = 1, the ratio is the greedy response's NLL."""
    from agents.eval.metrics import response_nll, sample_ids, truncation_log_ratio

    prompts = ["Hello!", "Tell me about the weather."]
    vocab = tiny.vocab_size  # top-k over the whole vocabulary and top_p=1: nothing is truncated
    sampled = [
        row[0]
        for row in sample_ids(
            tiny, prompts, 1, max_new_tokens=6, seed=0, top_k=vocab, top_p=1.0, temperature=1.0, batch_size=2
        )
    ]
    np.testing.assert_allclose(
        truncation_log_ratio(tiny, prompts, sampled, top_k=vocab, top_p=1.0, temperature=1.0), 0.0, atol=1e-4
    )
    greedy = [
        row[0]
        for row in sample_ids(
            tiny, prompts, 1, max_new_tokens=6, seed=0, top_k=1, top_p=1.0, temperature=1.0, batch_size=2
        )
    ]
    np.testing.assert_allclose(
        truncation_log_ratio(tiny, prompts, greedy, top_k=1, top_p=1.0, temperature=1.0),
        response_nll(tiny, prompts, greedy),
        rtol=1e-4,
    )
    outside = [[int(ids[0]) + 1] if ids else [5] for ids in greedy]  # not the argmax: outside a one-token pool
    assert np.isinf(truncation_log_ratio(tiny, prompts, outside, top_k=1, top_p=1.0, temperature=1.0)).all()


POOL = {"top_k": 6, "top_p": 0.9, "temperature": 1.5}  # pools of several tokens on the tiny models


@pytest.mark.parametrize("kind", ["tiny", "tiny_gpt2"])
def test_sample_draws_each_token_from_its_pool(kind, request):
    """The first token and, after the most frequent first token, the second follow the pool's renormalised probabilities."""
    from scipy import stats

    from agents.eval.metrics import sample
    from proxy_env.engine import candidates

    lm, n = request.getfixturevalue(kind), 1500
    prompt = lm.encode_prompt("Tell me about the weather.")
    rows = sample(lm, ["Tell me about the weather."], n, max_new_tokens=2, seed=0, batch_size=1, **POOL).ids[0]

    def pvalue(tokens: list[int], context: list[int]) -> float:
        pool = candidates.truncate(lm.forward_full(context).logits[-1:], **POOL)
        q = {int(t): float(p) for t, p in zip(pool.tokens[0], pool.logq[0].exp()) if p > 0}
        assert len(q) >= 3, "a pool of several tokens, or the test means little"
        counts = Counter(tokens)
        assert set(counts) <= set(q), f"tokens outside the pool: {set(counts) - set(q)}"
        total = sum(q.values())  # 1 up to float32 rounding, which scipy's sum check would reject
        return float(stats.chisquare([counts[t] for t in q], [q[t] / total * len(tokens) for t in q]).pvalue)

    assert pvalue([r[0] for r in rows], prompt) > 1e-3
    top = Counter(r[0] for r in rows).most_common(1)[0][0]
    assert pvalue([r[1] for r in rows if r[0] == top], prompt + [top]) > 1e-3


@pytest.mark.parametrize("kind", ["tiny", "tiny_gpt2"])
def test_sample_statistics_equal_the_separate_passes(kind, request, monkeypatch):
    """NLL and Σ log q/p from the sampling pass equal response_nll and truncation_log_ratio, EOS-cut responses included."""
    from agents.eval.metrics import response_nll, sample, truncation_log_ratio
    from proxy_env.engine.lm import FrozenLM

    lm = request.getfixturevalue(kind)
    prompts = ["Hello!", "Tell me about the weather.", "x"]
    plain = sample(lm, prompts, 4, max_new_tokens=10, seed=0, batch_size=2, **POOL)
    frequent = Counter(t for row in plain.ids for r in row for t in r[1:]).most_common(1)[0][0]
    monkeypatch.setattr(FrozenLM, "eos_token_ids", property(lambda self: [frequent]))  # some responses now stop early
    drawn = sample(lm, prompts, 4, max_new_tokens=10, seed=0, batch_size=2, **POOL)
    flat = [r for row in drawn.ids for r in row]
    lengths = [len(r) for r in flat]
    assert min(lengths) < 10 and all(r.index(frequent) == len(r) - 1 for r in flat if frequent in r), lengths
    each = [p for p in prompts for _ in range(4)]
    np.testing.assert_allclose(drawn.nll.ravel(), response_nll(lm, each, flat), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(
        drawn.log_ratio.ravel(), truncation_log_ratio(lm, each, flat, **POOL), rtol=1e-4, atol=1e-4
    )
    assert (
        sample(lm, prompts, 4, max_new_tokens=10, seed=0, batch_size=2, **POOL).ids == drawn.ids
    )  # same seed, same samples


def test_best_of_n_has_a_kl_from_the_untruncated_llm(tiny):
    res = run_bench(BenchConfig(**QUICK), lm=tiny)
    bon = next(a for a in res.agents if a.name == "best-of-2")
    assert np.isfinite(bon.kl_untruncated).all() and (bon.kl_untruncated > bon.kl).all()  # truncation adds Σ -log Z > 0


def test_fine_tuned_rows_are_drawn_as_one_line_per_curve():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from agents.eval.report import _curves

    def row(curve, point, kl, reward):
        return {
            "agent": f"fine-tuned ({point})",
            "kind": "finetune",
            "curve": curve,
            "point": point,
            "kl": kl,
            "kl_lo": kl - 0.1,
            "kl_hi": kl + 0.1,
            "reward": reward,
            "reward_lo": reward - 0.05,
            "reward_hi": reward + 0.05,
        }

    rows = [
        row("grpo", "β=0.5", 8.0, 0.5),
        row("grpo", "β=0.1", 20.0, 0.8),
        row("dpo (ppl ≤ q0.75)", "β=0.1", 6.0, 0.4),
        row("grpo", "β=2", 6.0, 0.3),
    ]
    fig, ax = plt.subplots()
    _curves(ax, rows)
    assert ax.get_legend_handles_labels()[1] == ["grpo", "dpo (ppl ≤ q0.75)"]
    grpo_line = ax.get_lines()[0]
    assert list(grpo_line.get_xdata()) == [6.0, 8.0, 20.0] and list(grpo_line.get_ydata()) == [0.3, 0.5, 0.8]
    assert [t.get_text() for t in ax.texts] == ["β=2", "β=0.5", "β=0.1", "β=0.1"]
    plt.close(fig)


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
