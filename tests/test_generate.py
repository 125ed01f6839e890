"""Aligned generation (agents/generate.py): ProxyGenerator over prompts, seeded, and from a checkpoint."""

from __future__ import annotations

import pytest

from agents.baselines import AlwaysAccept, RandomReject
from agents.generate import ProxyGenerator
from agents.train import SB3Config, train
from proxy_env.config import EnvConfig
from proxy_env.errors import ConfigError
from proxy_env.rewards import ReferenceBaseline
from tests.conftest import PROMPTS, _zero

MORE = PROMPTS + ["Say something nice.", "Why is the sky blue?", "Good morning!"]


def test_always_accept_greedy_is_the_llms_greedy_decoding(tiny):
    """Each prompt gets its own response: with order='greedy', always-accept = HF greedy decoding."""
    _always_accept_greedy_is_greedy_generate(tiny)


@pytest.mark.gpu
def test_always_accept_greedy_is_hf_greedy_generate_on_cuda(cuda_lm):
    _always_accept_greedy_is_greedy_generate(cuda_lm("float32"))


def _always_accept_greedy_is_greedy_generate(lm):
    gen = ProxyGenerator(lm, AlwaysAccept(), max_new_tokens=6, order="greedy", batch_size=4)
    results = gen.generate(MORE)
    assert [g.prompt for g in results] == MORE
    greedy = ReferenceBaseline(lm, _zero, EnvConfig(max_new_tokens=6)).greedy(MORE)  # Hugging Face generate
    assert [g.text for g in results] == greedy
    assert all(g.rejections == 0 and g.rejected_ids == [] and len(g.token_ids) <= 6 for g in results)
    one_batch = ProxyGenerator(lm, AlwaysAccept(), max_new_tokens=6, order="greedy", batch_size=16).generate(MORE)
    assert [g.token_ids for g in one_batch] == [g.token_ids for g in results]


def test_rejections_are_recorded(tiny):
    gen = ProxyGenerator(tiny, RandomReject(p=1.0), max_new_tokens=4, top_k=3, top_p=1.0)
    for g in gen.generate(PROMPTS):
        assert g.rejections == len(g.rejected_ids) == 2 * len(g.token_ids)  # 2 rejections, then forced
        assert g.forced_commits == len(g.token_ids) and g.decisions == g.rejections
        for t, token in enumerate(g.token_ids):  # the committed token was not one rejected at its position
            assert token not in g.rejected_ids[2 * t : 2 * t + 2]


def test_sampled_generation_is_seeded(tiny):
    make = lambda seed: ProxyGenerator(tiny, AlwaysAccept(), max_new_tokens=6, top_p=1.0, seed=seed)  # noqa: E731
    first, again, other = (make(s).generate(PROMPTS) for s in (0, 0, 1))
    assert [g.token_ids for g in first] == [g.token_ids for g in again]
    assert [g.token_ids for g in first] != [g.token_ids for g in other]


def test_single_prompt_string(tiny):
    (g,) = ProxyGenerator(tiny, AlwaysAccept(), max_new_tokens=3).generate("Hello!")
    assert g.prompt == "Hello!" and isinstance(g.text, str)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("gen") / "proxy"
    cfg = SB3Config(
        env=EnvConfig(model="tiny", prompts=PROMPTS, max_new_tokens=4),
        num_envs=4,
        total_timesteps=64,
        n_steps=16,
        batch_size=32,
        policy_device="cpu",
        save_dir=str(path),
    )
    train(cfg, reward=_zero)
    return path


def test_generate_from_checkpoint(checkpoint, tiny):
    gen = ProxyGenerator.from_checkpoint(checkpoint, device="cpu", batch_size=2)
    results = gen.generate(PROMPTS[:3])
    assert [g.prompt for g in results] == PROMPTS[:3]
    assert all(1 <= len(g.token_ids) <= 4 and g.decisions >= 1 for g in results)
    again = ProxyGenerator.from_checkpoint(checkpoint, model=tiny, device="cpu", batch_size=2).generate(PROMPTS[:3])
    assert [g.token_ids for g in again] == [g.token_ids for g in results]


def test_observation_mismatch_is_explained(checkpoint):
    with pytest.raises(ConfigError, match=r"expects observations of shape \(64,\) but the env gives \(67,\)"):
        ProxyGenerator.from_checkpoint(checkpoint, device="cpu", observation="candidate_stats").generate(["Hi!"])


def test_model_object_checkpoint_needs_model(tmp_path, tiny):
    cfg = SB3Config(
        env=EnvConfig(prompts=PROMPTS, max_new_tokens=2),
        num_envs=2,
        total_timesteps=32,
        n_steps=16,
        batch_size=32,
        policy_device="cpu",
        save_dir=str(tmp_path / "p"),
    )
    train(cfg, model=tiny, reward=_zero)
    with pytest.raises(ConfigError, match="trained on a model object.*pass model="):
        ProxyGenerator.from_checkpoint(tmp_path / "p", device="cpu")
    assert ProxyGenerator.from_checkpoint(tmp_path / "p", model=tiny, device="cpu").generate(["Hi!"])


class _FixedPredict:
    """A proxy whose predict returns a fixed array, whatever the observations."""

    def __init__(self, make):
        self.make = make

    def predict(self, obs, state=None, episode_start=None, deterministic=True):
        return self.make(len(obs)), state


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda n: [0.7] * n, r"returned 0.7 as an action.*A probability is not an action"),
        (lambda n: [1] * (n + 1), r"returned 3 actions for 2 observations"),
    ],
    ids=["probability", "one-too-many"],
)
def test_a_proxy_whose_predict_is_not_one_0_or_1_per_row_is_refused(tiny, make, match):
    from proxy_env.errors import ActionError

    with pytest.raises(ActionError, match=match):
        ProxyGenerator(tiny, _FixedPredict(make), max_new_tokens=3).generate(PROMPTS[:2])


def test_a_checkpoint_whose_env_kwargs_hold_an_unknown_key_is_refused_naming_the_file(saved, tmp_path):
    import json
    import shutil

    from agents.saving.checkpoint import CheckpointError

    path = tmp_path / "edited"
    shutil.copytree(saved, path)
    config = json.loads((path / "proxy_config.json").read_text())
    config["env_kwargs"]["top_pp"] = 0.9
    (path / "proxy_config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"proxy_config.json's env_kwargs holds 'top_pp'.*Did you mean 'top_p'"):
        ProxyGenerator.from_checkpoint(path, device="cpu")


def test_reward_transforms_recorded_by_older_checkpoints_do_not_stop_generation(tiny):
    gen = ProxyGenerator(
        {"model": tiny, "reject_cost": 0.05, "reward_normalize": True}, AlwaysAccept(), max_new_tokens=2
    )
    assert len(gen.generate(["Hi!"])) == 1
