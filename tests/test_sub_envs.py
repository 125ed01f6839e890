"""``call``, ``get_attr`` and ``set_attr`` (proxy_env/vector/sub_envs.py) as Gymnasium's ``VectorEnv`` defines them."""

from __future__ import annotations

import numpy as np
import pytest

from proxy_env.errors import ConfigError


def test_call_and_get_attr_give_one_result_per_env(make_venv):
    venv = make_venv(3).unwrapped
    assert venv.get_attr("num_envs") == (3, 3, 3)
    assert venv.call("num_envs") == (3, 3, 3)  # an attribute is read, as SyncVectorEnv.call does
    assert venv.call("render") == (None, None, None)  # no render_mode: one None per env, like SyncVectorEnv
    venv.scale = lambda x, k=1: x * k  # a method with positional and keyword arguments
    assert venv.call("scale", 2, k=3) == (6, 6, 6)
    with pytest.raises(AttributeError):
        venv.get_attr("no_such_attribute")


def test_call_render_gives_each_envs_frame(make_venv):
    venv = make_venv(2, render_mode="ansi").unwrapped
    venv.reset(seed=0, options={"prompt_index": [0, 1]})
    frames = venv.call("render")
    assert len(frames) == 2 and frames[0].startswith(f"PROMPT: {venv.prompts[0]}")
    assert frames[1].startswith(f"PROMPT: {venv.prompts[1]}")


def test_set_attr_takes_one_value_or_equal_values(make_venv):
    venv = make_venv(3).unwrapped
    venv.set_attr("info_text", True)
    assert venv.info_text is True
    venv.set_attr("info_text", [False, False, False])
    assert venv.info_text is False
    venv.set_attr("marker", (np.zeros(2), np.zeros(2), np.zeros(2)))  # arrays compare element-wise
    np.testing.assert_array_equal(venv.marker, np.zeros(2))
    with pytest.raises(ConfigError, match=r"got 2 values for 3 envs") as err:
        venv.set_attr("info_text", [True, True])
    assert isinstance(err.value, ValueError)  # what SyncVectorEnv raises there
    with pytest.raises(ConfigError, match="different values per env.*pass a single value"):
        venv.set_attr("info_text", [True, False, True])
