import torch

from proxy_env import candidates as skam


def test_truncation_matches_hf_samplers():
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    torch.manual_seed(0)
    logits = torch.randn(16, 200) * 3
    for top_k, top_p, temperature in [(50, 0.9, 1.0), (10, 0.5, 0.7), (200, 1.0, 1.3), (5, 0.99, 2.0)]:
        pool = skam.truncate(logits, top_k, top_p, temperature)
        ref = TemperatureLogitsWarper(temperature)(None, logits.clone())
        ref = TopKLogitsWarper(top_k)(None, ref)
        ref = TopPLogitsWarper(top_p)(None, ref)
        ref_probs = torch.softmax(ref, -1)
        for b in range(16):
            size = int(pool.size[b])
            assert set(pool.tokens[b, :size].tolist()) == set(torch.nonzero(torch.isfinite(ref[b])).squeeze(1).tolist())
            torch.testing.assert_close(pool.logprob_trunc[b, :size].exp(), ref_probs[b, pool.tokens[b, :size]], atol=1e-5, rtol=1e-4)


def test_gumbel_order_samples_without_replacement():
    probs = torch.tensor([0.5, 0.3, 0.2])
    pool = skam.Pool(torch.tensor([[7, 8, 9]]).repeat(4000, 1), probs.log().repeat(4000, 1), probs.log().repeat(4000, 1),
                     torch.full((4000,), 3))
    seeds = torch.arange(4000)
    noise = skam.gumbel(seeds, torch.zeros(4000, dtype=torch.long), torch.zeros(4000, dtype=torch.long), pool.tokens)
    ordered = skam.order(pool, noise)
    first = ordered.tokens[:, 0]
    freq = torch.stack([(first == t).float().mean() for t in (7, 8, 9)])
    torch.testing.assert_close(freq, probs, atol=0.03, rtol=0)
    assert all(len(set(row)) == 3 for row in ordered.tokens[:100].tolist())
    # second place given 7 first: 0.3/0.5 for 8
    second = ordered.tokens[first == 7, 1]
    assert abs((second == 8).float().mean().item() - 0.6) < 0.05


def test_hash_is_deterministic_and_uniform():
    keys = torch.arange(20000)
    u = skam.hash_uniform(torch.tensor(5), keys)
    assert torch.equal(u, skam.hash_uniform(torch.tensor(5), keys))
    assert not torch.equal(u, skam.hash_uniform(torch.tensor(6), keys))
    assert abs(u.mean().item() - 0.5) < 0.01 and abs(u.var().item() - 1 / 12) < 0.005
    assert 0 < u.min() and u.max() < 1


def test_must_commit():
    offer = torch.tensor([0, 1, 2, 0, 3])
    size = torch.tensor([1, 3, 3, 5, 5])
    assert skam.must_commit(offer, size, None).tolist() == [True, False, True, False, False]
    assert skam.must_commit(offer, size, 2).tolist() == [True, False, True, False, True]
