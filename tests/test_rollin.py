"""Q♯'s second round (agents/value/rollin.py): guided roll-ins, switched to the LLM's sampler, labelled by the
first round's CDFs; resumable; and `proxy-rlhf value --roll-in`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from agents.baselines import AlwaysAccept, RandomReject
from agents.cli import main
from agents.value.data import ValueDataKey, collect_value_data, load_value_data
from agents.value.rollin import collect_rollin_data, mid_cdf, reference_rewards, rollin_key
from proxy_env.errors import ConfigError
from tests.conftest import PROMPTS, length_reward

KEY = ValueDataKey(1, "tiny", "length", "test", 6, 2, 5, 50, 0.95, 1.0, -1, 0)


@pytest.fixture(scope="module")
def first(tiny):
    return collect_value_data(tiny, PROMPTS, length_reward, KEY)


def test_mid_cdf_places_a_reward_among_the_references_with_ties_counting_half():
    reference = np.array([0.0, 1.0, 1.0, 2.0])
    np.testing.assert_allclose(mid_cdf(reference, np.array([-1.0, 0.0, 1.0, 1.5, 3.0])), [0, 0.125, 0.5, 0.75, 1])


def test_reference_rewards_keep_one_reward_per_first_round_response(first):
    rewards = reference_rewards(first)
    assert sorted(rewards) == [0, 1, 2, 3] and all(len(r) == KEY.samples for r in rewards.values())
    for p, r in rewards.items():
        mine = first.prompt == p
        per_response = {int(i): float(x) for i, x in zip(first.response[mine], first.reward[mine])}
        assert sorted(r.tolist()) == sorted(per_response.values())


def test_roll_ins_are_labelled_by_the_reference_cdf_and_stay_in_the_budget(tiny, first):
    key = rollin_key(KEY, "guide", 4, "distribution", roll_ins=3, positions=2, batch_prompts=2)
    data = collect_rollin_data(tiny, PROMPTS, length_reward, key, first, lambda seed: RandomReject(0.3, seed=seed))
    assert len(data) > 0 and set(data.prompt.tolist()) == {0, 1, 2, 3}
    assert set(data.response.tolist()) <= {6, 7, 8}  # after the first round's 6 responses of each prompt
    assert (data.step < data.length).all() and (data.length <= KEY.max_new_tokens).all()
    cdf = reference_rewards(first)
    for m in range(len(data)):
        expected = mid_cdf(cdf[int(data.prompt[m])], np.array([float(data.reward[m])]))[0]
        assert float(data.u[m]) == pytest.approx(expected, abs=1e-6)
    assert torch.isfinite(data.hidden.float()).all() and (data.logq <= 0).all()
    # a continuation is the LLM's sampler: the taken token is in its pool, with the pool's probability
    assert (data.logprob <= data.logq + 1e-5).all()


def test_the_roll_in_round_resumes_where_it_stopped_and_refuses_other_settings(tiny, first, tmp_path):
    key = rollin_key(KEY, "guide", 4, "distribution", roll_ins=2, positions=2, batch_prompts=2)

    def guide(seed):  # draws its actions: a resumed run must draw what a whole run would
        return RandomReject(0.5, seed=seed)

    whole = collect_rollin_data(tiny, PROMPTS, length_reward, key, first, guide)

    def stop_after_first(done, total):
        if done == 2:
            raise KeyboardInterrupt

    path = tmp_path / "rollin.pt"
    with pytest.raises(KeyboardInterrupt):
        collect_rollin_data(tiny, PROMPTS, length_reward, key, first, guide, path=path, progress=stop_after_first)
    assert set(load_value_data(path, key).prompt.tolist()) == {0, 1}
    resumed = collect_rollin_data(tiny, PROMPTS, length_reward, key, first, guide, path=path)
    for a, b in zip(whole, resumed):
        torch.testing.assert_close(a, b)
    other = rollin_key(KEY, "guide", 8, "distribution", roll_ins=2, positions=2, batch_prompts=2)
    with pytest.raises(ConfigError, match="n: file 4 vs now 8"):
        collect_rollin_data(tiny, PROMPTS, length_reward, other, first, guide, path=path)
    with pytest.raises(ConfigError, match="no responses for 1 of the 4 prompts"):
        collect_rollin_data(
            tiny, PROMPTS, length_reward, key, first.take(first.prompt < 3), lambda seed: AlwaysAccept()
        )


def test_the_command_rolls_in_with_a_fitted_head_and_fits_on_both_rounds(tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS * 2) + "\n")
    args = ["value", "--model", "tiny", "--prompts", str(prompts), "--samples", "4", "--positions", "2"]
    args += ["--max-new-tokens", "4", "--epochs", "1", "--bins", "8", "--batch-prompts", "4"]
    args += ["--data", str(tmp_path / "v.pt")]
    assert main([*args, "--out", str(tmp_path / "head")]) == 0, capsys.readouterr().err
    second = ["--roll-in", str(tmp_path / "head"), "--roll-in-n", "2", "--roll-ins", "2"]
    second += ["--roll-in-data", str(tmp_path / "r.pt"), "--out", str(tmp_path / "head2")]
    assert main([*args, *second]) == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "head2" / "report.json").read_text())
    one = json.loads((tmp_path / "head" / "report.json").read_text())
    assert report["roll_in"]["roll_ins"] == 16 and report["roll_in"]["positions"] > 0
    assert report["data"]["positions"] == one["data"]["positions"] + report["roll_in"]["positions"]
    assert main([*args, "--roll-in", str(tmp_path), "--out", str(tmp_path / "h3")]) == 2
    assert "is not a value head folder" in capsys.readouterr().err
    assert main([*args, "--roll-in", str(tmp_path / "head"), "--out", str(tmp_path / "head")]) == 2
    assert "would overwrite the guide" in capsys.readouterr().err


def test_a_roll_in_on_another_hidden_layer_is_refused_before_anything_loads(tmp_path):
    from agents.value.run import ValueConfig

    (tmp_path / "value_head.json").write_text("{}")
    with pytest.raises(ConfigError, match="hidden_layer=-2 with roll_in.*--hidden-layer -1"):
        ValueConfig(roll_in=str(tmp_path), hidden_layer=-2, out=str(tmp_path / "h2")).validate()
