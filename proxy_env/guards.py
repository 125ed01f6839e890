"""Checks the environment makes before it allocates anything: a shared LLM's device and dtype, the token
budget against the model's positions, and a memory estimate of its buffers.

>>> from proxy_env.engine.tiny import tiny_lm
>>> lm = tiny_lm()
>>> max_positions(lm)
1024
>>> check_budget(lm, ["Hi!"], max_new_tokens=2000, num_envs=1)
Traceback (most recent call last):
...
proxy_env.errors.ConfigError: max_new_tokens=2000 does not fit the 1024 positions of model 'LlamaForCausalLM' (prompt included); pass max_new_tokens <= 993.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from proxy_env.errors import ConfigError

_POSITION_FIELDS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


def gib(n: float) -> str:
    return f"{n / 2**30:.1f}"


def max_positions(lm: Any) -> int | None:
    """The number of positions the model can attend to (``max_position_embeddings``), or None when it states none."""
    for name in _POSITION_FIELDS:
        value = getattr(lm.config, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def available_bytes(device: torch.device | None) -> int | None:
    """Free memory on ``device`` (CUDA: ``mem_get_info``; CPU: MemAvailable), or None when it cannot be told."""
    if device is not None and device.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except (RuntimeError, AssertionError):
            return None
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def check_shared_lm(lm: Any, *, device: Any, dtype: Any) -> None:
    """``device=``/``dtype=`` given together with a ``FrozenLM`` object must describe it: it is shared, not moved or cast."""
    from proxy_env.engine.lm import resolve_device, resolve_dtype

    if device is not None:
        wanted = resolve_device(device)
        same = wanted.type == lm.device.type and (
            wanted.index is None or lm.device.index is None or wanted.index == lm.device.index
        )
        if not same:
            raise ConfigError(
                f"device={str(device)!r} was passed with a FrozenLM on {lm.device}; a FrozenLM is used as it is (shared, "
                f"not moved): pass device=None, or build it with FrozenLM(..., device={str(device)!r})."
            )
    if dtype is not None and dtype != "auto" and resolve_dtype(dtype, lm.device) != lm.dtype:
        raise ConfigError(
            f"dtype={dtype!r} was passed with a FrozenLM in {lm.dtype}; a FrozenLM is used as it is (shared, not cast): "
            f"pass dtype=None, or build it with FrozenLM(..., dtype={dtype!r})."
        )


def check_budget(lm: Any, prompts: Sequence[str], *, max_new_tokens: int, num_envs: int) -> None:
    """Every prompt plus ``max_new_tokens`` fits the model's positions, and the env's buffers fit in memory.

    Only prompts long enough to matter are tokenized (a token holds at least half a byte of text
    under the tokenizers we know), so short prompt sets cost nothing here.
    """
    limit = max_positions(lm)
    name = getattr(lm, "name", "?")
    longest = 0
    if limit is not None:
        overhead = len(lm.encode_prompt("a"))  # chat template and special tokens around a one-token prompt
        if max_new_tokens + overhead > limit:
            raise ConfigError(
                f"max_new_tokens={max_new_tokens} does not fit the {limit} positions of model {name!r} (prompt included); "
                f"pass max_new_tokens <= {limit - overhead}."
            )
        room = limit - max_new_tokens
        for i, prompt in enumerate(prompts):
            try:
                size = len(prompt.encode("utf-8"))
            except UnicodeEncodeError as exc:  # a lone surrogate (e.g. from a mis-decoded file) has no UTF-8 form
                raise ConfigError(
                    f"prompts[{i}] ({prompt[:40]!r}) holds {prompt[exc.start : exc.end]!r} at character {exc.start}, "
                    "which is not valid text (a lone surrogate); fix the prompt or the file it came from."
                ) from exc
            if 2 * size + overhead <= room:
                continue
            n = len(lm.encode_prompt(prompt))
            longest = max(longest, n)
            if n > room:
                raise ConfigError(
                    f"prompts[{i}] ({prompt[:40]!r}...) is {n} tokens: with max_new_tokens={max_new_tokens} it needs "
                    f"{n + max_new_tokens} positions, but model {name!r} has {limit}. "
                    + (
                        f"Shorten it, or pass max_new_tokens <= {limit - n}."
                        if limit - n >= 1
                        else f"Shorten it to under {limit - overhead} tokens: alone it leaves no room for a response."
                    )
                )
    need = env_bytes(lm, num_envs=num_envs, tokens=max_new_tokens + max(longest, 64))
    free = available_bytes(lm.device)
    if free is not None and need > free:
        raise ConfigError(
            f"num_envs={num_envs} x max_new_tokens={max_new_tokens} need ~{gib(need)} GiB (KV cache and buffers of model "
            f"{name!r}) but {gib(free)} GiB are free on {lm.device}; lower max_new_tokens or num_envs."
        )


def env_bytes(lm: Any, *, num_envs: int, tokens: int) -> int:
    """A lower bound of the env's memory at ``tokens`` positions per row: the KV cache, the response and mask buffers."""
    cfg = lm.config
    heads = int(getattr(cfg, "num_attention_heads", 1) or 1)
    kv_heads = int(getattr(cfg, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(cfg, "head_dim", None) or lm.hidden_size // heads)
    element = torch.tensor([], dtype=lm.dtype).element_size()
    kv = 2 * lm.num_layers * kv_heads * head_dim * element  # keys and values, per token
    return num_envs * tokens * (kv + 8 + 8)  # + the long response buffer and the long attention mask
