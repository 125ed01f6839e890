"""The task registry (proxy_env/tasks/__init__.py): every id makes, steps and pays its own reward."""

import gymnasium as gym
import numpy as np
import pytest

import proxy_env
from proxy_env.engine.tiny import tiny_lm
from proxy_env.errors import ConfigError
from proxy_env.prompts import load_prompts
from proxy_env.tasks import PROMPT_SETS, TASKS, get_task, prompt_set, task_reward, task_table


@pytest.mark.parametrize("task", list(TASKS.values()), ids=list(TASKS))
def test_each_task_id_makes_steps_and_pays_its_reward_in_range(task):
    venv = gym.make_vec(
        task.env_id,
        num_envs=2,
        vectorization_mode="vector_entry_point",
        model=tiny_lm(),
        max_new_tokens=3,
        info_text=True,
        autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP,
    )
    try:
        assert venv.unwrapped.prompts == load_prompts(task.prompts)
        venv.reset(seed=0)
        low, high = task.reward_range
        ended = 0
        for _ in range(40):
            _, reward, terminated, _, info = venv.step(np.ones(2, dtype=np.int64))
            for i in np.flatnonzero(terminated):
                ended += 1
                assert low <= reward[i] <= high
                expected = venv.unwrapped.reward_fn([info["prompt"][i]], [info["response"][i]])[0]
                assert reward[i] == pytest.approx(expected, abs=1e-4)  # batched encoding pads: not bit-equal
        assert ended >= 2
    finally:
        venv.close()
    assert gym.spec(task.env_id).kwargs == {"prompts": task.prompts, "reward": task.reward}


def test_the_paper_id_stays_and_sentiment_is_its_task():
    assert gym.spec(proxy_env.ENV_ID).kwargs == {}
    assert get_task("sentiment").env_kwargs == {"prompts": "default", "reward": "vader"}


def test_names_ids_sets_and_rewards_resolve_and_unknown_ones_are_named():
    assert get_task("proxy_env/Instructions-v0") is TASKS["instructions"]
    with pytest.raises(ConfigError, match="Did you mean 'relevance'"):
        get_task("relevanse")
    with pytest.raises(ConfigError, match="not a task prompt set"):
        prompt_set("default")
    with pytest.raises(ConfigError, match="not a task reward"):
        task_reward("vader")
    for name in PROMPT_SETS:
        assert load_prompts(name) == prompt_set(name)
    with pytest.raises(ConfigError, match="instructions-eval"):  # a typo lists the named sets
        load_prompts("instruction-eval")


def test_the_docstring_table_lists_every_task_with_its_range():
    table = task_table()
    assert all(
        f"``{t.env_id}``" in table and f"[{t.reward_range[0]:g}, {t.reward_range[1]:g}]" in table
        for t in TASKS.values()
    )
    assert "proxy_env/Relevance-v0" in proxy_env.vector.vector_env.ProxyRLHFVectorEnv.__doc__
