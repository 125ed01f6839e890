import pytest
import torch

from proxy_env.engine import candidates


def _hf_support(logits: torch.Tensor, top_k: int, top_p: float, temperature: float) -> list[set[int]]:
    """The support of HF's sampler per row: the warpers ``generate`` applies (no TopP at ``top_p >= 1``)."""
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    ref = TemperatureLogitsWarper(temperature)(None, logits.clone())
    ref = TopKLogitsWarper(top_k)(None, ref)
    if top_p < 1.0:
        ref = TopPLogitsWarper(top_p)(None, ref)
    return [set(torch.nonzero(torch.isfinite(row)).squeeze(1).tolist()) for row in ref], torch.softmax(ref, -1)


def _logit_cases() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    normal = torch.randn(16, 200, generator=gen)
    ties = (normal * 2).round() / 2  # many exactly equal scores, at the top-k and top-p boundaries too
    return {
        "normal": normal * 3,
        "peaked": normal * 12,  # tail probabilities ~1e-8 and below: float32 descending cumsum hits 1.0 early
        "flat": normal * 0.05,
        "uniform": torch.zeros(4, 200),  # every score tied: top-k keeps the whole vocabulary
        "ties": ties,
    }


CASES = [(k, p, t) for k in (5, 50, 200) for p in (1.0, 0.9999, 0.999, 0.95, 0.5) for t in (0.7, 1.3)]


@pytest.mark.parametrize("logits_name", list(_logit_cases()))
def test_truncation_is_the_support_of_hf_samplers(logits_name):
    """The pool equals the support of HF's TemperatureLogitsWarper + TopK + TopP, token for token.

    The boundary rule is HF's: a token is dropped when the float32 mass at or below it in ascending
    order is ``<= 1 - top_p``. Where some ascending partial sum lies within float32 rounding of
    ``1 - top_p`` our sum and HF's may round apart, so on those rows (and only there) the test checks
    that rule itself, in float64, instead of comparing with HF token for token.
    """
    logits = _logit_cases()[logits_name]
    for top_k, top_p, temperature in CASES:
        pool = candidates.truncate(logits, top_k, top_p, temperature)
        support, ref_probs = _hf_support(logits, top_k, top_p, temperature)
        scores = logits.float() / temperature
        for b in range(logits.shape[0]):
            case = (top_k, top_p, temperature, b)
            size = int(pool.size[b])
            ours = pool.tokens[b, :size].tolist()
            assert len(set(ours)) == size and torch.isinf(pool.logq[b, size:]).all(), case
            kth = scores[b].topk(min(top_k, 200)).values[-1]
            in_k = (scores[b] >= kth).nonzero().squeeze(1)  # HF's top-k: every score >= the k-th, ties included
            assert set(ours) <= set(in_k.tolist()), case
            probs = dict(zip(in_k.tolist(), torch.softmax(scores[b, in_k], -1).double().tolist()))
            ascending = torch.tensor(sorted(probs.values()), dtype=torch.float64).cumsum(0)
            threshold = 1 - top_p
            ambiguous = top_p < 1.0 and bool(((ascending - threshold).abs() <= 1e-6 * ascending + 1e-9).any())
            if not ambiguous:
                assert set(ours) == support[b], case
                torch.testing.assert_close(
                    pool.logq[b, :size].exp(), ref_probs[b, pool.tokens[b, :size]], atol=1e-6, rtol=1e-4
                )
            elif top_p < 1.0:  # the rule: dropped mass <= 1 - top_p < dropped mass + the least kept token's
                dropped = sum(p for t, p in probs.items() if t not in ours)
                least = min(probs[t] for t in ours)
                assert dropped <= threshold + 1e-6 and dropped + least > threshold - 1e-6, case
            if top_p >= 1.0:
                assert set(ours) == set(in_k.tolist()), case  # no nucleus truncation at all


@pytest.mark.parametrize("top_p", [0.5, 0.75, 0.9, 0.95])
def test_boundary_inside_a_tie_is_decided_by_hf(top_p):
    # Groups of equal scores; for each top_p the boundary falls well inside a group (never within float
    # rounding of a group's edge), so which members survive is whatever HF's (unstable) sort does, reproduced.
    groups = torch.cat([torch.full((5,), 3.0), torch.full((20,), 2.0), torch.full((75,), 1.0), torch.zeros(100)])
    shuffled = groups[torch.randperm(200, generator=torch.Generator().manual_seed(1))]
    logits = torch.stack([torch.zeros(200), groups, shuffled])
    pool = candidates.truncate(logits, 200, top_p, 1.0)
    support, _ = _hf_support(logits, 200, top_p, 1.0)
    assert [set(pool.tokens[b, : int(pool.size[b])].tolist()) for b in range(len(logits))] == support


def test_top_p_one_keeps_every_top_k_token():
    logits = _logit_cases()["peaked"]
    pool = candidates.truncate(logits, 200, 1.0, 1.3)
    assert pool.size.tolist() == [200] * 16  # ~90 tail tokens under probability 1e-7: top_p=1 keeps them too
    assert candidates.truncate(logits, 50, 1.0, 1.0).size.tolist() == [50] * 16


def test_ties_follow_hf_order():
    # four equal scores: ascending mass 0.25, 0.5, 0.75, 1.0 (exact in float32); top_p=0.5 drops the
    # two that HF's ascending sort puts first (mass 0.25 and 0.5 are <= 0.5): ids 0 and 1 (its sort is
    # stable at this size), even though the pool's own order of equal scores is by ascending id
    pool = candidates.truncate(torch.zeros(1, 4), 4, 0.5, 1.0)
    assert pool.tokens[0, : int(pool.size[0])].tolist() == [2, 3]
    assert candidates.truncate(torch.zeros(1, 4), 4, 1.0, 1.0).tokens[0].tolist() == [
        0,
        1,
        2,
        3,
    ]  # ties as argmax orders them
    # top-k keeps every token tied with the k-th score: 3 tokens for top_k=2
    pool = candidates.truncate(torch.tensor([[5.0, 3.0, 3.0, 1.0]]), 2, 1.0, 1.0)
    assert sorted(pool.tokens[0, : int(pool.size[0])].tolist()) == [0, 1, 2]


def test_pool_width_covers_long_ties():
    pool = candidates.truncate(torch.zeros(2, 300), 10, 1.0, 1.0)  # 300 tokens tie with the 10th
    assert pool.size.tolist() == [300, 300] and pool.tokens.shape == (2, 300)
    assert (
        candidates.pad(pool, 310).tokens.shape == (2, 310)
        and torch.isinf(candidates.pad(pool, 310).logq[:, 300:]).all()
    )


def test_gumbel_order_samples_without_replacement():
    probs = torch.tensor([0.5, 0.3, 0.2])
    pool = candidates.Pool(
        torch.tensor([[7, 8, 9]]).repeat(4000, 1),
        probs.log().repeat(4000, 1),
        probs.log().repeat(4000, 1),
        torch.full((4000,), 3),
    )
    seeds = torch.arange(4000)
    noise = candidates.gumbel(
        seeds, torch.zeros(4000, dtype=torch.long), torch.zeros(4000, dtype=torch.long), pool.tokens
    )
    ordered = candidates.order(pool, noise)
    first = ordered.tokens[:, 0]
    freq = torch.stack([(first == t).float().mean() for t in (7, 8, 9)])
    torch.testing.assert_close(freq, probs, atol=0.03, rtol=0)
    assert all(len(set(row)) == 3 for row in ordered.tokens[:100].tolist())
    # second place given 7 first: 0.3/0.5 for 8
    second = ordered.tokens[first == 7, 1]
    assert abs((second == 8).float().mean().item() - 0.6) < 0.05


def test_hash_is_deterministic_and_uniform():
    keys = torch.arange(20000)
    u = candidates.hash_uniform(torch.tensor(5), keys)
    assert torch.equal(u, candidates.hash_uniform(torch.tensor(5), keys))
    assert not torch.equal(u, candidates.hash_uniform(torch.tensor(6), keys))
    assert abs(u.mean().item() - 0.5) < 0.01 and abs(u.var().item() - 1 / 12) < 0.005
    assert 0 < u.min() and u.max() < 1


def test_must_commit():
    offer = torch.tensor([0, 1, 2, 0, 3])
    size = torch.tensor([1, 3, 3, 5, 5])
    assert candidates.must_commit(offer, size, None).tolist() == [True, False, True, False, False]
    assert candidates.must_commit(offer, size, 2).tolist() == [True, False, True, False, True]
