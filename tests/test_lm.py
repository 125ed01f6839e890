import pytest
import torch

from proxy_env.errors import ConfigError, ModelNotFoundError
from proxy_env.lm import FrozenLM, resolve_dtype, resolve_device


def _random_walk(lm, steps: int = 80, rows: int = 3, seed: int = 0, tol: float = 1e-4):
    """Random commits, discards, row resets and compactions; every output checked against a full forward."""
    g = torch.Generator().manual_seed(seed)
    cache = lm.new_cache(rows)
    seqs = [lm.encode_prompt(p) for p in ["hello there", "What is your name, my friend?", "ok"]][:rows]
    out = cache.reset_rows(torch.ones(rows, dtype=torch.bool), seqs)
    seqs = [list(s) for s in seqs]
    checked = 0

    def check(i, hidden, logits):
        nonlocal checked
        ref = lm.forward_full(seqs[i])
        torch.testing.assert_close(hidden, ref.hidden[-1], atol=tol, rtol=tol)
        torch.testing.assert_close(logits, ref.logits[-1], atol=tol, rtol=tol)
        checked += 1

    for i in range(rows):
        check(i, out.hidden[i], out.logits[i])
    for step in range(steps):
        tokens = torch.randint(3, 1000, (rows,), generator=g)
        active = torch.rand(rows, generator=g) < 0.8
        if not active.any():
            continue
        out = cache.step(tokens, active)
        keep = active & (torch.rand(rows, generator=g) < 0.6)
        for i in range(rows):
            if active[i]:
                seqs[i].append(int(tokens[i]))
                check(i, out.hidden[i], out.logits[i])
                if not keep[i]:
                    seqs[i].pop()
        cache.commit(keep)
        cache.discard(active & ~keep)
        if step % 13 == 12:
            cache.compact(force=True)
        if step % 17 == 16:
            row = step % rows
            fresh = lm.encode_prompt(f"a brand new prompt number {step} with a few more words")
            seqs[row] = list(fresh)
            o = cache.reset_rows(torch.arange(rows) == row, [fresh])
            check(row, o.hidden[0], o.logits[0])
    return checked, cache, seqs


@pytest.mark.parametrize("arch", ["llama", "gpt2"], ids=["llama-rope", "gpt2-absolute"])
def test_cached_steps_match_full_forward(arch, tiny, tiny_gpt2):
    lm = tiny if arch == "llama" else tiny_gpt2
    checked, cache, seqs = _random_walk(lm)
    assert checked > 100


@pytest.mark.slow
def test_cached_steps_match_full_forward_default_model(real_lm):
    checked, _, _ = _random_walk(real_lm, steps=30)
    assert checked > 40


def test_cache_stays_bounded(tiny):
    cache = tiny.new_cache(4)
    prompt = tiny.encode_prompt("hi")
    cache.reset_rows(torch.ones(4, dtype=torch.bool), [prompt] * 4)
    lengths = [len(prompt)] * 4
    for step in range(600):
        active = torch.ones(4, dtype=torch.bool)
        cache.step(torch.full((4,), 42), active)
        keep = torch.tensor([step % 3 == 0, step % 2 == 0, False, True])
        cache.commit(keep)
        cache.discard(~keep)
        lengths = [n + int(k) for n, k in zip(lengths, keep)]
        for row in range(4):
            if lengths[row] > 40:  # finished: refill the row with a new prompt
                cache.reset_rows(torch.arange(4) == row, [prompt])
                lengths[row] = len(prompt)

        assert cache.length <= 2 * 42 + 17  # compaction keeps it under twice the longest live row (<= 41 + pending)
    assert cache.length < 120  # 600 steps taken, far fewer columns held


def test_errors_name_the_argument():
    with pytest.raises(ModelNotFoundError, match="no such folder"):
        FrozenLM("./does/not/exist")
    with pytest.raises(ModelNotFoundError, match="nothing is downloaded"):
        FrozenLM("someone/not-a-cached-model")
    with pytest.raises(ConfigError, match="dtype='float33'.*Did you mean 'float32'"):
        resolve_dtype("float33", torch.device("cpu"))
    with pytest.raises(ConfigError, match="device='gpu'"):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")


def test_properties(tiny):
    assert tiny.hidden_size == 64 and tiny.num_layers == 2 and tiny.vocab_size == 49152
    assert 2 in tiny.eos_token_ids
    assert tiny.use_chat_template and "<|im_start|>assistant" in tiny.format_prompt("hi")
    assert 0 < tiny.num_parameters < 5_000_000


def test_forward_padded_matches_forward_full_per_row(tiny):
    seqs = [tiny.encode_prompt(p) for p in ["hi", "What is your name, my friend?", "ok then"]]
    out = tiny.forward_padded(seqs, hidden_layer=-1)
    width = max(len(s) for s in seqs)
    assert out.logits.shape == (3, width, tiny.vocab_size) and out.hidden.shape == (3, width, tiny.hidden_size)
    assert out.logits.dtype == torch.float32 and out.mask.sum(1).tolist() == [len(s) for s in seqs]
    for row, s in enumerate(seqs):
        ref = tiny.forward_full(s)
        assert out.ids[row, width - len(s) :].tolist() == s
        torch.testing.assert_close(out.logits[row, width - len(s) :], ref.logits, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(out.hidden[row, width - len(s) :], ref.hidden, atol=1e-4, rtol=1e-4)
    last = tiny.forward_padded(seqs, last_only=True)
    assert last.hidden is None and last.logits.shape == (3, 1, tiny.vocab_size)
    torch.testing.assert_close(last.logits[:, 0], out.logits[:, -1], atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_default_model_is_smollm2(real_lm):
    assert real_lm.num_layers == 30 and real_lm.hidden_size == 576 and real_lm.vocab_size == 49152
    assert 134_000_000 < real_lm.num_parameters < 135_000_000
    assert real_lm.eos_token_ids == [2]
