"""The env's torch-native API (``step_tensors``/``reset_tensors``): tensors on the env's device, the same MDP as ``step``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from proxy_env.engine.host_reads import HostReads
from proxy_env.errors import ActionError
from tests.conftest import length_reward

MODES = {
    "candidate": {},
    "prefix+forced_steps": {"observation": "prefix", "forced_steps": True},
}


def _actions(steps: int, num_envs: int) -> np.ndarray:
    return (np.random.default_rng(3).random((steps, num_envs)) > 0.3).astype(np.int64)


@pytest.mark.parametrize("mode", list(MODES))
def test_step_tensors_is_step_with_tensors(make_venv, mode):
    """The same seeded actions give the same observations, rewards, ends and final observations through either API."""
    steps, n = 24, 4
    numpy_env = make_venv(n, reward=length_reward, max_new_tokens=5, **MODES[mode]).unwrapped
    tensor_env = make_venv(n, reward=length_reward, max_new_tokens=5, **MODES[mode]).unwrapped
    obs, _ = numpy_env.reset(seed=5)
    obs_t, _ = tensor_env.reset_tensors(seed=5)
    assert isinstance(obs_t, torch.Tensor) and obs_t.dtype == torch.float32 and obs_t.device == tensor_env.lm.device
    np.testing.assert_array_equal(obs_t.numpy(), obs)
    ended = 0
    for act in _actions(steps, n):
        obs, reward, term, trunc, info = numpy_env.step(act)
        obs_t, reward_t, term_t, trunc_t, info_t = tensor_env.step_tensors(torch.as_tensor(act))
        assert term_t.dtype == trunc_t.dtype == torch.bool and reward_t.dtype == torch.float32
        np.testing.assert_array_equal(obs_t.numpy(), obs)
        np.testing.assert_allclose(reward_t.numpy(), reward, rtol=1e-6)
        np.testing.assert_array_equal(term_t.numpy(), term)
        np.testing.assert_array_equal(trunc_t.numpy(), trunc)
        np.testing.assert_array_equal(info_t["rejected"].numpy(), info["rejected"])
        if term.any():
            ended += int(term.sum())
            np.testing.assert_array_equal(info_t["_final_obs"], info["_final_obs"])
            for i in np.flatnonzero(term):
                np.testing.assert_array_equal(info_t["final_obs"][i].numpy(), info["final_obs"][i])
            assert not info_t["final_obs"][~term_t].any()
            np.testing.assert_array_equal(info_t["final_info"]["reward_raw"], info["final_info"]["reward_raw"])
    assert ended >= 4


def test_a_tensor_step_copies_only_the_ended_mask_to_the_host(make_venv):
    """With the GPU's static batch, a step where nothing ends reads the (B,) ended mask and the pool's tie checks."""
    venv = make_venv(8, reward=length_reward, max_new_tokens=24, observation="prefix", forced_steps=True).unwrapped
    venv.reset_tensors(seed=0)
    venv.decoder.cache.dense_fraction = 0.0  # what a GPU's cache does (the default off the CPU)
    quiet = 0
    for act in _actions(16, 8):
        with HostReads() as reads:
            _, _, term, _, _ = venv.step_tensors(torch.as_tensor(act))
        if not bool(term.any()):
            quiet += 1
            assert reads.by_name["cpu"] == 1 and reads.by_name["__bool__"] <= 2, reads.by_name
            assert set(reads.by_name) <= {"cpu", "numpy", "__bool__", "__int__"}, reads.by_name
    assert quiet >= 5


def test_tensor_actions_with_a_bad_shape_or_dtype_are_refused(make_venv):
    venv = make_venv(4).unwrapped
    venv.reset_tensors(seed=0)
    with pytest.raises(ActionError, match=r"shape \(4,\)"):
        venv.step_tensors(torch.ones(3, dtype=torch.long))
    with pytest.raises(ActionError, match="integers"):
        venv.step_tensors(torch.ones(4))
    venv.step_tensors(torch.ones(4, 1, dtype=torch.long))  # a policy's (B, 1) output is taken as it is
    with pytest.raises(ActionError, match="holds no values"):
        venv.step_tensors(torch.ones(4, dtype=torch.long, device="meta"))


@pytest.mark.gpu
def test_on_cuda_the_tensors_stay_on_the_gpu(cuda_lm, make_venv):
    venv = make_venv(8, model=cuda_lm("bfloat16"), reward=length_reward, observation="prefix", forced_steps=True)
    obs, _ = venv.unwrapped.reset_tensors(seed=0)
    assert obs.is_cuda
    for act in _actions(12, 8):
        obs, reward, term, _trunc, info = venv.unwrapped.step_tensors(torch.as_tensor(act, device="cuda"))
        assert obs.is_cuda and reward.is_cuda and term.is_cuda and info["rejected"].is_cuda
        assert torch.isfinite(obs).all()


def test_a_static_batch_keeps_pools_narrow_across_autoresets(make_venv, tiny):
    """New episodes in some rows (autoreset) truncate those rows only: the other rows' zero logits would tie on the
    whole vocabulary and widen every pool to it."""
    venv = make_venv(8, reward=length_reward, max_new_tokens=3, observation="prefix", forced_steps=True).unwrapped
    venv.reset_tensors(seed=0)
    venv.decoder.cache.dense_fraction = 0.0  # what a GPU's cache does (the default off the CPU)
    ended = 0
    for act in _actions(12, 8):
        _, _, term, _, _ = venv.step_tensors(torch.as_tensor(act))
        ended += int(term.sum())
    assert ended >= 8
    assert venv.state.pool.tokens.shape[1] <= 2 * venv.config.top_k < tiny.vocab_size
