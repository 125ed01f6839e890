"""Agents compared on the same prompts and seeds (agents/eval/compare.py): the mean with its CI, the paired table."""

import numpy as np
import pytest

from agents.baselines import AlwaysAccept, RandomReject
from agents.eval.compare import mean_ci, run_agents, table
from tests.conftest import PROMPTS


def test_mean_ci():
    m, lo, hi = mean_ci(np.array([1.0, 2.0, 3.0, 4.0]))
    assert m == 2.5 and lo < 2.5 < hi and hi - m == pytest.approx(1.96 * np.std([1, 2, 3, 4], ddof=1) / 2)


def test_run_agents_is_paired_and_tabulated(tiny):
    reward = lambda p, r: [float(len(x)) for x in r]  # noqa: E731
    results = run_agents(
        tiny,
        {"a": AlwaysAccept(), "b": AlwaysAccept(), "r": RandomReject(0.5, seed=0)},
        PROMPTS,
        reward,
        seed=0,
        max_new_tokens=4,
        top_p=1.0,
    )
    a, b, r = results
    np.testing.assert_array_equal(a.rewards, b.rewards)  # same seeds, same agent: identical responses
    assert a.rejection_rate == 0.0 and 0.2 < r.rejection_rate < 0.8
    text = table(results, reference="a")
    assert text.splitlines()[0].startswith("| agent | mean reward [95% CI] | vs reference")
    assert "| b | " in text and "+0.000 [+0.000, +0.000]" in text and len(text.splitlines()) == 5
