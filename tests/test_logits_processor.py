"""ProxyLogitsProcessor in HF's own ``generate``: its first- and second-token frequencies against the exact π
(computed independently, through SB3's policy and :func:`proxy_env.engine.steering.steered_probs`) and against
the env's accept/reject sampler. Chi-square tests with fixed seeds: each either passes or fails the
same way on every run."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from gymnasium import spaces
from scipy import stats

from agents.accept import accept_model
from agents.generate import ProxyGenerator
from agents.logits_processor import ProxyLogitsProcessor, constant_proxy
from agents.policies import proxy_policy_kwargs
from agents.saving.checkpoint import save_checkpoint
from agents.saving.folder import load_proxy
from proxy_env.engine import candidates
from proxy_env.engine.steering import prefix_observation, steered_probs
from proxy_env.engine.tiny import tiny_word_lm
from proxy_env.errors import ProxyEnvError

PROMPTS = ["w5 w17 w33", "w8 w1 w99 w100 w7 w3 w250"]  # different lengths: generate left-pads the batch
SKAM = {"top_k": 8, "top_p": 0.9, "temperature": 0.9}
N = 1000  # samples per prompt and sampler
P_MIN = 1e-3  # a correct sampler passes at this level with probability 0.999; the seeds are fixed


@pytest.fixture(scope="module")
def lm():
    return tiny_word_lm()  # a 512-token vocabulary: HF's multinomial over 49,152 would dominate the test; pools of 7


def _ppo(dim: int, hidden: int | None = None):
    """An untrained PPO proxy whose accept probabilities spread over (0.1, 0.99) across a pool: π is far from q.

    With ``hidden`` (prefix observations) the features read only the candidate's embedding, the
    part of the observation that differs between candidates.
    """
    from stable_baselines3 import PPO

    torch.manual_seed(0)
    agent = PPO(
        "MlpPolicy", None, policy_kwargs=proxy_policy_kwargs("ppo"), _init_setup_model=False, seed=0, device="cpu"
    )
    agent.observation_space, agent.action_space, agent.n_envs = (
        spaces.Box(-np.inf, np.inf, (dim,), np.float32),
        spaces.Discrete(2),
        1,
    )
    agent._setup_model()
    with torch.no_grad():
        agent.policy.action_net.weight.normal_(0, 3.0)
        if hidden is not None:
            weight = agent.policy.features_extractor.net[1].weight  # (64, 3H + 2)
            weight[:, :hidden] = 0
            weight[:, 2 * hidden :] = 0  # ē, log p, log q
            weight[:, hidden : 2 * hidden] *= 3  # e only: ē and the log-probabilities are zeroed above
    return agent


@pytest.fixture(scope="module")
def prefix_proxy(lm, tmp_path_factory):
    agent = _ppo(3 * lm.hidden_size + 2, lm.hidden_size)
    folder = save_checkpoint(
        agent,
        tmp_path_factory.mktemp("proxy") / "prefix",
        lm=lm,
        env_kwargs={"model": "tiny-word", "observation": "prefix", "max_new_tokens": 2, **SKAM},
    )
    return agent, folder


def _exact(lm, agent, ids: list[int], observation: str = "prefix", max_rejections=None) -> dict[int, float]:
    """π over the pool after ``ids``, from a full forward and SB3's own policy (not the processor's code path)."""
    out = lm.forward_full(ids)
    pool = candidates.truncate(out.logits[-1:], SKAM["top_k"], SKAM["top_p"], SKAM["temperature"])
    size = int(pool.size[0])
    q = pool.logq.double().exp()
    if observation == "prefix":
        obs = prefix_observation(lm, out.hidden[-1:], pool.tokens, pool.logprob, pool.logq)[0]  # (K, d)
    else:
        obs = torch.stack([lm.forward_full(ids + [int(t)]).hidden[-1] for t in pool.tokens[0]])  # (K, H)
    a = torch.as_tensor(accept_model(agent, deterministic=False)(obs.numpy()), dtype=torch.float64)[None]
    pi = steered_probs(q / q.sum(), a.masked_fill(torch.arange(a.shape[1])[None] >= size, 0.0), max_rejections)[0]
    return {int(t): float(p) for t, p in zip(pool.tokens[0, :size], pi[:size]) if p > 0}


def _exact_pairs(lm, agent, ids: list[int]) -> dict[tuple[int, int | None], float]:
    eos = set(lm.eos_token_ids)
    joint: dict[tuple[int, int | None], float] = {}
    for t1, p1 in _exact(lm, agent, ids).items():
        if t1 in eos:
            joint[(t1, None)] = p1
            continue
        for t2, p2 in _exact(lm, agent, ids + [t1]).items():
            joint[(t1, t2)] = p1 * p2
    return joint


def _generate(lm, processor, prompts: list[str], seed: int, max_new_tokens: int = 2) -> torch.Tensor:
    ids, mask = lm.left_pad([lm.encode_prompt(p) for p in prompts])
    torch.manual_seed(seed)
    out = lm.model.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=max_new_tokens,
        pad_token_id=2,
        eos_token_id=lm.eos_token_ids,
        **processor.generate_kwargs(),
    )
    return out[:, ids.shape[1] :]  # (B, T)


def _pairs(rows, eos: set[int]) -> list[tuple[int, int | None]]:
    return [(int(r[0]), None if int(r[0]) in eos or len(r) < 2 else int(r[1])) for r in rows]


def _chisquare(samples: list, expected: dict) -> float:
    """p-value of ``samples`` against ``expected`` probabilities; cells expecting < 5 counts are pooled."""
    counts, n = Counter(samples), len(samples)
    assert set(counts) <= set(expected), f"samples outside the support: {set(counts) - set(expected)}"
    big = [c for c, p in expected.items() if p * n >= 5]
    obs = [counts[c] for c in big] + [n - sum(counts[c] for c in big)]
    exp = [expected[c] * n for c in big] + [n * (1 - sum(expected[c] for c in big))]
    if exp[-1] < 5:  # the pooled rest is too small to be a cell of its own
        obs, exp = obs[:-2] + [obs[-2] + obs[-1]], exp[:-2] + [exp[-2] + exp[-1]]
    return float(stats.chisquare(obs, exp).pvalue)


def test_generate_first_and_second_tokens_match_exact_pi_and_the_env(lm, prefix_proxy):
    agent, folder = prefix_proxy
    eos = set(lm.eos_token_ids)
    processor = ProxyLogitsProcessor(folder, lm.model, lm.tokenizer)
    try:
        rows = _generate(lm, processor, [p for p in PROMPTS for _ in range(N)], seed=0)
    finally:
        processor.remove()
    env = ProxyGenerator(
        lm, agent, batch_size=2 * N, deterministic=False, seed=0, observation="prefix", max_new_tokens=2, **SKAM
    )
    torch.manual_seed(0)  # SB3 samples the proxy's actions from torch's generator
    env_rows = [g.token_ids for g in env.generate([p for p in PROMPTS for _ in range(N)])]
    for i, prompt in enumerate(PROMPTS):
        ids = lm.encode_prompt(prompt)
        first, joint = _exact(lm, agent, ids), _exact_pairs(lm, agent, ids)
        pool = candidates.truncate(lm.forward_full(ids).logits[-1:], **SKAM)
        q = {int(t): float(p) for t, p in zip(pool.tokens[0], pool.logq[0].exp()) if p > 0}
        assert sum(abs(first[t] - q[t]) for t in q) > 0.2, "the proxy must steer for the test to mean anything"
        ours, theirs = rows[i * N : (i + 1) * N], env_rows[i * N : (i + 1) * N]
        assert _chisquare([int(r[0]) for r in ours], first) > P_MIN
        assert _chisquare(_pairs(ours, eos), joint) > P_MIN
        assert _chisquare([r[0] for r in theirs], first) > P_MIN
        assert _chisquare(_pairs(theirs, eos), joint) > P_MIN
        assert _chisquare([int(r[0]) for r in ours], q) < 1e-6  # the unsteered q is rejected: the test has power
        cells = sorted(set(_pairs(ours, eos)) | set(_pairs(theirs, eos)), key=str)
        a, b = Counter(_pairs(ours, eos)), Counter(_pairs(theirs, eos))
        keep = [c for c in cells if a[c] + b[c] >= 10]
        table = [
            [a[c] for c in keep] + [N - sum(a[c] for c in keep)],
            [b[c] for c in keep] + [N - sum(b[c] for c in keep)],
        ]
        assert stats.chi2_contingency(np.array(table) + 1e-9 * (np.array(table) == 0)).pvalue > P_MIN  # generate ~ env


def test_always_accept_is_hf_sampler_token_for_token(lm):
    proxy = constant_proxy(1.0, hidden_size=lm.hidden_size, **SKAM)
    with ProxyLogitsProcessor(proxy, lm.model, lm.tokenizer, check_fingerprint=False) as processor:
        steered = _generate(lm, processor, PROMPTS * 100, seed=3, max_new_tokens=4)
    ids, mask = lm.left_pad([lm.encode_prompt(p) for p in PROMPTS * 100])
    torch.manual_seed(3)
    plain = lm.model.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=4,
        pad_token_id=2,
        eos_token_id=lm.eos_token_ids,
        do_sample=True,
        **SKAM,
    )[:, ids.shape[1] :]
    assert torch.equal(steered, plain)
    assert len({tuple(r.tolist()) for r in plain}) > 20  # sampled, not greedy


def test_scores_softmax_is_pi_and_minus_inf_outside_the_pool(lm, prefix_proxy):
    agent, folder = prefix_proxy
    ids = lm.encode_prompt(PROMPTS[1])
    with ProxyLogitsProcessor(folder, lm) as processor:
        out = lm.model(input_ids=torch.tensor([ids]))  # the hook records the hidden state, as in generate
        scores = processor(torch.tensor([ids]), out.logits[:, -1].float())
    probs = scores.softmax(-1)[0]
    exact = _exact(lm, agent, ids)
    assert set(torch.isfinite(scores[0]).nonzero().squeeze(1).tolist()) == set(exact)
    for token, p in exact.items():
        assert abs(float(probs[token]) - p) < 1e-6


def test_candidate_observation_costs_a_pool_forward_and_matches_exact_pi(lm, tmp_path):
    agent = _ppo(lm.hidden_size)
    folder = save_checkpoint(
        agent,
        tmp_path / "cand",
        lm=lm,
        env_kwargs={"model": "tiny-word", "observation": "candidate", "max_rejections": 2, **SKAM},
    )
    with ProxyLogitsProcessor(folder, lm) as processor:
        assert processor.proxy.skam["max_rejections"] == 2
        rows = _generate(lm, processor, [p for p in PROMPTS for _ in range(N // 2)], seed=1, max_new_tokens=1)
        one = _generate(lm, processor, PROMPTS[:1], seed=1, max_new_tokens=2)  # no padding: generate passes no mask
        assert one.shape == (1, 2)
    for i, prompt in enumerate(PROMPTS):
        exact = _exact(lm, agent, lm.encode_prompt(prompt), "candidate", max_rejections=2)
        assert _chisquare([int(r[0]) for r in rows[i * N // 2 : (i + 1) * N // 2]], exact) > P_MIN


def test_processor_refusals(lm, prefix_proxy, tiny_gpt2):
    _, folder = prefix_proxy
    with pytest.raises(ProxyEnvError, match=r"trained on the LLM 'tiny-word'.*vocab_size 512 vs 49152"):
        ProxyLogitsProcessor(folder, tiny_gpt2)
    stats_proxy = load_proxy(folder)
    stats_proxy.observation = "candidate_stats"
    with pytest.raises(ProxyEnvError, match=r"observation='candidate_stats'.*offer rank"):
        ProxyLogitsProcessor(stats_proxy, lm)
    processor = ProxyLogitsProcessor(folder, lm)
    with pytest.raises(ProxyEnvError, match="saw no forward of its model"):
        processor(torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, lm.vocab_size))
    processor.remove()
    with pytest.raises(ProxyEnvError, match="was removed"):
        processor(torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, lm.vocab_size))


def test_an_llm_with_the_same_architecture_and_other_weights_is_refused():
    """The fingerprint covers the weights too (a sample, rounded to bfloat16), not only the config."""
    from agents.saving.folder import ProxyFolderError, check_llm, fingerprint
    from proxy_env.engine.tiny import tiny_lm

    trained_on, other = tiny_lm(seed=0), tiny_lm(seed=1)
    saved = {"name": "tiny", "fingerprint": fingerprint(trained_on.model, trained_on.tokenizer)}
    check_llm(saved, trained_on.model, trained_on.tokenizer, where="proxy")  # the same LLM passes
    check_llm(saved, trained_on.model.to(torch.bfloat16), trained_on.tokenizer, where="proxy")  # in bf16 too
    with pytest.raises(ProxyFolderError, match=r"weights_hash '[0-9a-f]{16}' vs '[0-9a-f]{16}'"):
        check_llm(saved, other.model, other.tokenizer, where="proxy")
