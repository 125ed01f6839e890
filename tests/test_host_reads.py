"""Device-to-host reads per env step (proxy_env/engine/host_reads.py): what a step would synchronise on a GPU."""

from __future__ import annotations

from collections import Counter

import gymnasium as gym
import numpy as np
import pytest

import proxy_env
from proxy_env.engine.host_reads import HostReads
from tests.conftest import PROMPTS

MODES = {
    "candidate+forced_steps": {"forced_steps": True},
    "prefix+forced_steps": {"observation": "prefix", "forced_steps": True},
}


def _run(lm, mode: str, num_envs: int = 8, steps: int = 12, *, max_new_tokens: int = 6, static: bool = False):
    """Host reads by name per step (all steps; steps where nothing ended), their count, the responses, the last obs."""
    venv = gym.make_vec(
        proxy_env.ENV_ID,
        num_envs=num_envs,
        vectorization_mode="vector_entry_point",
        model=lm,
        prompts=PROMPTS,
        max_new_tokens=max_new_tokens,
        reward=lambda p, r: [0.0] * len(r),
        **MODES[mode],
    )
    rng = np.random.default_rng(0)
    venv.reset(seed=0)
    if static:  # what a GPU's cache does: every step feeds every row (the default off the CPU)
        venv.unwrapped.decoder.cache.dense_fraction = 0.0
    total: Counter[str] = Counter()
    quiet: Counter[str] = Counter()  # steps where no episode ended (no scoring, no new prompt to prefill)
    quiet_steps = 0
    for _ in range(steps):
        with HostReads() as reads:
            obs, _, terminated, truncated, _ = venv.step((rng.random(num_envs) > 0.3).astype(np.int64))
        total += reads.by_name
        if not (terminated | truncated).any():
            quiet += reads.by_name
            quiet_steps += 1
    state = venv.unwrapped.state
    responses = [state.response[i, : int(state.position[i])].tolist() for i in range(num_envs)]
    venv.close()
    per_step = {k: v / steps for k, v in total.items()}
    return per_step, {k: v / max(quiet_steps, 1) for k, v in quiet.items()}, quiet_steps, responses, obs


def _reads_per_step(lm, mode: str, **kwargs) -> float:
    return sum(_run(lm, mode, **kwargs)[0].values())


def test_host_reads_are_counted_the_same_on_every_run(tiny):
    """The count depends on the code path, not on the machine: two runs of the same seeded steps agree."""
    assert _reads_per_step(tiny, "prefix+forced_steps") == _reads_per_step(tiny, "prefix+forced_steps") > 0


@pytest.mark.gpu
@pytest.mark.parametrize("mode", list(MODES))
def test_a_cuda_step_reads_the_host_no_more_than_a_cpu_step(tiny, cuda_lm, mode):
    assert _reads_per_step(cuda_lm("float32"), mode) <= _reads_per_step(tiny, mode)


@pytest.mark.parametrize("mode", list(MODES))
def test_a_static_batch_step_reads_only_the_two_copies_and_the_pool_ties(tiny, mode):
    """With the GPU's static batch, a step where no episode ends reads the ended mask and the outputs (one copy
    each), the pool's top-k/top-p tie checks and, now and then, the cache's live width: no row counts, row indices
    or reset checks. It decodes what the sub-batch engine does."""
    every, static, quiet_steps, static_responses, static_obs = _run(
        tiny, mode, steps=20, max_new_tokens=24, static=True
    )
    sub_every, sub, _, responses, obs = _run(tiny, mode, steps=20, max_new_tokens=24)
    assert quiet_steps >= 5
    assert set(static) <= {"cpu", "numpy", "__bool__", "__int__"}, static
    assert static["cpu"] == static["numpy"] == 2 and static["__bool__"] <= 2
    assert static.get("__int__", 0) <= 0.25  # the cache's live width, read once its length has doubled (compaction)
    assert sum(static.values()) < sum(sub.values()) and sum(every.values()) < sum(sub_every.values())
    assert static_responses == responses and any(responses)
    np.testing.assert_allclose(static_obs, obs, rtol=1e-4, atol=1e-4)
