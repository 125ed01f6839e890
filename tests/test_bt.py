"""Training the Bradley–Terry head (feedback/bt.py): the loss goes down to full held-out accuracy, early stopping and
the config's checks, and the global RNG left alone.
"""

from __future__ import annotations

import pytest
import torch

from feedback import RMTrainConfig, train_reward_model
from proxy_env.errors import ConfigError
from tests.conftest import Toy, _toy_pairs


def test_loss_decreases_on_separable_set():
    result = train_reward_model(
        _toy_pairs(), Toy(), RMTrainConfig(hidden=16, epochs=150, patience=150, learning_rate=1e-2, seed=0)
    )
    train_losses = [t for t, _ in result.history]
    assert train_losses[-1] < 0.1 < 0.5 < train_losses[0]
    m = result.metrics
    assert m["test_accuracy"] == 1.0 and m["test_pairs"] == 24 and m["val_pairs"] == 12 and m["train_pairs"] == 84
    assert 0 < m["test_pairs_margin"] < 24 and m["test_accuracy_margin"] == 1.0
    scores = result.model(["q"] * 2, ["great day", "awful day"])
    assert scores[0] > scores[1]


def test_early_stopping_and_validation():
    result = train_reward_model(_toy_pairs(), Toy(), RMTrainConfig(hidden=0, epochs=500, patience=3, learning_rate=0.3))
    assert len(result.history) < 500
    with pytest.raises(ConfigError, match="val_fraction"):
        RMTrainConfig(val_fraction=0.5, test_fraction=0.6).validate()
    for field, value, match in [
        ("learning_rate", 0.0, "learning_rate=0.0 must be a finite number > 0"),
        ("learning_rate", float("nan"), "learning_rate=nan"),
        ("weight_decay", -0.1, "weight_decay=-0.1 must be a finite number >= 0"),
        ("hidden", 2.5, "hidden=2.5 must be an int >= 0"),
        ("hidden", -1, "hidden=-1 must be an int >= 0"),
        ("epochs", True, "epochs=True must be an int >= 1"),
    ]:
        with pytest.raises(ConfigError, match=match):
            RMTrainConfig(**{field: value}).validate()
    RMTrainConfig(hidden=0, weight_decay=0.0).validate()  # the edges are valid
    with pytest.raises(ConfigError, match="at least 2"):
        train_reward_model(_toy_pairs(1), Toy())


def test_training_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_reward_model(_toy_pairs(20), Toy(), RMTrainConfig(hidden=4, epochs=2))
    assert torch.equal(torch.rand(3), expected)


def test_pairs_without_a_preference_are_refused_or_dropped(caplog):
    """chosen == rejected (or both empty) states no preference: all such pairs are refused, some are dropped."""
    from feedback.records import PreferencePair

    same = [PreferencePair(f"q{i}", "same", "same", "toy") for i in range(10)] + [PreferencePair("q", "", "", "toy")]
    with pytest.raises(ConfigError, match=r"none of the 11 pairs expresses a preference"):
        train_reward_model(same, Toy(), RMTrainConfig(hidden=0, epochs=2))
    with caplog.at_level("WARNING", logger="feedback.bt"):
        result = train_reward_model(_toy_pairs(40) + same, Toy(), RMTrainConfig(hidden=0, epochs=2))
    assert "dropping 11 of 51 pairs" in caplog.text and result.metrics["pairs"] == 40
