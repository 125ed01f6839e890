"""Tiny random-weight models with the default tokenizer, for fast unit tests and examples only.

They exercise every code path (Llama with RoPE, GPT-2 with absolute positions) in milliseconds;
they say nothing about alignment quality and are never used for a claim.
"""

from __future__ import annotations

from typing import Literal

import torch

from proxy_env.engine.lm import FrozenLM

ARCHS = ("llama", "gpt2")


def tiny_model(
    arch: Literal["llama", "gpt2"] = "llama", *, vocab_size: int = 49152, seed: int = 0, sharpness: float = 10.0
) -> torch.nn.Module:
    """A random causal LM: hidden 64, 2 layers, 4 heads (2 KV heads for Llama).

    ``sharpness`` scales the final norm so that next-token distributions are peaked like a trained
    LM's (random init alone gives near-uniform ones, where every top-p pool is full).
    """
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    model: torch.nn.Module
    norm_weight: torch.Tensor  # the final norm's scale
    if arch == "llama":
        llama_config = LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=1024,
            tie_word_embeddings=True,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=2,
        )
        llama = LlamaForCausalLM(llama_config)
        model, norm_weight = llama, llama.model.norm.weight
    elif arch == "gpt2":
        gpt2_config = GPT2Config(
            vocab_size=vocab_size,
            n_embd=64,
            n_layer=2,
            n_head=4,
            n_positions=1024,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=2,
        )
        gpt2 = GPT2LMHeadModel(gpt2_config)
        model, norm_weight = gpt2, gpt2.transformer.ln_f.weight
    else:
        raise ValueError(f"arch={arch!r}; expected one of {ARCHS}")
    with torch.no_grad():
        norm_weight.mul_(sharpness)
    return model.eval()


def tiny_lm(
    arch: Literal["llama", "gpt2"] = "llama", *, seed: int = 0, sharpness: float = 10.0, device: str = "cpu"
) -> FrozenLM:
    """A :class:`FrozenLM` over :func:`tiny_model` with the default (SmolLM2) tokenizer."""
    from transformers import AutoTokenizer

    from proxy_env.assets import default_tokenizer_dir

    tokenizer = AutoTokenizer.from_pretrained(default_tokenizer_dir())
    return FrozenLM(tiny_model(arch, seed=seed, sharpness=sharpness), tokenizer, device=device, dtype="float32")


def tiny_word_lm(vocab_size: int = 512, *, seed: int = 0, sharpness: float = 3.0, device: str = "cpu") -> FrozenLM:
    """A :class:`FrozenLM` over a small-vocabulary :func:`tiny_model` with a word-level tokenizer (``w0 w1 ...``).

    Sampling over a 512-token vocabulary costs ~1% of the default 49,152: what statistical tests
    that draw thousands of tokens through ``generate`` need. Ids 0-3 are ``<unk> <s> </s> <pad>``
    (``</s>``, id 2, is EOS and pad, as in :func:`tiny_model`); ``"w7"`` is id ``7 + 4``. No chat template.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<unk>", "<s>", "</s>", "<pad>"] + [f"w{i}" for i in range(vocab_size - 4)]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="</s>"
    )
    model = tiny_model("llama", vocab_size=vocab_size, seed=seed, sharpness=sharpness)
    return FrozenLM(model, tokenizer, device=device, dtype="float32")
