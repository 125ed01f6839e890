"""Checks before anything is allocated (proxy_env/guards.py): the response budget and every prompt fit the model's
positions, the env fits in memory, and a FrozenLM passed in is used as it is.
"""

from __future__ import annotations

import pytest

from proxy_env.errors import ConfigError


@pytest.mark.parametrize("tokens", [2000, 10**9, 10**12])
def test_max_new_tokens_beyond_the_models_positions(make_venv, tokens):
    import time

    start = time.perf_counter()
    with pytest.raises(
        ConfigError, match=rf"max_new_tokens={tokens} does not fit the 1024 positions.*pass max_new_tokens <= \d+"
    ):
        make_venv(1, max_new_tokens=tokens)
    assert time.perf_counter() - start < 5  # refused before allocating anything


def test_prompt_longer_than_the_models_positions(make_venv, tiny_gpt2):
    with pytest.raises(ConfigError, match=r"prompts\[1\] \('hello world.*is \d+ tokens.*has 1024.*Shorten it"):
        make_venv(1, model=tiny_gpt2, prompts=["Hi", "hello world " * 1500])


def test_memory_estimate_before_allocating(make_venv, monkeypatch):
    from proxy_env import guards

    monkeypatch.setattr(guards, "available_bytes", lambda device: 1 << 20)
    with pytest.raises(
        ConfigError, match=r"num_envs=64 x max_new_tokens=900 need ~.* GiB.*lower max_new_tokens or num_envs"
    ):
        make_venv(64, max_new_tokens=900)


def test_device_and_dtype_with_a_frozenlm_object(make_venv):
    with pytest.raises(ConfigError, match=r"dtype='bfloat16' was passed with a FrozenLM in torch.float32.*not cast"):
        make_venv(1, dtype="bfloat16")
    make_venv(1, dtype="float32", device="cpu").close()  # agreeing values are fine


def test_a_lone_surrogate_in_a_prompt_is_named(make_venv):
    with pytest.raises(ConfigError, match=r"prompts\[0\] .* holds '\\udcff' at character 3, which is not valid text"):
        make_venv(1, prompts=["hi \udcff there"], max_new_tokens=4)


def test_a_prompt_that_alone_fills_the_model_gets_a_remedy_that_can_be_followed(make_venv, tiny_gpt2):
    """The remedy used to read 'max_new_tokens <= -839' for a prompt longer than all the positions."""
    with pytest.raises(ConfigError, match=r"Shorten it to under \d+ tokens: alone it leaves no room") as info:
        make_venv(1, model=tiny_gpt2, prompts=["word " * 1500], max_new_tokens=4)
    assert "<= -" not in str(info.value)
