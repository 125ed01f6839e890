"""The batched env (proxy_env/vector/vector_env.py): batched equals single envs, the LLM's distribution under
always-accept, pools and termination, the KL charge, a failing reward, settings and actions checked, registration.
"""

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch

import proxy_env
from agents.eval.kl import trajectory
from proxy_env import Action
from proxy_env.engine import candidates
from proxy_env.errors import ActionError, ConfigError, ConfigTypeError, RewardError, StateError
from tests.conftest import PROMPTS

# Chi-square critical values at p = 0.001 by degrees of freedom.
CHI2_CRIT = {1: 10.83, 2: 13.82, 3: 16.27, 4: 18.47, 5: 20.52, 6: 22.46, 7: 24.32}


def _policy(env_index: int, seed: int = 0):
    rng = np.random.default_rng(1000 + env_index + seed)
    return lambda: int(rng.random() < 0.7)


# every engine path: the paper's observation, the no-forward-on-reject one, forced candidates as steps
MODES = [{}, {"observation": "prefix"}, {"forced_steps": True}, {"observation": "prefix", "forced_steps": True}]
MODE_IDS = ["candidate", "prefix", "candidate-forced-steps", "prefix-forced-steps"]


@pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)
def test_batched_env_equals_single_envs(make_venv, make_env, mode):
    _batched_equals_single(make_venv, make_env, mode)


@pytest.mark.gpu
@pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)
def test_batched_env_equals_single_envs_on_cuda(cuda_lm, mode):
    lm = cuda_lm("float32")
    _batched_equals_single(
        lambda n, **kw: gym.make_vec(
            proxy_env.ENV_ID, num_envs=n, vectorization_mode="vector_entry_point", model=lm, prompts=PROMPTS, **kw
        ),
        lambda **kw: gym.make(proxy_env.ENV_ID, model=lm, prompts=PROMPTS, **kw),
        mode,
    )


def _batched_equals_single(make_venv, make_env, mode):
    """Env i of a batched env, stepped by a seeded policy, gives what a single env run alone with seed + i gives."""
    n, steps, seed = 8, 40, 11
    venv = make_venv(n, max_new_tokens=5, reward=lambda p, r: [len(x) / 10 for x in r], **mode, info_text=True)
    obs, _ = venv.reset(seed=seed)
    policies = [_policy(i) for i in range(n)]
    vec_log = [[] for _ in range(n)]
    for i in range(n):
        vec_log[i].append(("reset", obs[i]))
    for _ in range(steps):
        actions = np.array([p() for p in policies])
        obs, reward, term, trunc, info = venv.step(actions)
        for i in range(n):
            if term[i] or trunc[i]:
                vec_log[i].append(
                    (
                        "step",
                        info["final_obs"][i],
                        reward[i],
                        term[i],
                        trunc[i],
                        tuple(info["final_info"]["response_ids"][i]),
                    )
                )
                vec_log[i].append(("reset", obs[i]))
            else:
                vec_log[i].append(("step", obs[i], reward[i], term[i], trunc[i], None))
    episodes = 0
    for i in range(n):
        env = make_env(max_new_tokens=5, reward=lambda p, r: [len(x) / 10 for x in r], **mode, info_text=True)
        obs, _ = env.reset(seed=seed + i)
        log = [("reset", obs)]
        policy = _policy(i)
        for _ in range(steps):
            obs, reward, term, trunc, info = env.step(policy())
            log.append(("step", obs, reward, term, trunc, tuple(info["response_ids"]) if term or trunc else None))
            if term or trunc:
                episodes += 1
                obs, _ = env.reset()
                log.append(("reset", obs))
        assert len(log) == len(vec_log[i])
        for a, b in zip(log, vec_log[i]):
            assert a[0] == b[0]
            np.testing.assert_allclose(a[1], b[1], atol=1e-4, rtol=1e-4)
            if a[0] == "step":
                assert a[2] == pytest.approx(b[2], abs=1e-9) and a[3:] == b[3:]
    assert episodes >= 3 * n  # several autoresets per env were compared


@pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)
def test_always_accept_samples_the_llm_distribution(make_venv, tiny, mode):
    _always_accept_is_the_sampler(make_venv, tiny, mode)


@pytest.mark.gpu
@pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)
def test_always_accept_samples_the_llm_distribution_on_cuda_in_bf16(cuda_lm, mode):
    lm = cuda_lm("bfloat16")

    def make_venv(n, **kw):
        return gym.make_vec(proxy_env.ENV_ID, num_envs=n, vectorization_mode="vector_entry_point", model=lm, **kw)

    _always_accept_is_the_sampler(make_venv, lm, mode)


def _always_accept_is_the_sampler(make_venv, lm, mode):
    """The first response token under always-accept against the LLM's truncated distribution (chi-square)."""
    n, top_k, temperature = 64, 5, 1.5
    venv = make_venv(
        n, prompts=["Hello!"], max_new_tokens=1, top_k=top_k, top_p=1.0, temperature=temperature, **mode, info_text=True
    )
    venv.reset(seed=3)
    counts: dict[int, int] = {}
    while sum(counts.values()) < 3000:
        _, _, term, trunc, info = venv.step(np.ones(n, dtype=np.int64))
        for i in np.flatnonzero(term | trunc):
            token = info["final_info"]["response_ids"][i][0]
            counts[token] = counts.get(token, 0) + 1
    logits = lm.forward_full(lm.encode_prompt("Hello!")).logits[-1:].float()
    pool = candidates.truncate(logits, top_k, 1.0, temperature)
    size = int(pool.size[0])
    expected = dict(zip(pool.tokens[0, :size].tolist(), pool.logq[0, :size].exp().tolist()))
    assert set(counts) <= set(expected)
    total = sum(counts.values())
    chi2 = sum((counts.get(t, 0) - total * p) ** 2 / (total * p) for t, p in expected.items())
    assert chi2 < CHI2_CRIT[len(expected) - 1], (counts, expected)


def test_greedy_order_always_accept_is_greedy_decoding(make_env, tiny):
    env = make_env(prompts=["Tell me a story."], order="greedy", max_new_tokens=10, info_text=True)
    env.reset(seed=0)
    done = False
    while not done:
        _, _, term, trunc, info = env.step(Action.ACCEPT)
        done = term or trunc
    ids = torch.tensor([tiny.encode_prompt("Tell me a story.")])
    ref = tiny.model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        do_sample=False,
        max_new_tokens=10,
        eos_token_id=tiny.eos_token_ids,
        pad_token_id=2,
    )
    assert info["response_ids"] == ref[0, ids.shape[1] :].tolist()


@pytest.mark.parametrize("max_rejections", [None, 2], ids=["cap-pool-size", "cap-2"])
def test_always_reject_respects_the_pool(make_env, tiny, max_rejections):
    top_k = 4
    env = make_env(
        prompts=["Hello!"], top_k=top_k, top_p=1.0, max_new_tokens=6, max_rejections=max_rejections, info_text=True
    )
    _obs, info = env.reset(seed=5)
    offered: dict[int, list[int]] = {}
    done = False
    while not done:
        offered.setdefault(info["position"], []).append(info["token_id"])
        assert info["rejections"] == len(offered[info["position"]]) - 1
        _, _reward, term, trunc, info = env.step(Action.REJECT)
        done = term or trunc
    response = info["response_ids"]
    prefix = tiny.encode_prompt("Hello!")
    for position, token in enumerate(response):
        pool = candidates.truncate(tiny.forward_full(prefix + response[:position]).logits[-1:], top_k, 1.0, 1.0)
        pool_tokens = set(pool.tokens[0, : int(pool.size[0])].tolist())
        asked = offered.get(position, [])
        assert len(asked) == len(set(asked)), "a rejected token was offered again at the same position"
        assert token in pool_tokens and set(asked) <= pool_tokens
        assert token not in asked, "the committed token was forced, never offered"
        cap = len(pool_tokens) - 1 if max_rejections is None else min(max_rejections, len(pool_tokens) - 1)
        assert len(asked) == cap
        if max_rejections is None:
            assert set(asked) | {token} == pool_tokens
    assert info["forced_commits"] == len(response)


def test_eos_and_the_budget_both_terminate(make_env, tiny):
    """The budget is part of the task: the reward model scores the response and nothing follows (never truncated)."""
    env = make_env(prompts=["Hello!"], order="greedy", max_new_tokens=3, info_text=True)
    env.reset(seed=0)
    first = env.unwrapped.vector_env.state.pool.tokens[0, 0].item()
    for _ in range(3):
        _, _, term, trunc, info = env.step(Action.ACCEPT)
        if term or trunc:
            break
    assert term and not trunc and info["response_ids"][-1] != 2 and len(info["response_ids"]) == 3
    saved = tiny.model.generation_config.eos_token_id
    tiny.model.generation_config.eos_token_id = [2, first]  # make the greedy first token an EOS
    try:
        env = make_env(prompts=["Hello!"], order="greedy", max_new_tokens=3, info_text=True)
        env.reset(seed=0)
        _, _, term, trunc, info = env.step(Action.ACCEPT)
        assert term and not trunc and info["response_ids"] == [first]
    finally:
        tiny.model.generation_config.eos_token_id = saved


def test_same_seed_same_everything(make_venv):
    venv = make_venv(4)
    runs = []
    for _ in range(2):
        obs, _ = venv.reset(seed=123)
        trace = [obs]
        for t in range(20):
            obs, reward, term, trunc, info = venv.step(np.array([t % 2, 1, 0, 1]))
            trace += [obs, reward, term, trunc, info["token_id"]]
        runs.append(trace)
    for a, b in zip(*runs):  # floats within tolerance (the cache layout differs between runs), the rest exact
        if a.dtype.kind == "f":
            np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)
        else:
            np.testing.assert_array_equal(a, b)


def test_reference_baseline(make_venv, tiny):
    venv = make_venv(
        2,
        prompts=["Hello!"],
        max_new_tokens=3,
        reward=lambda p, r: [float(len(x)) for x in r],
        reward_baseline="reference",
        info_text=True,
    )
    venv.reset(seed=0)
    for _ in range(20):
        _, reward, term, trunc, info = venv.step(np.ones(2, dtype=np.int64))
        for i in np.flatnonzero(term | trunc):
            final = info["final_info"]
            reference = venv.unwrapped.baseline.responses[0]
            assert final["reward_baseline"][i] == float(len(reference))
            assert reward[i] == pytest.approx(len(final["response"][i]) - len(reference))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"top_k": 1}, ConfigError, "top_k=1 must be >= 2"),
        ({"top_p": 1.5}, ConfigError, r"top_p=1.5 must be a float in \(0, 1\]"),
        ({"top_p": 0.0}, ConfigError, "top_p=0.0"),
        ({"temperature": 0}, ConfigError, "temperature=0 must be a float > 0"),
        ({"max_new_tokens": 0}, ConfigError, "max_new_tokens=0 must be >= 1"),
        ({"max_new_tokens": 2.5}, ConfigTypeError, "max_new_tokens=2.5 must be an int"),
        ({"order": "sampled"}, ConfigError, "order='sampled'.*Did you mean 'sample'"),
        ({"observation": "candidat"}, ConfigError, "observation='candidat'.*Did you mean 'candidate'"),
        ({"reward_baseline": "refrence"}, ConfigError, "reward_baseline='refrence'"),
        ({"reward_baseline": 0.25}, ConfigError, "reward_baseline=0.25 must be None or 'reference'"),
        ({"reject_cost": 0.1}, ConfigTypeError, "unexpected keyword argument 'reject_cost'"),
        ({"hidden_layer": 9}, ConfigError, "hidden_layer=9 is out of range"),
        ({"autoreset_mode": "same"}, ConfigError, "autoreset_mode='same'"),
        ({"prompts": []}, ConfigError, r"prompts=\[\] is empty"),
        ({"render_mode": 3}, ConfigTypeError, "render_mode=3 must be None or a string"),
    ],
    ids=lambda v: str(v)[:30],
)
def test_bad_kwargs(make_venv, kwargs, error, match):
    with pytest.raises(error, match=match):
        make_venv(2, **kwargs)


def test_bad_actions_and_step_before_reset(make_venv):
    venv = make_venv(2)
    with pytest.raises(StateError, match="before reset"):
        venv.step(np.ones(2, dtype=np.int64))
    venv.reset(seed=0)
    with pytest.raises(ActionError, match=r"shape \(2,\)"):
        venv.step(np.ones(3, dtype=np.int64))
    with pytest.raises(ActionError, match="dtype float"):
        venv.step(np.ones(2))
    with pytest.raises(ActionError, match=r"values \[0, 2\]"):
        venv.step(np.array([2, 0]))
    assert isinstance(ActionError("x"), ValueError)


def test_autoreset_modes(make_venv):
    from gymnasium.vector import AutoresetMode

    from proxy_env.vector.checks import check_vector_env

    for mode in (AutoresetMode.SAME_STEP, AutoresetMode.NEXT_STEP, AutoresetMode.DISABLED):
        venv = make_venv(3, max_new_tokens=3, autoreset_mode=mode)
        assert venv.metadata["autoreset_mode"] == mode
        check_vector_env(venv, steps=30)
    venv = make_venv(2, max_new_tokens=1, autoreset_mode=AutoresetMode.DISABLED)
    venv.reset(seed=0)
    venv.step(np.ones(2, dtype=np.int64))
    with pytest.raises(StateError, match="reset_mask"):
        venv.step(np.ones(2, dtype=np.int64))


def test_observation_modes_and_infos(make_venv, tiny):
    venv = make_venv(2, observation="candidate_stats", info_text=True)
    obs, info = venv.reset(seed=0)
    assert obs.shape == (2, tiny.hidden_size + 3)
    np.testing.assert_allclose(obs[:, -3], info["logprob"], rtol=1e-6)
    np.testing.assert_allclose(obs[:, -2], info["logq"], rtol=1e-6)
    assert (info["logq"] >= info["logprob"]).all() and (info["logprob"] < 0).all()
    assert [tiny.tokenizer.decode([t]) for t in info["token_id"]] == list(info["token"])
    assert venv.single_observation_space.shape == (tiny.hidden_size + 3,)
    assert venv.single_action_space == gym.spaces.Discrete(2)


def test_render_marks_rejections(make_env):
    env = make_env(render_mode="ansi", prompts=["Hello!"], top_k=4, top_p=1.0)
    env.reset(seed=0)
    env.step(Action.REJECT)
    env.step(Action.ACCEPT)
    text = env.render()
    assert text.startswith("PROMPT: Hello!") and "~~" in text


@pytest.mark.parametrize("mode", ["rgb_array", "human"])
def test_unsupported_render_mode_is_ignored_with_a_warning(make_venv, make_env, mode):
    """As gym.make does: a warning, not an error (SB3's make_vec_env passes render_mode="rgb_array")."""
    with pytest.warns(UserWarning, match=f"render_mode='{mode}' is not supported.*ignored"):
        venv = make_venv(2, render_mode=mode)
    assert venv.render_mode is None and venv.render() is None
    with warnings.catch_warnings(record=True) as caught:  # gym.make adds its own warning about the mode
        warnings.simplefilter("always")
        env = make_env(render_mode=mode)
    assert any(f"render_mode='{mode}' is not supported" in str(w.message) for w in caught)
    assert env.unwrapped.render_mode is None and env.unwrapped.render() is None


def test_cache_bounded_over_long_runs(make_venv):
    venv = make_venv(4, max_new_tokens=6)
    venv.reset(seed=0)
    rng = np.random.default_rng(0)
    lengths = []
    for _ in range(400):
        venv.step(rng.integers(0, 2, 4))
        lengths.append(venv.unwrapped.decoder.cache.length)
    assert max(lengths[200:]) <= max(lengths[:200]) + 8
    assert max(lengths) < 120


def test_reset_with_chosen_prompts(make_venv):
    venv = make_venv(3)
    venv.reset(seed=0, options={"prompt_index": [2, 0, 1]})
    assert venv.unwrapped.state.prompt_index.tolist() == [2, 0, 1]
    with pytest.raises(ConfigError, match=r"options\['prompt_index'\] must be 3 ints in \[0, 4\)"):
        venv.reset(seed=0, options={"prompt_index": [0, 1, 9]})


# ---------------------------------------------------------------------------------- the KL charge (kl_coef)
def _linear_accept(dim: int, seed: int = 0):
    w = np.random.default_rng(seed).normal(size=dim) / np.sqrt(dim)
    return lambda obs: 1.0 / (1.0 + np.exp(-(np.asarray(obs, dtype=np.float64) @ w + 1.0)))


def test_kl_paid_is_the_exact_kl_of_agents_kl(make_venv, tiny):
    n = 16
    venv = make_venv(
        n,
        observation="prefix",
        kl_coef=0.5,
        max_new_tokens=6,
        top_k=8,
        top_p=0.95,
        reward=lambda p, r: [1.0] * len(r),
        info_text=True,
    )
    accept = _linear_accept(venv.unwrapped.single_observation_space.shape[0])
    venv.unwrapped.set_accept_fn(accept)
    obs, _ = venv.reset(seed=4)
    rng = np.random.default_rng(0)
    returns = np.zeros(n)
    checked = 0
    for _ in range(60):
        obs, reward, term, trunc, info = venv.step((rng.random(n) < accept(obs)).astype(np.int64))
        returns += reward
        for i in np.flatnonzero(term | trunc):
            final = info["final_info"]
            ref = trajectory(
                tiny,
                tiny.encode_prompt(final["prompt"][i]),
                list(final["response_ids"][i]),
                accept,
                top_k=8,
                top_p=0.95,
                temperature=1.0,
                observation="prefix",
            )
            assert final["kl_exact_paid"][i] == pytest.approx(ref.kl, abs=1e-6, rel=1e-5)
            assert returns[i] == pytest.approx(1.0 - 0.5 * final["kl_paid"][i], abs=1e-6)  # reward - β Σ log π/q
            returns[i] = 0.0
            checked += 1
    assert checked >= 20


def test_kl_logratio_is_unbiased_for_the_exact_kl(make_venv):
    # actions sampled from the accept function the env is told about: mean Σ log π/q = mean Σ KL(π_t || q_t)
    n = 64
    venv = make_venv(n, observation="prefix", kl_coef=1.0, max_new_tokens=4, top_k=6, top_p=1.0)
    accept = _linear_accept(venv.unwrapped.single_observation_space.shape[0], seed=3)
    venv.unwrapped.set_accept_fn(accept)
    obs, _ = venv.reset(seed=7)
    rng = np.random.default_rng(1)
    logratio, exact = [], []
    while len(logratio) < 600:
        obs, _, term, trunc, info = venv.step((rng.random(n) < accept(obs)).astype(np.int64))
        for i in np.flatnonzero(term | trunc):
            logratio.append(info["final_info"]["kl_paid"][i])
            exact.append(info["final_info"]["kl_exact_paid"][i])
    logratio, exact = np.array(logratio), np.array(exact)
    assert exact.mean() > 0.05  # the proxy steers: there is a KL to estimate
    se = np.std(logratio - exact, ddof=1) / np.sqrt(len(logratio))
    assert abs(logratio.mean() - exact.mean()) < 4 * se + 1e-9


def test_kl_coef_zero_charges_nothing(make_venv):
    runs = []
    for kwargs in ({}, {"kl_coef": 0.0}):
        venv = make_venv(4, observation="prefix", reward=lambda p, r: [len(x) for x in r], **kwargs)
        venv.reset(seed=2)
        runs.append([venv.step(np.array([1, 0, 1, 1]))[1] for _ in range(12)])
    np.testing.assert_array_equal(np.array(runs[0]), np.array(runs[1]))


def test_kl_penalty_errors(make_venv):
    with pytest.raises(ConfigError, match="kl_coef=0.1 needs observation='prefix'"):
        make_venv(2, kl_coef=0.1)
    venv = make_venv(2, observation="prefix", kl_coef=0.1)
    venv.reset(seed=0)
    with pytest.raises(StateError, match="set_accept_fn"):
        venv.step(np.ones(2, dtype=np.int64))
    with pytest.raises(ConfigError, match="pool_observations\\(\\) needs observation='prefix'"):
        make_venv(2).unwrapped.pool_observations()


# ---------------------------------------------------------------------------------- a reward that fails
class Flaky:
    """Raises (or returns NaN) on its ``bad``-th call, fine otherwise."""

    name = "flaky"

    def __init__(self, bad: int, nan: bool = False):
        self.calls, self.bad, self.nan = 0, bad, nan

    def __call__(self, prompts, responses):
        self.calls += 1
        if self.calls == self.bad:
            if self.nan:
                return [float("nan")] * len(responses)
            raise ValueError("reward server timed out")
        return [1.0] * len(responses)


def _run_until_error(venv, n):
    for _ in range(200):
        venv.step(np.ones(n, dtype=np.int64))
    raise AssertionError("no reward error")


@pytest.mark.parametrize("nan", [False, True], ids=["raises", "nan"])
def test_reward_failure_says_reset_and_the_env_recovers(make_venv, nan):
    venv = make_venv(2, reward=Flaky(bad=1, nan=nan), max_new_tokens=3)
    venv.reset(seed=0)
    with pytest.raises(
        RewardError, match=r"(raised ValueError: reward server timed out|returned nan).*usable again after reset\(\)"
    ):
        _run_until_error(venv, 2)
    with pytest.raises(StateError, match=r"last step\(\) failed.*call reset\(\) before step\(\)"):
        venv.step(np.ones(2, dtype=np.int64))
    venv.reset(seed=1)
    ended = 0
    for _ in range(20):
        _, reward, term, trunc, _ = venv.step(np.ones(2, dtype=np.int64))
        ended += int((term | trunc).sum())
        assert np.all(reward[term | trunc] == 1.0)
    assert ended >= 2


def test_reward_failure_partial_reset_must_cover_the_failed_envs(make_venv):
    venv = make_venv(2, reward=Flaky(bad=1), max_new_tokens=3)
    venv.reset(seed=0)
    with pytest.raises(RewardError):
        _run_until_error(venv, 2)
    failed = venv.unwrapped._failed[1].cpu().numpy()
    if not failed.all():
        with pytest.raises(StateError, match="reset them too"):
            venv.reset(options={"reset_mask": ~failed})
    venv.reset(options={"reset_mask": failed})
    venv.step(np.ones(2, dtype=np.int64))


# ---------------------------------------------------------------------------------- registration
def test_registration_and_make_by_module_string(tiny):
    env = gym.make("proxy_env:proxy_env/ProxyRLHF-v1", model=tiny, prompts=PROMPTS, max_new_tokens=2)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (64,) and proxy_env.Action.REJECT == 0 and proxy_env.Action.ACCEPT == 1
    spec = gym.spec(proxy_env.ENV_ID)
    assert spec.vector_entry_point and all(isinstance(v, (str, int, float, type(None))) for v in spec.kwargs.values())


def test_env_still_registered():
    assert proxy_env.ENV_ID in gym.registry


def test_reset_refuses_unknown_options_and_fractional_prompt_indices(make_venv):
    venv = make_venv(2)
    with pytest.raises(
        ConfigError, match=r"options\['promptindex'\] is not a reset option.*Did you mean 'prompt_index'"
    ):
        venv.reset(seed=0, options={"promptindex": [0, 1]})
    with pytest.raises(ConfigError, match=r"options\['prompt_index'\] must be 2 ints.*dtype float64"):
        venv.reset(seed=0, options={"prompt_index": [0.7, 1.2]})
    venv.reset(seed=0, options={"prompt_index": [1, 0]})
    assert venv.unwrapped.state.prompt_index.tolist() == [1, 0]


def test_reset_masks_and_closed_envs_get_clear_errors(make_venv):
    venv = make_venv(2, autoreset_mode="disabled", max_new_tokens=3)
    with pytest.raises(StateError, match="selects no env and no episode has started yet"):
        venv.reset(options={"reset_mask": np.array([False, False])})
    venv.reset(seed=0, options={"reset_mask": np.array([True, False])})
    with pytest.raises(StateError, match=r"envs \[1\] have not started an episode .* autoreset_mode is DISABLED"):
        venv.step(np.ones(2, dtype=np.int64))
    venv.reset(seed=0)
    obs, _ = venv.reset(options={"reset_mask": np.array([False, False])})  # resets nothing: the envs go on
    assert obs.shape[0] == 2
    with pytest.raises(ActionError, match="'meta' device"):
        venv.step(torch.ones(2, dtype=torch.long, device="meta"))
    venv.close()
    with pytest.raises(StateError, match=r"step\(\) after close\(\)"):
        venv.step(np.ones(2, dtype=np.int64))
    with pytest.raises(StateError, match=r"reset\(\) after close\(\)"):
        venv.reset()


def test_a_constructor_that_raised_before_its_config_still_closes_quietly():
    # __del__ closes a half-built env: closing must not raise on the attributes the constructor never set
    from proxy_env.vector.vector_env import ProxyRLHFVectorEnv

    half_built = ProxyRLHFVectorEnv.__new__(ProxyRLHFVectorEnv)
    half_built.close_extras()
