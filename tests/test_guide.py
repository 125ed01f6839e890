"""Guidance by the value head at decoding time (agents/value/guide.py): the accept rule, the guide, the bench rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.eval.kl import brute_force_probs
from agents.value.guide import ValueGuide, solve_accept, value_guide
from agents.value.head import ValueHead, ValueHeadConfig, expected_power, save_value_head
from proxy_env.engine import candidates
from proxy_env.engine.steering import kl_divergence, prefix_observation, steered_probs
from proxy_env.errors import ConfigError


def _head(lm, seed: int = 0, bins: int = 12) -> ValueHead:
    """A random head (a test fixture only: it says nothing about any value), with a spread of predictions."""
    torch.manual_seed(seed)
    head = ValueHead(ValueHeadConfig(obs_dim=3 * lm.hidden_size + 2, bins=bins, width=32, model=lm.name))
    with torch.no_grad():
        head.net[0].weight[:, lm.hidden_size : 2 * lm.hidden_size] *= 10.0  # the candidate's embedding counts most
        head.net[-1].weight.mul_(8.0)  # sharper histograms: candidates' W differ by factors, not percents
    return head.eval()


@pytest.mark.parametrize("max_rejections", [None, 1])
def test_solve_accept_steers_each_pool_to_q_times_the_weight(max_rejections):
    gen = torch.Generator().manual_seed(0)
    q = torch.softmax(2 * torch.randn(6, 5, generator=gen), -1)
    q[:2, 4] = 0.0  # padding
    weight = torch.rand(6, 5, generator=gen, dtype=torch.float64) ** 4 + 0.01
    accept = solve_accept(q, weight, max_rejections=max_rejections, iters=40)
    assert ((accept >= 0) & (accept <= 1)).all() and (accept[:2, 4] == 0).all()
    target = q.double() * weight
    target = target.masked_fill(q == 0, 0.0) / target.masked_fill(q == 0, 0.0).sum(-1, keepdim=True)
    exact = torch.stack([brute_force_probs(q[i], accept[i], max_rejections) for i in range(6)])  # every offer order
    gap = kl_divergence(target, exact)
    if max_rejections is None:  # every target is reachable: the fixed point gets there
        assert float(gap.max()) < 5e-3
        start = brute_force_probs(q[0], weight[0] / weight[0].max())  # the with-replacement rule it starts from
        assert float(gap[0]) < 0.2 * float(kl_divergence(target[:1], start[None]))
    else:  # one rejection at most: nearer than the LLM's own sampler, not exact
        assert (gap < kl_divergence(target, q.double())).all()
    flat = solve_accept(q, torch.ones(6, 5))
    assert torch.equal(flat, (q > 0).double())  # no tilt: accept everything


def test_the_guide_rebuilds_the_pool_from_the_observation_and_applies_the_tilt(tiny):
    head = _head(tiny)
    guide = ValueGuide(head, tiny, 8, temperature=2.0)  # flatter pools than the tiny model's own
    out = tiny.forward_full(tiny.encode_prompt("How are you today?"))
    hidden, logits = out[0][-4:], out[1][-4:]  # four positions of the prompt, as the env would observe them
    pool = candidates.truncate(logits, 50, 0.95, 2.0)
    obs = prefix_observation(tiny, hidden, pool.tokens, pool.logprob, pool.logq)  # (3, K, d): the env's
    q = pool.logq.double().exp()
    valid = q > 0
    accept = torch.from_numpy(guide.accept_prob(obs[valid].numpy()))  # every candidate of the three pools at once
    full = torch.zeros_like(q).masked_scatter(valid, accept)
    with torch.no_grad():
        weight = expected_power(head.probs(obs), 7.0)
    target = (q * weight).masked_fill(~valid, 0.0)
    target = target / target.sum(-1, keepdim=True)
    pi = steered_probs(q, full)
    assert guide.unmatched == 0
    tilt = kl_divergence(target, q)  # how far the target is from the LLM's own pool
    assert float(tilt.max()) > 0.01 and (kl_divergence(target, pi) <= 0.05 * tilt + 1e-9).all()
    # one candidate at a time (as the env offers them), in another order: the same probabilities, from the cache
    again = guide.accept_prob(obs[valid].numpy()[::-1].copy())[::-1]
    np.testing.assert_allclose(again, accept.numpy())
    best_of_1 = ValueGuide(head, tiny, 1, temperature=2.0)
    assert best_of_1.accept_prob(obs[valid].numpy()).min() == 1.0  # the LLM itself
    mean = ValueGuide(head, tiny, 8, temperature=2.0, rule="mean")  # the head read as a mean value only
    with torch.no_grad():
        plug_in = expected_power(head.probs(obs), 1.0) ** 7
    assert (plug_in <= weight + 1e-12).all()  # Jensen: E[u]^7 <= E[u^7]
    target = (q * plug_in).masked_fill(~valid, 0.0)
    target = target / target.sum(-1, keepdim=True)
    by_mean = torch.zeros_like(q).masked_scatter(valid, torch.from_numpy(mean.accept_prob(obs[valid].numpy())))
    assert (kl_divergence(target, steered_probs(q, by_mean)) <= 0.05 * kl_divergence(target, q) + 1e-9).all()
    proxy = value_guide(head, tiny, 4, seed=0)
    actions, _ = proxy.predict(obs[0, :4].numpy())
    assert actions.shape == (4,) and set(actions.tolist()) <= {0, 1}


def test_the_guide_refuses_what_it_cannot_read(tiny):
    head = _head(tiny)
    with pytest.raises(ConfigError, match="n=0"):
        ValueGuide(head, tiny, 0)
    with pytest.raises(ConfigError, match="rule"):
        ValueGuide(head, tiny, 4, rule="median")
    with pytest.raises(ConfigError, match="observation='prefix'"):
        ValueGuide(head, tiny, 4).accept_prob(np.zeros((2, 10), dtype=np.float32))
    layer = ValueHead(ValueHeadConfig(obs_dim=3 * tiny.hidden_size + 2, model=tiny.name, hidden_layer=-2))
    with pytest.raises(ConfigError, match="hidden_layer=-2"):
        ValueGuide(layer, tiny, 4)


def test_bench_evaluates_one_head_at_every_n(tmp_path, tiny):
    from agents.eval.bench import run_bench
    from agents.eval.results import BenchConfig

    folder = save_value_head(_head(tiny), tmp_path / "head")
    cfg = BenchConfig(
        model="tiny",
        num_prompts=3,
        n=(2,),
        bon_reference=2,
        max_new_tokens=5,
        batch_size=3,
        value_heads=(str(folder),),
        value_n=(1, 8),
        value_rules=("distribution", "mean"),
        out=str(tmp_path / "bench"),
    )
    result = run_bench(cfg, lm=tiny)
    rows = {e.name: e for e in result.agents}
    one, eight = rows["value guide (head) [N=1]"], rows["value guide (head) [N=8]"]
    base = rows["always-accept"]
    assert one.token_ids == base.token_ids and np.allclose(one.kl, 0.0, atol=1e-9)  # N = 1 is the LLM's own sampler
    assert np.isfinite(eight.kl).all() and eight.kl.sum() > 0 and eight.rejection_rates.sum() > 0
    assert eight.trainable_params == sum(p.numel() for p in _head(tiny).parameters())
    plug_in = rows["value guide (head) [N=8, mean]"]
    assert rows["value guide (head) [N=1, mean]"].token_ids == base.token_ids and plug_in.token_ids != eight.token_ids
    with pytest.raises(ConfigError, match="value_n"):
        BenchConfig(value_heads=(str(folder),), value_n=(0,)).resolved()
    with pytest.raises(ConfigError, match="value_rules"):
        BenchConfig(value_heads=(str(folder),), value_rules=("median",)).resolved()


def test_the_bench_command_passes_the_heads_and_their_n(tmp_path, monkeypatch):
    import agents.eval.bench
    from agents.cli import main

    seen = {}

    def capture(cfg, **kwargs):
        seen["cfg"] = cfg
        raise SystemExit(0)

    monkeypatch.setattr(agents.eval.bench, "run_bench", capture)
    with pytest.raises(SystemExit):
        main(
            [
                "bench",
                "--quick",
                "--value-head",
                "a",
                "b",
                "--value-n",
                "2",
                "16",
                "--value-rules",
                "mean",
                "--out",
                str(tmp_path / "o"),
            ]
        )
    assert seen["cfg"].value_heads == ("a", "b") and seen["cfg"].value_n == (2, 16)
    assert seen["cfg"].value_rules == ("mean",)
