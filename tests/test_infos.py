"""The env's infos (proxy_env/vector/infos.py): Gymnasium's ``final_obs`` layout, numeric by default, text on request."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from proxy_env.errors import ConfigTypeError
from proxy_env.vector.infos import END_KEYS, STEP_KEYS, TEXT_END_KEYS, TEXT_STEP_KEYS

# every episode is one decision: a two-token pool, so a rejection commits the other token
ONE_DECISION = dict(prompts=["Hello!"], max_new_tokens=1, top_k=2, top_p=1.0, temperature=100.0)


def _check_final_obs(venv, info, ended):
    final = info["final_obs"]
    assert final.shape == (venv.num_envs,) and final.dtype == object
    np.testing.assert_array_equal(info["_final_obs"], ended)
    for i in range(venv.num_envs):
        if ended[i]:
            assert final[i].shape == venv.single_observation_space.shape and final[i].dtype == np.float32
            assert torch.as_tensor(final[i]).shape == venv.single_observation_space.shape  # clients make it a tensor
        else:
            assert final[i] is None


def test_final_obs_when_every_env_ends(make_venv):
    venv = make_venv(4, **ONE_DECISION)
    venv.reset(seed=0)
    _, _, terminated, truncated, info = venv.step(np.ones(4, dtype=np.int64))
    ended = terminated | truncated
    assert ended.all()
    _check_final_obs(venv, info, ended)


def test_final_obs_when_some_envs_end(make_venv):
    venv = make_venv(4, **{**ONE_DECISION, "top_k": 3})  # with three candidates one rejection does not end the episode
    venv.reset(seed=0)
    _, _, terminated, truncated, info = venv.step(np.array([1, 0, 1, 0]))
    ended = terminated | truncated
    np.testing.assert_array_equal(ended, [True, False, True, False])
    _check_final_obs(venv, info, ended)


def test_infos_are_numeric_by_default(make_venv):
    venv = make_venv(4, max_new_tokens=3, autoreset_mode="next_step")
    _, info = venv.reset(seed=0)
    assert set(info) == set(STEP_KEYS)
    seen_end = False
    for _ in range(12):
        _, _, terminated, truncated, info = venv.step(np.ones(4, dtype=np.int64))
        assert all(v.dtype.kind in "biuf" for v in info.values()), {k: v.dtype for k, v in info.items()}
        if (terminated | truncated).any():
            seen_end = True
            assert set(END_KEYS) <= set(info) and not set(TEXT_END_KEYS) & set(info)
            ended = terminated | truncated
            np.testing.assert_array_equal(info["_response_length"], ended)
    assert seen_end


def test_info_text_adds_the_same_text_as_before(make_venv, tiny):
    plain, text = (make_venv(4, max_new_tokens=3, info_text=flag) for flag in (False, True))
    (_, info_p), (_, info_t) = plain.reset(seed=1), text.reset(seed=1)
    assert set(info_t) - set(info_p) == set(TEXT_STEP_KEYS)
    assert list(info_t["token"]) == [tiny.tokenizer.decode([t]) for t in info_t["token_id"]]
    ended_any = False
    for _ in range(10):
        *_, term, trunc, info_p = plain.step(np.ones(4, dtype=np.int64))
        *_, _, _, info_t = text.step(np.ones(4, dtype=np.int64))
        for key in info_p.keys() - {"final_obs", "final_info"}:
            np.testing.assert_array_equal(info_p[key], info_t[key])  # the numeric part is unchanged
        if (term | trunc).any():
            ended_any = True
            final = info_t["final_info"]
            assert set(final) - set(info_p["final_info"]) == set(TEXT_STEP_KEYS + TEXT_END_KEYS) | {
                f"_{k}" for k in TEXT_END_KEYS
            }
            for i in np.flatnonzero(term | trunc):
                ids = final["response_ids"][i]
                assert final["response_length"][i] == len(ids) and final["response"][i] == tiny.decode(ids)
                assert final["prompt"][i] in text.unwrapped.prompts
    assert ended_any


def test_no_per_step_decode_unless_asked(make_venv, tiny, monkeypatch):
    calls = []
    original = tiny.tokenizer.batch_decode
    monkeypatch.setattr(tiny.tokenizer, "batch_decode", lambda *a, **k: calls.append(1) or original(*a, **k))
    counts = {}
    for flag in (False, True):
        calls.clear()
        venv = make_venv(2, max_new_tokens=8, info_text=flag)
        venv.reset(seed=0)
        for _ in range(5):
            venv.step(np.ones(2, dtype=np.int64))
        counts[flag] = len(calls)
    assert counts == {False: 0, True: counts[True]} and counts[True] >= 6  # one per reset and step when asked


def test_info_text_must_be_a_bool(make_venv):
    with pytest.raises(ConfigTypeError, match="info_text='yes' must be a bool"):
        make_venv(2, info_text="yes")
