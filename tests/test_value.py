"""The distributional value of prefixes (agents/value/): its data, its head, the guidance, the command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from agents.cli import main
from agents.value.data import ValueData, ValueDataKey, collect_value_data, load_value_data, midrank_quantiles
from agents.value.head import (
    ValueHead,
    ValueHeadConfig,
    bin_of,
    expected_power,
    fit_value_head,
    learning_curve,
    load_value_head,
    save_value_head,
)
from proxy_env.errors import ConfigError
from tests.conftest import PROMPTS, length_reward


def _key(**kw) -> ValueDataKey:
    base = dict(
        version=1,
        model="tiny",
        reward="length",
        prompts="test",
        samples=6,
        positions=2,
        max_new_tokens=5,
        top_k=50,
        top_p=0.95,
        temperature=1.0,
        hidden_layer=-1,
        seed=0,
    )
    return ValueDataKey(**{**base, **kw})


def test_midrank_quantiles_are_centred_and_count_ties_half():
    rewards = np.random.default_rng(0).integers(0, 4, size=(5, 9)).astype(float)  # many ties
    u = midrank_quantiles(rewards)
    assert ((0 <= u) & (u <= 1)).all()
    np.testing.assert_allclose(u.mean(1), 0.5)  # mid-ranks among the others average exactly one half
    assert (np.sign(u[:, :, None] - u[:, None, :]) == np.sign(rewards[:, :, None] - rewards[:, None, :])).all()
    with pytest.raises(ConfigError, match="samples=1"):
        midrank_quantiles(rewards[:, :1])


def test_collected_positions_label_each_response_with_its_quantile(tiny):
    key = _key()
    data = collect_value_data(tiny, PROMPTS, length_reward, key)
    assert (data.step < data.length).all() and set(data.prompt.tolist()) == {0, 1, 2, 3}
    for p in range(4):
        rows = data.prompt == p
        assert set(data.response[rows].tolist()) == set(range(key.samples))  # every response of the prompt
        rewards = np.zeros(key.samples)
        for i in range(key.samples):
            mine = rows & (data.response == i)
            length = int(data.length[mine][0])
            assert int(mine.sum()) == min(key.positions, length) and len(set(data.step[mine].tolist())) == int(
                mine.sum()
            )
            assert len(set(data.u[mine].tolist())) == 1 and len(set(data.reward[mine].tolist())) == 1
            rewards[i] = float(data.reward[mine][0])
        expected = midrank_quantiles(rewards[None])[0]
        got = np.array([float(data.u[rows & (data.response == i)][0]) for i in range(key.samples)])
        np.testing.assert_allclose(got, expected, rtol=1e-6)
    obs = data.take(slice(0, 5)).observations(tiny)
    assert obs.shape == (5, 3 * tiny.hidden_size + 2) and torch.isfinite(obs).all()
    assert torch.isfinite(data.logq).all() and (data.logq <= 0).all() and (data.logprob <= data.logq + 1e-5).all()


@torch.no_grad()
def test_collected_positions_hold_what_a_full_forward_of_the_prefix_gives(tiny):
    """The sampler's cached states are kept (no second forward): they must equal the prefix's own full forward."""
    from agents.eval.metrics import sample_ids
    from proxy_env.engine import candidates
    from proxy_env.engine.steering import pool_embedding

    key = _key(positions=3)
    data = collect_value_data(tiny, PROMPTS[:2], length_reward, key)
    ids = sample_ids(tiny, PROMPTS[:2], key.samples, max_new_tokens=5, top_k=50, top_p=0.95, temperature=1.0,
                     seed=key.seed, batch_size=2)  # fmt: skip
    for m in range(len(data)):
        j, i, t = int(data.prompt[m]), int(data.response[m]), int(data.step[m])
        response = ids[j][i]
        assert int(data.token[m]) == response[t] and int(data.length[m]) == len(response)
        seq = torch.tensor([tiny.encode_prompt(PROMPTS[j]) + response[:t]], device=tiny.device)
        out = tiny.model(input_ids=seq, output_hidden_states=True)
        torch.testing.assert_close(
            data.hidden[m].float(), out.hidden_states[-1][0, -1].half().float(), atol=2e-3, rtol=2e-3
        )
        pool = candidates.truncate(out.logits[:, -1].float(), 50, 0.95, 1.0)
        col = (pool.tokens[0] == response[t]).nonzero()[0, 0]
        torch.testing.assert_close(data.logq[m], pool.logq[0, col], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(data.logprob[m], pool.logprob[0, col], atol=1e-4, rtol=1e-4)
        mean = pool_embedding(tiny, pool.tokens, pool.logq)[0].half().float()
        torch.testing.assert_close(data.pool_mean[m].float(), mean, atol=2e-3, rtol=2e-3)


def test_collection_resumes_where_it_stopped(tiny, tmp_path):
    path = tmp_path / "value.pt"
    whole = collect_value_data(tiny, PROMPTS, length_reward, _key(), batch_prompts=2)

    def stop_after_first(done, total):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        collect_value_data(tiny, PROMPTS, length_reward, _key(), path=path, batch_prompts=2, progress=stop_after_first)
    half = load_value_data(path, _key())
    assert set(half.prompt.tolist()) == {0, 1}
    resumed = collect_value_data(tiny, PROMPTS, length_reward, _key(), path=path, batch_prompts=2)
    for a, b in zip(whole, resumed):
        torch.testing.assert_close(a, b)
    with pytest.raises(ConfigError, match="samples: file 6 vs now 8"):
        collect_value_data(tiny, PROMPTS, length_reward, _key(samples=8), path=path, batch_prompts=2)


def _synthetic(tiny, n=1200, seed=0) -> ValueData:
    """Positions whose final quantile depends on the taken token: token 10 ends high, token 20 low."""
    g = torch.Generator().manual_seed(seed)
    token = torch.where(torch.rand(n, generator=g) < 0.5, 10, 20)
    u = torch.where(token == 10, 0.6 + 0.4 * torch.rand(n, generator=g), 0.4 * torch.rand(n, generator=g))
    h = tiny.hidden_size
    return ValueData(
        hidden=(0.05 * torch.randn(n, h, generator=g)).half(),  # the prefix says little; the token says it all
        pool_mean=(0.05 * torch.randn(n, h, generator=g)).half(),
        token=token,
        logprob=torch.full((n,), -1.0),
        logq=torch.full((n,), -0.9),
        u=u.float(),
        reward=u.float(),
        prompt=torch.arange(n) % 20,
        response=torch.zeros(n, dtype=torch.long),
        step=torch.zeros(n, dtype=torch.long),
        length=torch.ones(n, dtype=torch.long),
    )


def test_the_head_learns_the_distribution_and_is_calibrated(tiny, tmp_path):
    torch.manual_seed(0)
    data = _synthetic(tiny)
    head = ValueHead(ValueHeadConfig(obs_dim=3 * tiny.hidden_size + 2, bins=10, width=64))
    report = fit_value_head(head, tiny, data, epochs=6, lr=3e-3, batch_size=128)
    assert report["held_out_ce"][-1] < report["marginal_ce"] - 0.3
    assert report["calibration"]["E[u]"]["corr"] > 0.8
    deciles = report["calibration"]["E[u^7]"]["deciles"]
    assert deciles[-1][1] > deciles[0][1] + 0.05  # the top decile's realised E[u^7] is the top one
    obs = data.take(slice(0, 64)).observations(tiny)
    with torch.no_grad():
        mean_u = expected_power(head.probs(obs), 1.0)
    high, low = mean_u[data.token[:64] == 10].mean(), mean_u[data.token[:64] == 20].mean()
    assert high > 0.65 and low < 0.35
    folder = save_value_head(head, tmp_path / "head")
    again = load_value_head(folder, tiny)
    with torch.no_grad():
        torch.testing.assert_close(again.probs(obs), head.probs(obs))
    assert bin_of(torch.tensor([0.0, 0.05, 1.0]), 10).tolist() == [0, 0, 9]


def test_the_learning_curve_holds_out_the_same_prompts_and_counts_its_rollouts(tiny):
    from agents.value.run import ValueConfig

    data = ValueData(**{**_synthetic(tiny)._asdict(), "response": torch.arange(1200) // 20})  # 20 prompts x 60
    config = ValueHeadConfig(obs_dim=3 * tiny.hidden_size + 2, bins=10, width=64)
    small, full = learning_curve(config, tiny, data, (1.0, 0.25), epochs=6, lr=3e-3, batch_size=128)
    assert (small["share"], small["prompts"], small["responses"]) == (0.25, 4, 240)  # 4 of the 16 not held out
    # the whole share keeps 2 of its 16 prompts (10%) to choose the epoch by; a quarter's 4 round that to none
    assert (full["prompts"], full["responses"], full["positions"]) == (14, 840, 840)
    assert small["marginal_ce"] > 0 and full["held_out_ce"] < full["marginal_ce"] - 0.3
    with pytest.raises(ConfigError, match="curve=.*in \\(0, 1\\]"):
        ValueConfig(curve=(0.0, 0.5)).validate()


def test_value_deltas_tilt_toward_the_candidate_that_ends_higher(tiny):
    from agents.tilt.data import Positions
    from agents.value.guide import value_deltas

    torch.manual_seed(0)
    head = ValueHead(ValueHeadConfig(obs_dim=3 * tiny.hidden_size + 2, bins=10, width=64))
    fit_value_head(head, tiny, _synthetic(tiny), epochs=6, lr=3e-3, batch_size=128)
    h = tiny.hidden_size
    positions = Positions(
        hidden=torch.randn(3, h).half(),
        tokens=torch.tensor([[10, 20, 0], [20, 10, 30], [10, 20, 0]]),
        logprob=torch.tensor([[-0.5, -1.0, -1e4], [-0.5, -1.0, -2.0], [-0.5, -1.0, -1e4]]),
        logq=torch.tensor([[-0.4, -1.1, -1e4], [-0.4, -1.3, -2.5], [-0.4, -1.1, -1e4]]),
        delta=torch.zeros(3, 3),
    )
    delta = value_deltas(head, tiny, positions, n=8, beta=0.5)
    q = positions.q()
    np.testing.assert_allclose((q * delta.double()).sum(-1).numpy(), 0.0, atol=1e-6)  # centred under q
    assert (delta[positions.logq < -1e3] == 0).all()  # padding
    assert (delta[0, 0] > delta[0, 1]) and (delta[1, 1] > delta[1, 0])  # token 10 ends higher than token 20


def test_the_command_collects_fits_and_the_tilt_reads_the_head(tmp_path, tiny, capsys):
    from agents.tilt.backend import TiltConfig, train_tilt
    from agents.value.run import ValueConfig
    from proxy_env.config import EnvConfig

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS * 2) + "\n")
    args = ["value", "--model", "tiny", "--prompts", str(prompts), "--samples", "4", "--positions", "2"]
    args += ["--max-new-tokens", "4", "--epochs", "2", "--bins", "8", "--batch-prompts", "4"]
    args += ["--data", str(tmp_path / "v.pt"), "--out", str(tmp_path / "head"), "--curve", "0.5"]
    assert main(args) == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "head" / "report.json").read_text())
    # 2 of 8 held out; of the whole share's 6, one validates the epochs
    assert [(p["share"], p["prompts"]) for p in report["curve"]] == [(0.5, 3), (1.0, 5)]
    text = (tmp_path / "head" / "report.md").read_text()
    assert "## Learning curve" in text and "## Held-out calibration" in text
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert len({line.count("|") for line in table[-12:]}) == 1  # the calibration table's rows all have its columns
    assert f"| 0.5 | 3 | {report['curve'][0]['responses']:,} |" in text
    assert (
        report["data"]["prompts"] == 8
        and report["data"]["positions"] > 0
        and len(report["trained"]["held_out_ce"]) == 2
    )
    # a learning-curve point saved as a head of its own, from the same data file (resumed: nothing collected)
    half = args[: args.index("--out")] + ["--out", str(tmp_path / "half"), "--train-share", "0.5"]
    half += ["--curve", "0.5", "1"]
    assert main(half) == 0, capsys.readouterr().err
    again = json.loads((tmp_path / "half" / "report.json").read_text())
    assert again["data"] == report["data"] and again["trained"]["prompts"]["train"] == 3
    assert [(p["share"], p["prompts"]) for p in again["curve"]] == [(0.5, 3), (1.0, 5)]
    saved_head = json.loads((tmp_path / "half" / "value_head.json").read_text())
    assert saved_head["trained"]["train_share"] == 0.5
    with pytest.raises(ConfigError, match=r"train_share=0 must be .*--train-share 0.25"):
        ValueConfig(train_share=0).validate()
    env = EnvConfig(model="tiny", prompts=PROMPTS, max_new_tokens=4, observation="prefix", kl_coef=0.5)
    cfg = TiltConfig(
        env=env,
        num_envs=4,
        total_timesteps=32,
        tilt_epochs=1,
        tilt_value=str(tmp_path / "head"),
        tilt_value_n=4,
        policy_device="cpu",
        save_dir=str(tmp_path / "proxy"),
    )
    result = train_tilt(cfg, reward=length_reward)  # the model by name, as the head recorded it
    saved = json.loads((tmp_path / "proxy" / "proxy_config.json").read_text())
    assert result.checkpoint is not None and saved["config"]["tilt_value"] == str(tmp_path / "head")
    with pytest.raises(ConfigError, match="holds no value_head.json"):
        TiltConfig(env=env, tilt_value=str(tmp_path)).validate()
    with pytest.raises(ConfigError, match="drop --tilt-future"):
        TiltConfig(env=env, tilt_value=str(tmp_path / "head"), tilt_future=True).validate()


def test_hl_gauss_targets_spread_u_over_its_neighbours_and_keep_one_hot_at_zero_width():
    from agents.value.head import hl_gauss

    u = torch.tensor([0.05, 0.55, 0.97])
    soft = hl_gauss(u, 10, 0.75)
    torch.testing.assert_close(soft.sum(-1), torch.ones(3))
    assert soft.argmax(-1).tolist() == [0, 5, 9] and soft[1].max() < 0.6  # the bin of u, not all of it
    assert (soft.max(-1).values < 0.8).all()  # at the edges too (the mass outside [0, 1] comes back, renormalised)
    assert soft[1, 4] > 0.1 and soft[1, 6] > 0.1 and soft[1, 0] < 1e-4  # neighbours share; far bins do not
    assert torch.equal(hl_gauss(u, 10, 0.0), torch.nn.functional.one_hot(torch.tensor([0, 5, 9]), 10).float())


def test_the_fit_keeps_the_epoch_best_on_validation_prompts_not_the_last(tiny):
    torch.manual_seed(0)
    data = _synthetic(tiny)
    data = ValueData(**{**data._asdict(), "u": torch.rand(len(data))})  # pure noise: fitting only memorises
    head = ValueHead(ValueHeadConfig(obs_dim=3 * tiny.hidden_size + 2, bins=10, width=256, dropout=0.0))
    report = fit_value_head(head, tiny, data, epochs=8, lr=3e-2, batch_size=64, weight_decay=0.0)
    assert report["kept_epoch"] < 8 and report["kept_ce"] < report["held_out_ce"][-1]
    assert report["kept_ce"] == pytest.approx(report["held_out_ce"][report["kept_epoch"] - 1], abs=1e-6)


def test_block_norm_lets_the_candidate_through_a_prefix_ten_times_larger(tiny):
    """Each block is normalised alone: scaling the prefix's hidden state leaves the candidate's features as they were."""
    size = tiny.hidden_size
    torch.manual_seed(0)
    obs = torch.randn(5, 3 * size + 2)
    obs[:, size : 2 * size] *= 0.05  # the candidate's embedding, small beside h (as SmolLM2's are)
    loud = obs.clone()
    loud[:, :size] *= 10.0
    blocks = ValueHead(ValueHeadConfig(obs_dim=3 * size + 2)).norm
    torch.testing.assert_close(blocks(loud), blocks(obs), rtol=1e-4, atol=1e-4)
    normed = blocks(obs)[:, size : 2 * size]
    torch.testing.assert_close(normed.std(-1, unbiased=False), torch.ones(5), rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(blocks(obs)[:, -2:], obs[:, -2:])  # log p and log q pass as they are
    joint = ValueHead(ValueHeadConfig(obs_dim=3 * size + 2, norm="joint")).norm
    assert float(joint(obs)[:, size : 2 * size].std()) < 0.1  # one LayerNorm keeps the candidate ~20x smaller
    with pytest.raises(ConfigError, match="norm='joint'"):
        ValueHead(ValueHeadConfig(obs_dim=3 * size + 3))


def test_a_head_saved_before_the_block_norm_loads_as_one_layernorm(tiny, tmp_path):
    """Heads written when the LayerNorm was ``net.0`` (no "norm" in their JSON) load with the same outputs."""
    from dataclasses import asdict

    from safetensors.torch import save_file

    from agents.value.head import CONFIG_FILE, WEIGHTS_FILE

    torch.manual_seed(0)
    head = ValueHead(ValueHeadConfig(obs_dim=3 * tiny.hidden_size + 2, bins=6, width=16, norm="joint")).eval()
    old = {"net.0." + k: v for k, v in head.norm.state_dict().items()}
    old |= {f"net.{int(k.split('.')[0]) + 1}.{k.split('.', 1)[1]}": v for k, v in head.net.state_dict().items()}
    folder = tmp_path / "old"
    folder.mkdir()
    save_file(old, str(folder / WEIGHTS_FILE))
    config = asdict(head.config)
    del config["norm"]
    (folder / CONFIG_FILE).write_text(json.dumps(config), encoding="utf-8")
    again = load_value_head(folder, tiny)
    assert again.config.norm == "joint"
    obs = torch.randn(4, 3 * tiny.hidden_size + 2)
    with torch.no_grad():
        torch.testing.assert_close(again.probs(obs), head.probs(obs))
