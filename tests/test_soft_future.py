"""``--tilt-future-form soft`` (agents/tilt/soft_future.py): the soft value of the reward still to come."""

import math

import pytest
import torch

from agents.tilt.data import Positions
from agents.tilt.soft_future import fit_future_head, soft_future_values, soft_moment
from proxy_env.errors import ConfigError
from tests.conftest import tilt_config


def test_soft_moment_runs_from_the_mean_at_large_beta_to_the_top_at_small_beta():
    probs = torch.tensor([0.5, 0.0, 0.0, 0.5])  # T uniform on [-1, -0.5] ∪ [0.5, 1] (half each)
    mean = 0.0
    assert float(soft_moment(probs.log(), -1.0, 1.0, 1e3)) == pytest.approx(mean, abs=1e-3)
    # β → 0: the top of the support plus β·log P(top bin) + β·log(β / width): approaches 1 from below
    assert 0.9 < float(soft_moment(probs.log(), -1.0, 1.0, 0.01)) < 1.0
    # against a numerical integral at β 0.3
    t = torch.linspace(-1, 1, 400_001, dtype=torch.float64)
    density = torch.where(t.abs() >= 0.5, 1.0, 0.0)
    density = density / torch.trapezoid(density, t)
    exact = 0.3 * math.log(float(torch.trapezoid(density * torch.exp(t / 0.3), t)))
    assert float(soft_moment(probs.log(), -1.0, 1.0, 0.3)) == pytest.approx(exact, rel=1e-4)
    # a wider spread at the same mean is worth more (the variance term the mean drops)
    narrow = torch.tensor([0.0, 0.5, 0.5, 0.0])
    assert float(soft_moment(probs.log(), -1.0, 1.0, 0.3)) > float(soft_moment(narrow.log(), -1.0, 1.0, 0.3))


def _positions(tiny, n: int = 1200, k: int = 4, seed: int = 0) -> Positions:
    """Random pools of six tokens; the reward to come is wide (±1) after an even token, exactly 0 after an odd one."""
    gen = torch.Generator().manual_seed(seed)
    h = tiny.hidden_size
    tokens = torch.randint(10, 16, (n, k), generator=gen)
    logits = torch.randn(n, k, generator=gen)
    logq = torch.log_softmax(logits, -1)
    logq[: n // 4, -1] = -1e4  # some pools have padding
    tokens[: n // 4, -1] = 0
    wide = tokens[:, 0] % 2 == 0
    togo = torch.where(wide, torch.randint(0, 2, (n,), generator=gen).float() * 2 - 1, torch.zeros(n))
    togo[::50] = math.nan  # unfinished responses are left out
    return Positions(
        torch.randn(n, h, generator=gen).half(),
        tokens,
        logq.clone(),
        logq,
        torch.zeros(n, k),
        togo,
    )


def test_the_future_head_learns_which_candidates_have_a_wide_future(tiny):
    data = _positions(tiny)
    settings = dict(epochs=30, lr=3e-3, bins=8, sigma=0.0)
    head, report = fit_future_head(tiny, data, **settings)
    assert report["held_out_ce"] < report["marginal_ce"]  # it learned something the marginal does not know
    assert report["lo"] < -1.0 < 1.0 < report["hi"]
    assert head.config.trained["lo"] == report["lo"]  # the head carries the range its bins cover
    values, report = soft_future_values(tiny, data, 0.2, seed=0, **settings)
    q = data.q()
    assert torch.allclose((q * values.double()).sum(-1), torch.zeros(len(data), dtype=torch.float64), atol=1e-6)
    assert torch.all(values[q == 0] == 0)
    # at β 0.2 a wide ±1 future is worth ~ +0.86 over a sure 0: the candidates of even tokens rank above the odd ones
    even = (data.tokens % 2 == 0) & (q > 0)
    odd = (data.tokens % 2 == 1) & (q > 0)
    assert float(values[even].mean()) - float(values[odd].mean()) > 0.3
    assert report["spread_future"] > 0 and report["spread_delta"] == 0


def test_too_few_finished_positions_are_refused_with_the_fix(tiny):
    data = _positions(tiny, n=20)
    with pytest.raises(ConfigError, match="raise --total-timesteps"):
        fit_future_head(tiny, data.replace(togo=torch.full((20,), math.nan)))
    with pytest.raises(ConfigError, match="data version 2"):
        fit_future_head(tiny, data.replace(togo=None))


def test_the_form_flag_is_checked():
    with pytest.raises(ConfigError, match="pass --tilt-future too"):
        tilt_config(tilt_future_form="soft").validate()
    with pytest.raises(ConfigError, match="tilt_future_form='sof' is not a valid choice.*Did you mean 'soft'"):
        tilt_config(tilt_future=True, tilt_future_form="sof").validate()
    tilt_config(tilt_future=True, tilt_future_form="soft").validate()


def test_the_backend_fits_delta_plus_the_soft_future(tiny, tmp_path, monkeypatch):
    """``train --backend tilt --tilt-future --tilt-future-form soft`` fits Δ + the centred soft value of the rest."""
    import agents.tilt.backend
    from agents.tilt.backend import train_tilt

    def length_reward(prompts, responses):
        return [float(len(r)) / 20 for r in responses]

    base = dict(total_timesteps=256, tilt_epochs=1, tilt_data=str(tmp_path / "d.pt"))
    fitted = []
    real_fit = agents.tilt.backend.fit
    monkeypatch.setattr(
        agents.tilt.backend, "fit", lambda agent, lm, data, **kw: fitted.append(data) or real_fit(agent, lm, data, **kw)
    )
    train_tilt(tilt_config(**base), model=tiny, reward=length_reward)
    saved = train_tilt(
        tilt_config(**base, tilt_future=True, tilt_future_form="soft", save_dir=str(tmp_path / "p")),
        model=tiny,
        reward=length_reward,
    )
    plain, soft = fitted
    expected, _ = soft_future_values(tiny, plain, 0.5, seed=0)
    torch.testing.assert_close(soft.delta, plain.delta + expected)
    assert not torch.equal(soft.delta, plain.delta)
    assert saved.checkpoint is not None
