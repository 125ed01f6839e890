"""What feedback/rm.py gives the Bradley–Terry training: the loss, the split by prompt, the balance by length."""

from __future__ import annotations

import pytest
import torch

from feedback.records import PreferencePair
from feedback.rm import balance_by_length, bt_loss, split_by_prompt


def test_bt_loss():
    assert float(bt_loss(torch.tensor([0.0]), torch.tensor([0.0]))) == pytest.approx(0.6931, abs=1e-4)
    assert float(bt_loss(torch.tensor([10.0]), torch.tensor([0.0]))) < 1e-4


def test_split_by_prompt_does_not_leak_prompts():
    pairs = [PreferencePair(f"q{i % 25}", f"good {i}", f"bad {i}", "toy") for i in range(100)]  # 4 pairs per prompt
    train, val, test = split_by_prompt(pairs, test_fraction=0.2, val_fraction=0.2, seed=3)
    assert sorted(train + val + test) == list(range(100))
    sets = [{pairs[i].prompt for i in part} for part in (train, val, test)]
    assert [len(s) for s in sets] == [15, 5, 5]  # by prompt, not by pair
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])


def test_balance_by_length():
    pairs = (
        [PreferencePair("p", "a b c d e", "a", "s")] * 5
        + [PreferencePair("p", "a", "a b c d e", "s")] * 2
        + [PreferencePair("p", "a b", "c d", "s")] * 3
    )
    kept = balance_by_length(pairs, bucket_words=2)
    longer = sum(len(p.chosen.split()) > len(p.rejected.split()) for p in kept)
    shorter = sum(len(p.chosen.split()) < len(p.rejected.split()) for p in kept)
    assert longer == shorter == 2 and len(kept) == 7
