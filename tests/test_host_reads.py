"""Device-to-host reads per env step (proxy_env/engine/host_reads.py): what a step would synchronise on a GPU."""

from __future__ import annotations

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


def _reads_per_step(lm, mode: str, num_envs: int = 8, steps: int = 12) -> float:
    venv = gym.make_vec(
        proxy_env.ENV_ID,
        num_envs=num_envs,
        vectorization_mode="vector_entry_point",
        model=lm,
        prompts=PROMPTS,
        max_new_tokens=6,
        reward=lambda p, r: [0.0] * len(r),
        **MODES[mode],
    )
    rng = np.random.default_rng(0)
    venv.reset(seed=0)
    with HostReads() as reads:
        for _ in range(steps):
            venv.step((rng.random(num_envs) > 0.3).astype(np.int64))
    venv.close()
    return reads.total / steps


def test_host_reads_are_counted_the_same_on_every_run(tiny):
    """The count depends on the code path, not on the machine: two runs of the same seeded steps agree."""
    assert _reads_per_step(tiny, "prefix+forced_steps") == _reads_per_step(tiny, "prefix+forced_steps") > 0


@pytest.mark.gpu
@pytest.mark.parametrize("mode", list(MODES))
def test_a_cuda_step_reads_the_host_no_more_than_a_cpu_step(tiny, cuda_lm, mode):
    assert _reads_per_step(cuda_lm("float32"), mode) <= _reads_per_step(tiny, mode)
