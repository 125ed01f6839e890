"""Shared fixtures: tests run offline, on CPU, mostly on tiny random models."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import gymnasium as gym
import pytest
import torch

import proxy_env
from proxy_env.engine.tiny import tiny_lm

PROMPTS = ["Hello!", "How are you today?", "Tell me about the weather.", "What is your favourite book?"]


def train_config(cls=None, **kwargs):
    """A backend's config (``SB3Config`` unless ``cls``) from flat keywords: the env's settings go to ``env=EnvConfig(...)``."""
    from dataclasses import fields

    from agents.train import SB3Config
    from proxy_env.config import EnvConfig

    names = {f.name for f in fields(EnvConfig)}
    env = EnvConfig(**{k: v for k, v in kwargs.items() if k in names})
    return (cls or SB3Config)(env=env, **{k: v for k, v in kwargs.items() if k not in names})


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models run fastest on one thread; slow tests that load the real model set their own."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def tiny():
    return tiny_lm("llama")


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory, tiny):
    """The tiny Llama saved as a plain Hugging Face folder (what TRL and `proxy-rlhf finetune` load)."""
    path = tmp_path_factory.mktemp("tiny-llama")
    tiny.model.save_pretrained(path)
    tiny.tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_gpt2():
    return tiny_lm("gpt2")


@pytest.fixture(scope="session")
def real_lm():
    from proxy_env.engine.lm import FrozenLM

    return FrozenLM("default", device="cpu")


@pytest.fixture
def make_venv(tiny):
    def make(num_envs: int = 4, **kwargs):
        kwargs.setdefault("model", tiny)
        kwargs.setdefault("prompts", PROMPTS)
        kwargs.setdefault("max_new_tokens", 8)
        return gym.make_vec(proxy_env.ENV_ID, num_envs=num_envs, vectorization_mode="vector_entry_point", **kwargs)

    return make


@pytest.fixture
def make_env(tiny):
    def make(**kwargs):
        kwargs.setdefault("model", tiny)
        kwargs.setdefault("prompts", PROMPTS)
        kwargs.setdefault("max_new_tokens", 8)
        return gym.make(proxy_env.ENV_ID, **kwargs)

    return make


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
