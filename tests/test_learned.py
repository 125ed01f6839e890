"""A trained Bradley–Terry reward model as the env loads it (proxy_env/rewards/learned.py): its folder saved and
loaded, a failed save that keeps the old folder, damaged folders named, and the per-token head.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

from feedback import RMTrainConfig, train_reward_model
from feedback.records import PreferencePair
from proxy_env.errors import ConfigError, DataError
from proxy_env.rewards import resolve_reward
from proxy_env.rewards.encoders import SentenceEncoder
from proxy_env.rewards.learned import CONFIG_NAME, BTRewardModel, Standardize, TokenMeanHead, load_reward_model
from tests.conftest import Toy, _toy_pairs, _truncate


@pytest.mark.parametrize(
    "pooling, layers",
    [("mean", (-1,)), ("sum", (0, 1)), ("tokens", (0, 1))],
    ids=["mean-last", "sum-0-1", "tokens-0-1"],
)
def test_save_load_round_trip(tiny_bert, tmp_path, pooling, layers):
    encoder = SentenceEncoder(tiny_bert, device="cpu", pooling=pooling, layers=layers)
    assert encoder.dim == 32 * len(layers)
    pairs = _toy_pairs(40)
    trained = train_reward_model(pairs, encoder, RMTrainConfig(hidden=8, epochs=20))
    path = trained.model.save(tmp_path / "rm")
    assert sorted(p.name for p in path.iterdir()) == ["model.safetensors", CONFIG_NAME]
    loaded = load_reward_model(path, device="cpu")
    assert (loaded.encoder.pooling, loaded.encoder.layers) == (pooling, layers)
    standardize = next(m for m in loaded.head.modules() if isinstance(m, Standardize))
    assert not torch.equal(standardize.std, torch.ones(encoder.dim))  # input statistics were fitted and saved
    assert isinstance(loaded.head, TokenMeanHead) == (pooling == "tokens")
    texts = ["great day", "awful day", "something else"]
    assert loaded(["q"] * 3, texts) == pytest.approx(trained.model(["q"] * 3, texts), abs=1e-5)
    assert loaded.metrics["test_accuracy"] == trained.metrics["test_accuracy"]
    env_reward = resolve_reward(str(path))  # what reward="path/to/rm" in the env does
    assert isinstance(env_reward, BTRewardModel)
    trained.model.save(path)  # overwriting an RM folder is allowed; nothing else is left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rm"]


def test_failed_save_keeps_the_old_folder(tmp_path, monkeypatch):
    trained = train_reward_model(_toy_pairs(20), Toy(), RMTrainConfig(hidden=0, epochs=2))
    path = trained.model.save(tmp_path / "rm")
    before = (path / CONFIG_NAME).read_text()
    real_rename, calls = os.rename, []

    def flaky_rename(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # the old folder was moved aside; renaming the new one into place fails
            raise OSError("disk full")
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", flaky_rename)
    trained.model.mean += 1.0  # the new save differs from the old one
    with pytest.raises(OSError, match="disk full"):
        trained.model.save(path)
    monkeypatch.undo()
    assert len(calls) == 3 and (path / CONFIG_NAME).read_text() == before  # the old model was put back
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rm"]  # no hidden .tmp/.old folders left behind


def test_load_errors(tiny_bert, tmp_path):
    with pytest.raises(ConfigError, match="holds no reward_model.json"):
        load_reward_model(tmp_path)
    trained = train_reward_model(
        _toy_pairs(20), SentenceEncoder(tiny_bert, device="cpu"), RMTrainConfig(hidden=0, epochs=2)
    )
    path = trained.model.save(tmp_path / "rm")
    config = json.loads((path / CONFIG_NAME).read_text())
    (path / CONFIG_NAME).write_text(json.dumps({**config, "version": 99}))
    with pytest.raises(DataError, match="format version 99"):
        load_reward_model(path)
    (path / CONFIG_NAME).write_text(json.dumps({**config, "format": "other"}))
    with pytest.raises(DataError, match="not a Bradley–Terry"):
        load_reward_model(path)
    (path / CONFIG_NAME).write_text(json.dumps({**config, "head": {"in_dim": 32, "hidden": 4}}))
    with pytest.raises(DataError, match="does not match"):
        load_reward_model(path)
    (path / CONFIG_NAME).write_text(json.dumps({**config, "head": {**config["head"], "per_token": True}}))
    with pytest.raises(DataError, match=r"per_token=True does not match the encoder \(pooling='mean'\)"):
        load_reward_model(path)
    legacy = {**config, "version": 2, "head": {k: v for k, v in config["head"].items() if k != "per_token"}}
    (path / CONFIG_NAME).write_text(json.dumps(legacy))  # a version-2 folder written before per-token heads existed
    texts = ["great day", "awful day"]
    assert load_reward_model(path)(["q"] * 2, texts) == pytest.approx(trained.model(["q"] * 2, texts), abs=1e-5)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "file.txt").write_text("x")
    with pytest.raises(ConfigError, match="not a reward-model folder"):
        trained.model.save(tmp_path / "other")


def test_truncated_reward_model_weights(tmp_path, monkeypatch):
    import proxy_env.rewards.learned as rm

    class Encoder:  # a stand-in sentence encoder: the test is about the weights file, not the encoder
        name, dim = "stub", 4

        def spec(self):
            return {"kind": "stub"}

    folder = rm.BTRewardModel(Encoder(), rm.make_head(4, 0), hidden=0).save(tmp_path / "rm")
    _truncate(folder / rm.WEIGHTS_NAME)
    monkeypatch.setattr(rm, "encoder_from_spec", lambda spec, **kwargs: Encoder())
    with pytest.raises(DataError, match=r"model.safetensors: damaged or truncated.*retrain the reward model"):
        rm.load_reward_model(folder)


def test_token_head_ignores_padding_and_learns_a_lexicon(tiny_bert):
    """The per-token head averages real tokens only, and learns which words are preferred wherever they stand."""
    words = [("great", "awful"), ("wonderful", "terrible"), ("happy", "sad"), ("lovely", "horrible")]
    pairs = [
        PreferencePair(
            f"q{i}", f"the {g} day" if i % 2 else f"{g} it was", f"the {b} day" if i % 3 else f"{b} it was", "toy", 1.0
        )
        for i, (g, b) in ((i, words[i % 4]) for i in range(80))
    ]
    encoder = SentenceEncoder(tiny_bert, device="cpu", pooling="tokens", layers=(0,))
    result = train_reward_model(
        pairs, encoder, RMTrainConfig(hidden=16, epochs=200, patience=200, learning_rate=1e-2, seed=0)
    )
    assert result.metrics["test_accuracy"] == 1.0 and result.history[-1][0] < 0.1
    model = result.model
    alone = model(["q"], ["the great day"])
    batched = model(["q"] * 2, ["the great day", "a much longer text that pads the first one with many more tokens"])
    assert batched[0] == pytest.approx(alone[0], abs=1e-5)  # padding does not change a response's reward
    assert model(["q"] * 2, ["it was lovely", "it was horrible"]) == sorted(
        model(["q"] * 2, ["it was lovely", "it was horrible"]), reverse=True
    )
