"""Built-in rewards (proxy_env/rewards/builtin.py): VADER by default, bad reward sources named, an HF classifier."""

import math

import pytest
import torch

from proxy_env.errors import ConfigError, RewardError
from proxy_env.rewards import HFRewardModel, VaderReward, resolve_reward, score


def test_vader_is_default_and_orders_sentiment():
    fn = resolve_reward("default")
    assert isinstance(fn, VaderReward)
    values = score(fn, ["q"] * 3, ["I love this, wonderful!", "It is a table.", "I hate this, terrible."])
    assert values[0] > 0.5 and values[1] == 0.0 and values[2] < -0.5


@pytest.mark.parametrize(
    "fn, match",
    [
        (lambda p, r: [1.0], "returned 1 values for 2 responses"),
        (lambda p, r: [1.0, math.nan], "returned nan for response 1"),
        (lambda p, r: [math.inf, 0.0], "returned inf"),
        (lambda p, r: "xy", "not a list of floats"),
    ],
    ids=["count", "nan", "inf", "type"],
)
def test_bad_reward_sources_are_named(fn, match):
    with pytest.raises(RewardError, match=match) as info:
        score(fn, ["a", "b"], ["x", "y"])
    assert "<lambda>" in str(info.value)


def test_hf_reward_model_on_a_tiny_classifier(tiny, tmp_path):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=49152,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        num_labels=2,
        pad_token_id=2,
        id2label={0: "neg", 1: "pos"},
        label2id={"neg": 0, "pos": 1},
    )
    model = LlamaForSequenceClassification(config)
    model.save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    rm = HFRewardModel(str(tmp_path), label="pos", batch_size=2, device="cpu")
    values = rm(["p"] * 3, ["good", "a longer response here", "bad"])
    assert len(values) == 3 and all(math.isfinite(v) for v in values)
    direct = model(**tiny.tokenizer(["p"], ["good"], return_tensors="pt")).logits[0, 1].item()
    assert values[0] == pytest.approx(direct, abs=1e-4)
    fn = resolve_reward(str(tmp_path))
    assert isinstance(fn, HFRewardModel)
    with pytest.raises(ConfigError, match="label='happy' is not a label"):
        HFRewardModel(str(tmp_path), label="happy")


@pytest.mark.parametrize("value", ["0.5", True, None, b"1"], ids=["str", "bool", "none", "bytes"])
def test_score_refuses_values_that_are_not_numbers(value):
    """A string or a bool would be coerced to a float without a word; it is refused, naming the value."""
    with pytest.raises(RewardError, match=r"returned .* among its values; return one int or float per response"):
        score(lambda p, r: [1.0, value], ["p", "p"], ["a", "b"])


def test_score_takes_ints_floats_numpy_and_torch_values():
    import numpy as np

    for values in ([1, 2.5], np.array([1.0, 2.5], dtype=np.float32), torch.tensor([1.0, 2.5]), [np.int64(1), 2.5]):
        assert score(lambda p, r, v=values: v, ["p", "p"], ["a", "b"]).tolist() == [1.0, 2.5]


@pytest.mark.parametrize(
    ("reward", "match"),
    [
        ("vadr", r"reward='vadr' .*Did you mean 'vader'"),
        ("some/nonexistent-model", r"reward='some/nonexistent-model'"),
    ],
    ids=["typo", "missing-model"],
)
def test_a_bad_reward_is_named_as_the_reward_not_as_the_model(reward, match, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ConfigError, match=match) as info:
        resolve_reward(reward)
    assert "model=" not in str(info.value) and "SmolLM2" not in str(info.value)


def test_a_folder_that_is_no_reward_model_is_named_as_the_reward(tmp_path):
    with pytest.raises(ConfigError, match=r"reward='.*' is a path but holds no config.json"):
        resolve_reward(str(tmp_path))
