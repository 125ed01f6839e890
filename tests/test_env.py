import warnings

import gymnasium as gym
import numpy as np
import pytest

import proxy_env

# check_env warns about unbounded Box spaces: hidden states have no natural bounds.
ALLOWED_WARNINGS = ("lower bound", "upper bound", "infinite", "-inf", "inf")


def _check_with_allow_list(checker, env):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        checker(env)
    unexpected = [str(w.message) for w in caught if not any(a in str(w.message) for a in ALLOWED_WARNINGS)]
    assert not unexpected, unexpected


def test_gymnasium_check_env(make_env):
    from gymnasium.utils.env_checker import check_env

    _check_with_allow_list(lambda e: check_env(e.unwrapped, skip_render_check=True), make_env(max_new_tokens=4))


def test_sb3_check_env(make_env):
    from stable_baselines3.common.env_checker import check_env

    _check_with_allow_list(lambda e: check_env(e.unwrapped, warn=True), make_env(max_new_tokens=4))


def test_single_env_is_a_view(make_env):
    env = make_env(info_text=True)
    assert env.unwrapped.vector_env.num_envs == 1
    obs, info = env.reset(seed=0)
    assert obs.dtype == np.float32 and obs.shape == env.observation_space.shape
    assert isinstance(info["token"], str) and isinstance(info["position"], int)


@pytest.mark.slow
def test_default_make_works_offline():
    env = gym.make(proxy_env.ENV_ID, max_new_tokens=4, info_text=True)
    obs, info = env.reset(seed=0)
    assert obs.shape == (576,)
    done = False
    while not done:
        obs, _reward, term, trunc, info = env.step(proxy_env.Action.ACCEPT)
        done = term or trunc
    assert -1.0 <= info["reward_raw"] <= 1.0 and info["prompt"] in proxy_env.prompts.load_prompts("default")


def test_single_env_warns_that_it_ignores_autoreset_mode(tiny):
    with pytest.warns(UserWarning, match=r"autoreset_mode='next_step' is ignored: the single env does not reset"):
        env = gym.make(proxy_env.ENV_ID, model=tiny, prompts=["Hi!"], max_new_tokens=2, autoreset_mode="next_step")
    env.close()


def test_single_env_misuse_gets_single_env_errors(make_env):
    from proxy_env.errors import ActionError, StateError

    env = make_env(max_new_tokens=1)
    env.reset(seed=0)
    with pytest.raises(ActionError, match=r"the single env takes one action .* got 2 values"):
        env.step([1, 0])
    _, _, terminated, truncated, _ = env.step(1)
    assert terminated or truncated  # one token is the whole budget
    with pytest.raises(StateError, match=r"the episode ended: call reset\(\) before step\(\)"):
        env.step(1)
    env.reset()
    env.step(1)
    env.close()
    with pytest.raises(StateError, match=r"step\(\) after close\(\)"):
        env.step(1)
