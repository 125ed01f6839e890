"""The bench's metrics (agents/eval/metrics.py): distinct-n, the best-of-N KL estimate, sampling from the pool, and
the statistics of the sampling pass against separate passes.
"""

from collections import Counter

import numpy as np
import pytest

from agents.eval.metrics import bon_kl_empirical, distinct_n


def test_metrics_helpers():
    assert distinct_n([[1, 1, 1]], 1) == pytest.approx(1 / 3) and distinct_n([[]], 2) == 0.0
    est = bon_kl_empirical(np.array([1.0, 0.0, 0.0]), np.array([[0.0, 0.5], [0.0, 1.0], [0.0, 0.0]]), 4)
    # prompt 0: above both refs, no tie -> log N; prompt 1: one tie, one above -> F̂ = 2/3, F̂⁻ = 0 -> log((2/3)^3);
    # prompt 2: every sample ties -> best-of-N is a plain sample, KL 0
    np.testing.assert_allclose(est, [np.log(4), 3 * np.log(2 / 3), 0.0], atol=1e-12)
    assert (bon_kl_empirical(np.array([0.2]), np.array([[0.1, 0.3, 0.5]]), 8) == np.log(8) + 7 * np.log(2 / 4)).all()


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


def test_sample_continues_a_begun_response_and_shows_each_draws_state(tiny):
    """``prefixes``: rows start after their begun response; ``on_step`` sees the state each token was drawn from."""
    import torch

    from agents.eval.metrics import sample

    seen = []
    begun = [[5, 6, 7], []]
    drawn = sample(tiny, ["Hello!", "How are you today?"], 2, max_new_tokens=3, top_k=50, top_p=0.95,
                   temperature=1.0, seed=0, batch_size=2, prefixes=begun,
                   on_step=lambda start, t, hidden, pool, col: seen.append((t, hidden.clone(), pool.tokens.gather(1, col))))  # fmt: skip
    assert [t for t, *_ in seen] == list(range(len(seen))) and seen[0][1].shape == (4, tiny.hidden_size)
    with torch.no_grad():
        for row in range(4):
            prompt, ids = ["Hello!", "How are you today?"][row // 2], drawn.ids[row // 2][row % 2]
            for t, hidden, token in seen[: len(ids)]:
                assert int(token[row]) == ids[t]
                seq = torch.tensor([tiny.encode_prompt(prompt) + begun[row // 2] + ids[:t]])
                out = tiny.model(input_ids=seq, output_hidden_states=True)
                torch.testing.assert_close(hidden[row], out.hidden_states[-1][0, -1], atol=1e-4, rtol=1e-4)
