"""``--backend tilt`` (agents/tilt/): what it collects, the optimum it fits, its cache and its errors."""

import math

import numpy as np
import pytest
import torch

from agents.accept import accept_model
from agents.cli.app import main
from agents.eval.report import read_scalars
from agents.saving.checkpoint import load_checkpoint
from agents.tilt.backend import train_tilt
from agents.tilt.collect import collect
from agents.tilt.data import Positions, load_positions, save_positions
from agents.tilt.fit import balance_norm, fit, tilt_loss
from agents.train import build_agent, make_sb3_env
from proxy_env.engine.steering import kl_divergence, prefix_observation, steered_probs
from proxy_env.errors import ConfigError
from proxy_env.vector.vector_env import ProxyRLHFVectorEnv
from tests.conftest import PROMPTS, tilt_config


def _length_reward(prompts, responses):
    return [float(len(r)) for r in responses]


def test_collect_records_every_candidates_reward_change(tiny):
    venv = ProxyRLHFVectorEnv(
        num_envs=1,
        model=tiny,
        prompts=PROMPTS[:1],
        max_new_tokens=6,
        observation="prefix",
        top_k=6,
        top_p=1.0,
        reward=_length_reward,
    )
    data = collect(venv, 6, seed=3)
    assert len(data) >= 1
    # the first position extends the empty response: Δ_k = len(decode([y_k])) − E_q[len], the same pool the env offers
    fresh = ProxyRLHFVectorEnv(
        num_envs=1, model=tiny, prompts=PROMPTS[:1], max_new_tokens=6, observation="prefix", top_k=6, top_p=1.0
    )
    fresh.reset(seed=3)
    view = fresh.pool_observations()
    n = int(view.size[0])
    lengths = torch.tensor([len(tiny.decode([int(t)])) for t in view.tokens[0, :n]], dtype=torch.float64)
    q = view.q[0, :n].double()
    expected = lengths - (q * lengths).sum()
    assert torch.equal(data.tokens[0, :n], view.tokens[0, :n].cpu())
    assert torch.allclose(data.delta[0, :n].double(), expected, atol=1e-5)
    assert torch.all(data.delta[0, n:] == 0)
    # centred under q at every position, and the stored hidden state is the observation's h
    qs = data.logq.double().exp()
    assert torch.allclose(
        (qs / qs.sum(-1, keepdim=True) * data.delta.double()).sum(-1),
        torch.zeros(len(data), dtype=torch.float64),
        atol=1e-4,
    )
    assert torch.allclose(data.hidden[0].float(), view.obs[0, 0, : tiny.hidden_size].cpu().half().float())


def _agent_and_positions(tiny):
    """A fresh PPO proxy over 6-token pools and 32 decisions collected with the length reward."""
    env = make_sb3_env(
        {
            "model": tiny,
            "prompts": PROMPTS,
            "max_new_tokens": 6,
            "observation": "prefix",
            "top_k": 6,
            "top_p": 1.0,
            "reward": _length_reward,
        },
        2,
    )
    return build_agent(tilt_config().actor_config(), env), collect(env.unwrapped, 32, seed=1)


def _two_token_positions(tiny, n: int, delta: tuple[float, float]) -> Positions:
    """``n`` copies of one position whose pool is the tiny model's two most likely first tokens."""
    venv = ProxyRLHFVectorEnv(
        num_envs=1,
        model=tiny,
        prompts=PROMPTS[:1],
        max_new_tokens=6,
        observation="prefix",
        top_k=2,
        top_p=1.0,
        temperature=4.0,
    )  # a flat pool: the tilt moves it far
    venv.reset(seed=0)
    view = venv.pool_observations()
    assert int(view.size[0]) == 2
    obs = view.obs[0].cpu()
    rep = lambda x: x[None, :2].expand(n, 2, *x.shape[1:]).clone()  # noqa: E731  (the two valid columns)
    # a small prefix state: the tiny model's hidden states (norm ~80) would drown the candidates' features in the LayerNorm
    hidden = 0.01 * torch.randn(1, tiny.hidden_size, generator=torch.Generator().manual_seed(0))
    return Positions(
        hidden.half().expand(n, -1).clone(),
        rep(view.tokens[0].cpu()),
        rep(obs[:, -2]),
        rep(obs[:, -1]),
        rep(torch.tensor(delta, dtype=torch.float32)),
    )


@pytest.mark.parametrize("beta", [0.5, 2.0])
def test_fit_reaches_the_tilt_q_exp_delta_over_beta(tiny, beta):
    # Δ chosen so that the tilt q·exp(Δ/β) is uniform over two candidates whatever β: reached by accepting each
    # with the same probability, which the proxy can learn from its bias alone (tiny models give weak token features)
    cfg = tilt_config(kl_coef=beta, top_k=2)
    env = make_sb3_env(
        {"model": tiny, "prompts": PROMPTS, "max_new_tokens": 6, "observation": "prefix", "top_k": 2, "top_p": 1.0}, 1
    )
    agent = build_agent(cfg.actor_config(), env)
    probe = _two_token_positions(tiny, 1, (0.0, 0.0))
    q = probe.logq[0].double().exp()
    q = q / q.sum()
    assert q[0] - q[1] > 0.3  # far from uniform: the tilt must move it
    half = beta / 2 * math.log(q[0] / q[1])
    data = _two_token_positions(tiny, 64, (-half, half))
    target = q * torch.exp(data.delta[0].double() / beta)
    target = target / target.sum()
    torch.testing.assert_close(target, torch.full((2,), 0.5, dtype=torch.float64), atol=1e-6, rtol=0)
    fit(agent, tiny, data, beta=beta, epochs=200, lr=1e-2, batch_size=64)
    with torch.no_grad():
        obs = prefix_observation(tiny, data.hidden[:1].float(), data.tokens[:1], data.logprob[:1], data.logq[:1])[0]
        a = torch.as_tensor(accept_model(agent, deterministic=False)(obs.numpy()))
    pi = steered_probs(q[None], a[None])[0]
    assert torch.allclose(pi, target, atol=0.02), (pi, target)
    # and the loss there is −log Z, the KL-regularised value of the position (−β log Z in reward units)
    loss, _, _ = tilt_loss(agent, tiny, data, beta)
    log_z = math.log(float((q * torch.exp(data.delta[0].double() / beta)).sum()))
    assert float(loss) == pytest.approx(-log_z, abs=2e-3)


def test_fit_kl_is_the_bench_exact_kl_of_the_same_accept_probabilities(tiny):
    agent, data = _agent_and_positions(tiny)
    fit(agent, tiny, data, beta=0.5, epochs=2, lr=1e-2, batch_size=16)
    _, kl, _ = tilt_loss(agent, tiny, data, 0.5)
    accept = accept_model(agent, deterministic=False)  # what `bench` uses for its exact KL
    obs = prefix_observation(tiny, data.hidden.float(), data.tokens, data.logprob, data.logq)
    n, k, d = obs.shape
    q = data.logq.double().exp()
    q = q / q.sum(-1, keepdim=True)
    a = torch.as_tensor(accept(obs.reshape(n * k, d).numpy())).reshape(n, k).masked_fill(q == 0, 0.0)
    assert torch.allclose(kl, kl_divergence(steered_probs(q, a), q), atol=1e-6)
    assert float(kl.mean()) > 0


def test_train_tilt_saves_a_checkpoint_that_loads_and_acts_the_same(tiny, tmp_path, monkeypatch):
    data = str(tmp_path / "data.pt")
    cfg = tilt_config(
        save_dir=str(tmp_path / "ck"), tensorboard_log=str(tmp_path / "tb"), tilt_epochs=2, tilt_data=data
    )
    result = train_tilt(cfg, model=tiny, reward=_length_reward)
    assert result.model.num_timesteps == 64 and len(result.kl_history) == 2 and result.interrupted is None
    loaded = load_checkpoint(result.checkpoint)
    assert loaded.meta.config["backend"] == "tilt" and loaded.meta.env_kwargs["observation"] == "prefix"
    obs = np.random.default_rng(0).normal(size=(5, loaded.model.observation_space.shape[0])).astype(np.float32)
    np.testing.assert_allclose(
        accept_model(loaded.model, False)(obs), accept_model(result.model, False)(obs), atol=1e-6
    )
    collected = read_scalars(tmp_path / "tb")["collect/decisions"]  # its first point opens the bench's "training s"
    assert [step for _, step, _ in collected] == [0, 64] and [v for _, _, v in collected] == [0.0, 64.0]
    # the cached positions are reused: a second run with the same settings collects nothing
    import agents.tilt.backend
    import agents.tilt.future

    def no_collect(*args, **kwargs):
        raise AssertionError("collected again")

    fitted = []
    real_fit = agents.tilt.backend.fit
    monkeypatch.setattr(agents.tilt.backend, "collect", no_collect)
    monkeypatch.setattr(
        agents.tilt.backend, "fit", lambda agent, lm, data, **kw: fitted.append(data) or real_fit(agent, lm, data, **kw)
    )
    again = train_tilt(tilt_config(tilt_epochs=1, tilt_data=data), model=tiny, reward=_length_reward)
    assert len(again.kl_history) == 1
    # --tilt-future fits the same positions with Δ + the estimated reward to come
    train_tilt(tilt_config(tilt_epochs=1, tilt_data=data, tilt_future=True), model=tiny, reward=_length_reward)
    base, future = fitted
    assert torch.equal(
        future.tokens, base.tokens
    )  # (on this tiny data the position-only model may win: a zero correction)
    assert torch.allclose(future.delta, base.delta + agents.tilt.future.future_values(tiny, base)[0])
    with pytest.raises(ConfigError, match="collected under other settings.*seed: file 0 vs now 1"):
        train_tilt(tilt_config(seed=1, tilt_epochs=1, tilt_data=data), model=tiny, reward=_length_reward)


def test_data_cache_refuses_other_settings_and_unreadable_files(tmp_path):
    data = Positions(
        torch.zeros(2, 4).half(),
        torch.zeros(2, 3, dtype=torch.long),
        torch.zeros(2, 3),
        torch.zeros(2, 3),
        torch.zeros(2, 3),
    )
    path = tmp_path / "d.pt"
    save_positions(path, {"model": "a", "seed": 0}, data)
    assert [p.name for p in tmp_path.iterdir()] == ["d.pt"]  # no temporary file left behind
    assert torch.equal(load_positions(path, {"model": "a", "seed": 0}).tokens, data.tokens)
    assert load_positions(tmp_path / "none.pt", {}) is None
    with pytest.raises(ConfigError, match=r"seed: file 0 vs now 1"):
        load_positions(path, {"model": "a", "seed": 1})
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(ConfigError, match="bad.pt.*not a tilt data file"):
        load_positions(bad, {})
    assert bad.read_bytes() == b"not a torch file"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kl_coef": 0.0}, "--kl-coef=0.0.*β > 0"),
        ({"observation": "candidate"}, "needs observation='prefix'"),
        ({"algo": "dqn"}, "--algo='dqn'.*ppo, a2c or trpo"),
        ({"tilt_epochs": 0}, "tilt_epochs=0 must be an int >= 1"),
    ],
)
def test_settings_the_backend_cannot_honour_are_refused(change, message):
    with pytest.raises(ConfigError, match=message):
        tilt_config(**change).validate()
    with pytest.raises(TypeError, match="kl_target"):  # an SB3 setting: not a field of TiltConfig at all
        tilt_config(kl_target=1.0)


def test_cli_refuses_tilt_flags_on_another_backend(capsys):
    assert main(["train", "--model", "tiny", "--tilt-epochs", "3"]) == 2
    assert "--tilt-epochs apply to --backend tilt only" in capsys.readouterr().err


def test_balance_norm_gives_every_block_of_the_prefix_observation_unit_scale(tiny):
    agent, data = _agent_and_positions(tiny)
    norm = agent.policy.features_extractor.net[0]
    scales = balance_norm(agent, tiny, data)
    assert scales[1] > 5 * scales[0]  # the tiny model's hidden states dwarf its embeddings
    obs = prefix_observation(tiny, data.hidden.float(), data.tokens, data.logprob, data.logq)[data.logq > -1e3]
    with torch.no_grad():
        out = norm(obs)
    h = tiny.hidden_size
    for block in (slice(0, h), slice(h, 2 * h), slice(2 * h, 3 * h)):
        assert float(out[:, block].std()) == pytest.approx(1.0, rel=0.05)


def test_collect_records_the_reward_still_to_come_after_the_taken_token(tiny):
    kwargs = dict(
        num_envs=1,
        model=tiny,
        prompts=PROMPTS[:1],
        max_new_tokens=4,
        observation="prefix",
        top_k=6,
        top_p=1.0,
        reward=_length_reward,
    )
    data = collect(ProxyRLHFVectorEnv(**kwargs), 10, seed=5)
    # replay the same seeded sampler: togo = R − Φ(response up to the taken token), R = Φ(the whole response)
    venv = ProxyRLHFVectorEnv(**kwargs)
    venv.reset(seed=5)
    expected, episode = [], []
    for _ in range(10):
        if int(venv.pool_observations().size[0]) >= 2:  # collect records only positions with a choice
            _, response = venv.prefixes()
            episode.append(response[0] + [int(venv.pool_observations().tokens[0, 0])])
        _, _, terminated, truncated, info = venv.step(np.ones(1, dtype=np.int64))
        if terminated[0] or truncated[0]:
            final = info["final_info"]["reward_raw"][0]
            expected += [final - len(tiny.decode(ids)) for ids in episode]
            episode = []
    expected += [math.nan] * len(episode)  # the response still running when the collection stops
    assert len(data.togo) == len(expected) and len(expected) > len(episode) > 0
    assert torch.allclose(data.togo, torch.tensor(expected, dtype=torch.float32), equal_nan=True)


def test_future_values_recovers_a_linear_reward_to_come_and_centres_it(tiny):
    # synthetic positions whose reward to come is linear in the taken candidate's embedding and log q, plus a term of
    # the prefix alone: the estimate of every candidate is the candidate part, centred under q (the prefix part cancels)
    from agents.tilt.future import future_values

    gen = torch.Generator().manual_seed(0)
    n, k, h = 3000, 4, tiny.hidden_size
    tokens = torch.randint(1, tiny.vocab_size, (n, k), generator=gen)
    logq = torch.log_softmax(torch.randn(n, k, generator=gen), -1)
    logprob = logq - 0.1
    hidden = torch.randn(n, h, generator=gen).half()
    emb = tiny.model.get_input_embeddings().weight.detach().double()
    v, u = torch.randn(h, generator=gen, dtype=torch.float64), torch.randn(h, generator=gen, dtype=torch.float64)
    candidate = emb[tokens] @ v / emb.norm(dim=1).mean() + 0.3 * logq.double()  # (n, k)
    togo = candidate[:, 0] + 0.5 * hidden.double() @ u / math.sqrt(h)
    togo[:10] = math.nan  # responses that did not end: left out
    q = logq.double().exp()
    delta = torch.randn(n, k, generator=gen, dtype=torch.float64)
    delta = delta - (q * delta).sum(-1, keepdim=True)  # centred under q, as collect stores it
    data = Positions(hidden, tokens, logprob, logq, delta.float(), togo.float())
    g, report = future_values(tiny, data)
    want = candidate - (q * candidate).sum(-1, keepdim=True)
    assert report["positions"] == n - 10 and report["r2_with_candidate"] > 0.99 > report["r2_position_only"] + 0.1
    assert report["model"] >= 1  # a model that sees the candidate
    assert torch.allclose(g.double(), want, atol=0.05 * float(want.std()))
    assert torch.allclose((q * g.double()).sum(-1), torch.zeros(n, dtype=torch.float64), atol=1e-4)
    # later words undo 40% of each change: the estimate is −0.4·Δ, found through the Δ columns only
    undo = Positions(
        hidden,
        tokens,
        logprob,
        logq,
        delta.float(),
        (-0.4 * delta[:, 0] + 0.5 * hidden.double() @ u / math.sqrt(h)).float(),
    )
    g, report = future_values(tiny, undo)
    assert report["model"] >= 2 and report["r2_with_delta"] > 0.99 > report["r2_with_candidate"] + 0.1
    assert abs(report["delta_share_mean"] + 0.4) < 0.02
    assert torch.allclose(g.double(), -0.4 * delta, atol=0.02 * float(delta.std()))
    with pytest.raises(ConfigError, match="--tilt-future needs tilt data"):
        future_values(tiny, data.replace(togo=None))


@pytest.mark.gpu
def test_train_tilt_on_cuda_changes_the_actor(cuda_lm):
    lm = cuda_lm("float32")
    cfg = tilt_config(policy_device="cuda", num_envs=8, total_timesteps=128, tilt_epochs=2)
    env = make_sb3_env({"model": lm, "prompts": PROMPTS, "max_new_tokens": 6, "observation": "prefix"}, 1)
    initial = build_agent(cfg.actor_config(), env).policy.action_net.weight.detach().clone()  # same seed, same init
    env.close()
    result = train_tilt(cfg, model=lm, reward=_length_reward)
    head = result.model.policy.action_net.weight  # the fit moves it; balance_norm touches only the LayerNorm
    assert head.device.type == "cuda" and len(result.kl_history) == 2
    assert not torch.equal(head.detach(), initial.to(head.device))


def test_a_stop_during_collection_saves_nothing_and_claims_no_decisions(tiny, tmp_path, monkeypatch):
    """Ctrl-C while collecting: nothing was fitted, so no checkpoint claims the budget (it used to save the initial
    proxy with num_timesteps = total_timesteps)."""
    import os
    import signal

    import agents.tilt.backend

    def interrupted_collect(venv, decisions, **kwargs):
        data = collect(venv, 8, seed=0)
        os.kill(os.getpid(), signal.SIGINT)  # the GracefulStop of train_tilt turns it into stop.received
        return data

    monkeypatch.setattr(agents.tilt.backend, "collect", interrupted_collect)
    save_dir = tmp_path / "ck"
    result = train_tilt(tilt_config(save_dir=str(save_dir), total_timesteps=10_000), model=tiny, reward=_length_reward)
    assert result.interrupted == "SIGINT" and result.checkpoint is None and result.model.num_timesteps == 0
    assert not (save_dir / "proxy_config.json").exists() and result.kl_history == []


def test_a_stop_during_the_fit_saves_what_was_fitted_and_says_so(tiny, tmp_path, monkeypatch):
    import os
    import signal

    import agents.tilt.backend

    real_fit = agents.tilt.backend.fit

    def fit_then_stop(agent, lm, data, **kwargs):
        history = real_fit(agent, lm, data, **{**kwargs, "epochs": 1})
        os.kill(os.getpid(), signal.SIGINT)
        return history

    monkeypatch.setattr(agents.tilt.backend, "fit", fit_then_stop)
    result = train_tilt(tilt_config(save_dir=str(tmp_path / "ck"), tilt_epochs=5), model=tiny, reward=_length_reward)
    meta = load_checkpoint(result.checkpoint).meta
    assert result.interrupted == "SIGINT" and meta.config["tilt_fitted_epochs"] == 1 and meta.config["tilt_epochs"] == 5


def test_an_unreadable_data_file_error_never_advises_the_unsafe_load(tmp_path):
    import pickle

    bad = tmp_path / "pickled.pt"
    bad.write_bytes(pickle.dumps({"key": object()}))  # a pickle torch's safe loader refuses
    with pytest.raises(ConfigError, match="not a tilt data file") as info:
        load_positions(bad, {})
    assert "weights_only` set to `False`" not in str(info.value) and "arbitrary code" not in str(info.value)
    assert "refuses to unpickle" in str(info.value)


def test_a_bad_tilt_data_path_is_refused_before_collecting(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("")
    with pytest.raises(ConfigError, match=r"--tilt-data's folder='.*afile' is a file"):
        tilt_config(tilt_data=str(afile / "data.pt")).validate()
    with pytest.raises(ConfigError, match=r"--tilt-data='.*' is a folder"):
        tilt_config(tilt_data=str(tmp_path)).validate()


def test_a_data_file_of_the_right_key_and_inconsistent_shapes_is_refused(tmp_path):
    data = Positions(
        torch.zeros(2, 4).half(),
        torch.zeros(2, 3, dtype=torch.long),
        torch.zeros(2, 3),
        torch.zeros(2, 5),  # logq of another width
        torch.zeros(2, 3),
    )
    save_positions(tmp_path / "d.pt", {"model": "a"}, data)
    with pytest.raises(ConfigError, match="holds tensors of inconsistent shapes"):
        load_positions(tmp_path / "d.pt", {"model": "a"})
