"""Seeds as Gymnasium takes them (proxy_env/vector/seeding.py): numpy ints and seeds up to 2**64 give the vector env
and the single env the same episodes, one seed per env in a list, and a clear error for anything else.
"""

from __future__ import annotations

import numpy as np
import pytest

from proxy_env.errors import ConfigError, ConfigTypeError


def _first_obs(venv, seed):
    return venv.reset(seed=seed)[0]


def test_numpy_and_huge_seeds_on_the_vector_env(make_venv, make_env):
    venv = make_venv(2)
    np.testing.assert_array_equal(_first_obs(venv, np.int64(3)), _first_obs(venv, 3))
    big = venv.reset(seed=2**63 - 1)  # env 1 gets 2**63: taken modulo 2**64, as on the single env
    env = make_env()
    for i, seed in enumerate([2**63 - 1, 2**63]):
        obs, info = env.reset(seed=seed)
        assert info["token_id"] == big[1]["token_id"][i]  # same prompt and candidate as env i of the vector env
        np.testing.assert_allclose(obs, big[0][i], rtol=1e-4, atol=1e-5)  # batched vs alone: float tolerance
    np.testing.assert_array_equal(env.reset(seed=np.uint32(5))[0], env.reset(seed=5)[0])
    mixed = venv.reset(seed=[np.int64(7), None])[0]
    np.testing.assert_array_equal(mixed[0], _first_obs(venv, [7, 8])[0])


@pytest.mark.parametrize(
    "seed, error, match",
    [
        ("abc", ConfigTypeError, "seed='abc' must be None, a non-negative int"),
        (-1, ConfigError, "seed=-1 must be >= 0"),
        (1.5, ConfigTypeError, "seed=1.5"),
        (True, ConfigTypeError, "seed=True"),
        ([1, 2, 3], ConfigError, "3 values for num_envs=2"),
        ([1, "x"], ConfigTypeError, r"seed\[1\]='x'"),
    ],
    ids=["str", "negative", "float", "bool", "length", "list-entry"],
)
def test_bad_seeds_are_refused_clearly(make_venv, seed, error, match):
    venv = make_venv(2)
    with pytest.raises(error, match=match):
        venv.reset(seed=seed)
