import numpy as np
import pytest
import torch

from agents.baselines import AlwaysAccept, RandomReject
from agents.eval.compare import mean_ci, run_agents, table
from agents.policies import init_accept_bias
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


def test_accept_bias_init(tiny):
    from stable_baselines3 import PPO

    from agents.policies import proxy_policy_kwargs
    from agents.train import make_sb3_env

    env = make_sb3_env({"model": tiny, "prompts": PROMPTS, "max_new_tokens": 4}, 2, seed=0)
    agent = PPO("MlpPolicy", env, policy_kwargs=proxy_policy_kwargs(), device="cpu")
    assert init_accept_bias(agent, 0.9)
    obs = torch.randn(5, tiny.hidden_size)
    probs = agent.policy.get_distribution(obs).distribution.probs[:, 1]
    torch.testing.assert_close(probs, torch.full((5,), 0.9), atol=0.02, rtol=0)
    with pytest.raises(Exception, match="accept_prob=1.0 must be in"):
        init_accept_bias(agent, 1.0)


@pytest.mark.parametrize(
    ("recipe", "trained"), [("tilt", 64), ("ppo", 128)]
)  # PPO rounds up to whole rollouts of 64 steps
def test_demo_at_tiny_scale(capsys, recipe, trained):
    from agents.cli import main

    assert (
        main(
            [
                "demo",
                "--model",
                "tiny",
                "--recipe",
                recipe,
                "--decisions",
                "64",
                "--num-envs",
                "2",
                "--max-new-tokens",
                "4",
                "--eval-prompts",
                "4",
                "--show",
                "1",
                "--no-progress-bar",
                "--out",
                str(__import__("tempfile").mkdtemp()),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    for row in ("| always-accept |", "| best-of-2 |", "| best-of-4 |", f"| {recipe} proxy (sampled actions) |"):
        assert row in out
    assert f"trained {trained} decisions" in out and "(exact)" in out and "PROMPT:" in out
    assert main(["demo", "--decisions", "0"]) == 2
