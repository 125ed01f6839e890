"""Shared fixtures and helpers (used by several test files): tests run offline, on CPU, mostly on tiny random models."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import gymnasium as gym
import pytest
import torch

import proxy_env
from feedback.records import PreferencePair
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


def tilt_config(**kwargs):
    """A ``TiltConfig`` on the tiny model: 64 decisions of 4 envs, 6-token responses, pools of 6, β 0.5."""
    from agents.tilt.backend import TiltConfig

    base = dict(
        model="tiny",
        prompts=PROMPTS,
        max_new_tokens=6,
        num_envs=4,
        total_timesteps=64,
        seed=0,
        policy_device="cpu",
        observation="prefix",
        top_k=6,
        top_p=1.0,
        kl_coef=0.5,
    )
    return train_config(TiltConfig, **{**base, **kwargs})


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


# ---------------------------------------------------------------------------------- training runs and checkpoints
def _zero(prompts, responses):
    """A reward that ignores the text: for runs whose learning does not matter."""
    return [0.0] * len(responses)


def _cfg(**kwargs):
    """The smallest SB3 run: two envs, one 64-decision rollout of the tiny model, on the CPU, no evaluation."""
    base = dict(
        model="tiny",
        prompts=PROMPTS,
        max_new_tokens=4,
        num_envs=2,
        total_timesteps=64,
        n_steps=32,
        batch_size=64,
        seed=0,
        policy_device="cpu",
        eval_freq=0,
    )
    return train_config(**{**base, **kwargs})


def _no_model(monkeypatch):
    """Fail the test if a model gets loaded: the check under test must come first."""
    import agents.train as train_module

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the check")

    monkeypatch.setattr(train_module, "resolve_lm", refuse)


@pytest.fixture(scope="session")
def saved(tmp_path_factory) -> Path:
    """A checkpoint folder of a :func:`_cfg` run; tests that change it work on a copy."""
    from agents.train import train

    path = tmp_path_factory.mktemp("ckpt") / "proxy"
    result = train(_cfg(save_dir=str(path)), reward=_zero)
    assert result.checkpoint == path
    return path


def _truncate(file: Path) -> None:
    """Keep the first half of ``file``: what a copy cut short or a full disk leaves."""
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])


# ---------------------------------------------------------------------------------- the command line
def _cli(capsys, *argv: str) -> tuple[int, str]:
    """Run ``proxy-rlhf ARGV`` in this process: its exit code and what it wrote to stderr."""
    from agents.cli import main

    code = main(list(argv))
    err = capsys.readouterr().err
    return code, err


# ---------------------------------------------------------------------------------- preferences and reward models
def length_reward(prompts, responses):
    """The response's length in characters: a reward whose preferences are easy to predict."""
    return [float(len(r)) for r in responses]


class ScriptedLM:
    """A judge LM stand-in: the real tokenizer, canned replies in ``generate``."""

    name = "scripted"

    def __init__(self, tokenizer, replies):
        self.tokenizer, self.replies, self.seen = tokenizer, list(replies), []

    def generate(self, prompts, *, max_new_tokens, **kwargs):
        self.seen.extend(prompts)
        return [self.replies[(len(self.seen) - len(prompts) + i) % len(self.replies)] for i in range(len(prompts))]


GOOD = ["great", "wonderful", "happy", "lovely", "excellent", "nice"]
BAD = ["awful", "terrible", "sad", "horrible", "bad", "nasty"]


class Toy:
    """A fixed random embedding per word: a separable toy set when labels depend on the word."""

    name, dim = "toy", 8

    def __init__(self):
        gen = torch.Generator().manual_seed(0)
        self.table = {w: torch.randn(self.dim, generator=gen) for w in GOOD + BAD}

    def spec(self):
        return {"type": "toy"}

    def embed(self, prompts, responses):
        return torch.stack([self.table[r.split()[0]] for r in responses])


def _toy_pairs(n=120):
    return [
        PreferencePair(f"q{i}", f"{GOOD[i % 6]} day", f"{BAD[(i * 5) % 6]} day", "toy", 0.1 + (i % 10) / 10)
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A one-layer random BERT with MiniLM's tokenizer, saved as a folder (a stand-in sentence encoder)."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from proxy_env.rewards.encoders import minilm_dir

    folder = tmp_path_factory.mktemp("tiny_bert")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    BertModel(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm_dir()).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def cuda_lm():
    """gpu tests: the tiny Llama on CUDA, ``float32`` (exact comparisons; TF32 off) or ``bfloat16`` (the GPU's dtype)."""
    from proxy_env.engine.lm import FrozenLM
    from proxy_env.engine.tiny import tiny_model

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    made: dict[str, FrozenLM] = {}

    def make(dtype: str = "float32") -> FrozenLM:
        if dtype not in made:
            made[dtype] = FrozenLM(tiny_model("llama"), tiny_lm().tokenizer, device="cuda", dtype=dtype)
        return made[dtype]

    return make


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
