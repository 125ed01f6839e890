"""The reward model's frozen encoders (proxy_env/rewards/encoders.py): the LLM's and MiniLM's, pooled by mean, sum
or token.
"""

from __future__ import annotations

import time

import pytest
import torch

from feedback import RMTrainConfig, train_reward_model
from proxy_env.errors import ConfigError
from proxy_env.rewards.encoders import LMEncoder, SentenceEncoder
from proxy_env.rewards.learned import load_reward_model
from tests.conftest import _toy_pairs


def test_lm_encoder_round_trip(tiny, tmp_path):
    encoder = LMEncoder(tiny)
    emb = encoder.embed(["Hi", "Hi"], ["", "hello there"])
    assert emb.shape == (2, 64) and torch.isfinite(emb).all()
    trained = train_reward_model(
        _toy_pairs(20), encoder, RMTrainConfig(hidden=0, epochs=3, test_fraction=0.0, val_fraction=0.0)
    )
    assert trained.metrics["evaluated_on"] == "train"
    loaded = load_reward_model(trained.model.save(tmp_path / "rm"), lm=tiny)
    assert loaded(["Hi"], ["great day"]) == pytest.approx(trained.model(["Hi"], ["great day"]), abs=1e-5)


def test_minilm_encoder_loads_offline():
    start = time.perf_counter()
    encoder = SentenceEncoder(device="cpu")
    emb = encoder.embed(["q"] * 3, ["What a wonderful day!", "What a lovely day!", "The invoice is overdue."])
    assert encoder.dim == 384 and time.perf_counter() - start < 30
    assert torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert float(emb[0] @ emb[1]) > float(emb[0] @ emb[2])  # similar sentences are closer


def test_sum_pooling_counts_tokens_and_bad_layers(tiny_bert):
    """Sum pooling grows with repeated content (mean pooling does not); layers must exist."""
    summed, mean = (
        SentenceEncoder(tiny_bert, device="cpu", pooling="sum", layers=(0,)),
        SentenceEncoder(tiny_bert, device="cpu", layers=(0,)),
    )
    one, three = summed.embed(["", ""], ["good", "good good good"]).norm(dim=-1)
    assert three > 1.3 * one  # [CLS] good [SEP] vs [CLS] good good good [SEP]: 3 vs 5 token states
    norms = mean.embed(["", ""], ["good", "good good good"]).norm(dim=-1)
    torch.testing.assert_close(norms, torch.ones(2))
    with pytest.raises(ConfigError, match=r"layers=\[5\].*hidden states"):
        SentenceEncoder(tiny_bert, device="cpu", layers=(5,))


def test_token_encoder_states_and_mask(tiny_bert):
    """pooling="tokens" returns every token's states plus a mask channel; padding is zero."""
    encoder = SentenceEncoder(tiny_bert, device="cpu", pooling="tokens", layers=(0, 1), batch_size=1)
    states = encoder.embed(["", ""], ["good", "good good good"])  # one text per batch: padded to a common width after
    assert encoder.per_token and encoder.dim == 64 and states.shape == (2, 5, 65)
    assert states[:, :, -1].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]  # [CLS] good [SEP] + 2 padding
    assert torch.count_nonzero(states[0, 3:]) == 0
    pooled = SentenceEncoder(tiny_bert, device="cpu", pooling="sum", layers=(0, 1)).embed(
        ["", ""], ["good", "good good good"]
    )
    torch.testing.assert_close(states[:, :, :-1].sum(1), pooled)  # the same token states the sum pooling adds up
