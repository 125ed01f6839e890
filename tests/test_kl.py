import numpy as np
import pytest
import torch

from agents.eval.kl import brute_force_probs, kl_divergence, rank_dependent_probs, steered_probs, trajectory


def _pool(g: torch.Generator, k: int, size: int) -> torch.Tensor:
    q = torch.zeros(k, dtype=torch.float64)
    q[:size] = torch.rand(size, generator=g, dtype=torch.float64) ** 3 + 1e-4
    return (q / q.sum())[torch.randperm(k, generator=g)]


@pytest.mark.parametrize("max_rejections", [None, 0, 1, 3], ids=lambda m: f"cap={m}")
@pytest.mark.parametrize("kind", ["random", "binary", "tied"])
def test_steered_probs_match_enumeration(max_rejections, kind):
    g = torch.Generator().manual_seed(1)
    for _ in range(8):
        q = _pool(g, 6, int(torch.randint(1, 7, (1,), generator=g)))
        a = torch.rand(6, generator=g, dtype=torch.float64)
        a = (a > 0.5).double() if kind == "binary" else torch.full_like(a, 0.3) if kind == "tied" else a
        pi = steered_probs(q[None], a[None], max_rejections)[0]
        torch.testing.assert_close(pi, brute_force_probs(q, a, max_rejections), atol=1e-10, rtol=0)
        assert abs(float(pi.sum()) - 1) < 1e-9


def test_greedy_order_and_rank_dependent_monte_carlo():
    g = torch.Generator().manual_seed(2)
    q = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64)
    a = torch.tensor([0.0, 0.5, 1.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(
        steered_probs(q[None], a[None], order="greedy")[0], torch.tensor([0.0, 0.5, 0.5, 0.0], dtype=torch.float64)
    )
    table = torch.rand(4, 4, generator=g, dtype=torch.float64)
    mc = rank_dependent_probs(q[None], table[None], 2, samples=40000, generator=g)[0]
    torch.testing.assert_close(mc, brute_force_probs(q, table, 2), atol=0.01, rtol=0)


def test_always_accept_is_q_and_rejecting_the_top_moves_away():
    q = (
        torch.softmax(torch.randn(16, 40, generator=torch.Generator().manual_seed(3)) * 3, -1)
        .double()
        .sort(-1, descending=True)
        .values
    )
    ones = torch.ones_like(q)
    assert float(kl_divergence(steered_probs(q, ones), q).abs().max()) < 1e-9
    reject_top = ones.clone()
    reject_top[:, 0] = 0.0  # pools sorted by descending q: never accept the most likely token
    kl = kl_divergence(steered_probs(q, reject_top), q)
    assert bool((kl > 1e-3).all())


def test_trajectory_kl_on_tiny_model(tiny):
    from agents.baselines import AlwaysAccept
    from agents.generate import ProxyGenerator

    g = ProxyGenerator(tiny, AlwaysAccept(), max_new_tokens=6, seed=0).generate(["Tell me a story."])[0]
    ids = tiny.encode_prompt("Tell me a story.")
    kw = {"top_k": 50, "top_p": 0.95, "temperature": 1.0}
    base = trajectory(tiny, ids, g.token_ids, 1.0, **kw)
    assert abs(base.kl) < 1e-9 and base.length == len(g.token_ids) and np.isfinite(base.nll)
    assert trajectory(tiny, ids, g.token_ids, 0.0, **kw).kl > 0  # always reject: the last arrival is committed
    # an observation-dependent proxy goes through the candidate forward; accept-everything must still give 0
    assert abs(trajectory(tiny, ids, g.token_ids, lambda obs: np.ones(len(obs)), **kw).kl) < 1e-9


def test_candidate_hidden_states_are_the_env_observations(tiny):
    """The KL pass recomputes, in one forward, the observation the env shows for every pool candidate;
    the exact KL of a learned proxy is only right if those match what the proxy saw in the env."""
    from proxy_env.vector.vector_env import ProxyRLHFVectorEnv

    top_k, top_p = 6, 1.0  # wide pools: most positions need a decision on the tiny model
    venv = ProxyRLHFVectorEnv(
        1,
        model=tiny,
        prompts=["Tell me a story"],
        max_new_tokens=8,
        top_k=top_k,
        top_p=top_p,
        reward=lambda prompts, responses: [0.0] * len(responses),
        info_text=True,
    )
    obs, info = venv.reset(seed=3)
    seen, rng, done = [], np.random.default_rng(0), False
    while not done:
        seen.append((int(info["position"][0]), int(info["token_id"][0]), obs[0].copy()))
        obs, _, terminated, truncated, info = venv.step(rng.integers(0, 2, size=1))
        done = bool(terminated[0] or truncated[0])
    response = [int(t) for t in info["final_info"]["response_ids"][0]]
    recorded = []
    trajectory(
        tiny,
        tiny.encode_prompt("Tell me a story"),
        response,
        lambda o: recorded.append(o) or np.full(len(o), 0.5),
        top_k=top_k,
        top_p=top_p,
        temperature=1.0,
    )
    logits = tiny.forward_full(tiny.encode_prompt("Tell me a story") + response).logits
    from proxy_env.engine import candidates

    pools = candidates.truncate(logits[-len(response) - 1 : -1], top_k, top_p, 1.0).tokens  # (T, W): top_k + tie margin
    table = recorded[0].reshape(
        len(response), pools.shape[1], -1
    )  # (T, W, H) in the pool's descending-probability order
    assert len(seen) >= 3
    for position, token, observation in seen:
        k = int((pools[position] == token).nonzero()[0, 0])
        np.testing.assert_allclose(table[position, k], observation, atol=1e-4, rtol=1e-4)
