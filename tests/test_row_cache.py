"""The per-row KV cache: every cached step matches a full forward; compaction bounds its length."""

import itertools

import pytest
import torch


def _random_walk(
    lm, steps: int = 80, rows: int = 3, seed: int = 0, tol: float = 1e-4, dense_fraction: float | None = None
):
    """Random commits, discards, row resets and compactions; every output checked against a full forward."""
    g = torch.Generator().manual_seed(seed)
    cache = lm.new_cache(rows)
    if dense_fraction is not None:
        cache.dense_fraction = dense_fraction
    seqs = [lm.encode_prompt(p) for p in ["hello there", "What is your name, my friend?", "ok"]][:rows]
    out = cache.reset_rows(torch.ones(rows, dtype=torch.bool, device=lm.device), seqs)
    seqs = [list(s) for s in seqs]
    checked = 0

    def check(i, hidden, logits):
        nonlocal checked
        ref = lm.forward_full(seqs[i])
        torch.testing.assert_close(hidden.float(), ref.hidden[-1].float(), atol=tol, rtol=tol)
        torch.testing.assert_close(logits.float(), ref.logits[-1].float(), atol=tol, rtol=tol)
        checked += 1

    for i in range(rows):
        check(i, out.hidden[i], out.logits[i])
    for step in range(steps):
        tokens = torch.randint(3, 1000, (rows,), generator=g).to(lm.device)
        active = (torch.rand(rows, generator=g) < 0.8).to(lm.device)
        if not active.any():
            continue
        out = cache.step(tokens, active)
        keep = active & (torch.rand(rows, generator=g) < 0.6).to(lm.device)
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
            o = cache.reset_rows(torch.arange(rows, device=lm.device) == row, [fresh])
            check(row, o.hidden[0], o.logits[0])
    return checked, cache, seqs


@pytest.mark.gpu
@pytest.mark.parametrize("dense_fraction", [0.0, 1.0], ids=["masked-full-batch", "sub-batch"])
def test_cached_steps_match_full_forward_on_cuda_in_bf16(cuda_lm, dense_fraction):
    """In bfloat16 a cached step and a full forward round differently; they agree within 5e-2 (bf16 keeps 8 bits)."""
    checked, _, _ = _random_walk(cuda_lm("bfloat16"), steps=40, tol=5e-2, dense_fraction=dense_fraction)
    assert checked > 40


@pytest.mark.parametrize("dense_fraction", [0.0, 1.0], ids=["masked-full-batch", "sub-batch"])
@pytest.mark.parametrize("arch", ["llama", "gpt2"], ids=["llama-rope", "gpt2-absolute"])
def test_cached_steps_match_full_forward(arch, dense_fraction, tiny, tiny_gpt2, monkeypatch):
    """Both ways of stepping some of the rows: all rows with the inactive ones masked, or a gathered sub-batch."""
    from proxy_env.engine.row_cache import RowCache

    lm = tiny if arch == "llama" else tiny_gpt2
    subsets = []
    step_subset = RowCache._step_subset
    monkeypatch.setattr(RowCache, "_step_subset", lambda self, *a: subsets.append(1) or step_subset(self, *a))
    checked, cache, _seqs = _random_walk(lm, dense_fraction=dense_fraction)
    assert checked > 100
    assert (len(subsets) > 20) if dense_fraction == 1.0 else not subsets
    assert cache.prefix_tokens_reused > 0  # the walk's prefills reused the chat template's head


@pytest.mark.parametrize("arch", ["llama", "gpt2"], ids=["llama-rope", "gpt2-absolute"])
def test_prefill_reuses_the_template_head_only_where_every_prompt_starts_with_it(arch, tiny, tiny_gpt2):
    lm = tiny if arch == "llama" else tiny_gpt2
    head = lm.template_prefix()
    assert len(head) > 10 and lm.tokenizer.decode(head).startswith("<|im_start|>system")
    templated = [lm.encode_prompt(p) for p in ["hi", "What is your name, my friend and neighbour?"]]
    raw = lm.tokenizer("just some words", add_special_tokens=False)["input_ids"]  # no template head
    for prompts, reused in [(templated, 2 * len(head)), (templated[:1] + [raw], 0), (templated[:1] + [head], 0)]:
        cache = lm.new_cache(2)
        out = cache.reset_rows(torch.ones(2, dtype=torch.bool), prompts)
        assert cache.prefix_tokens_reused == reused
        for i, prompt in enumerate(prompts):
            ref = lm.forward_full(prompt)
            torch.testing.assert_close(out.hidden[i], ref.hidden[-1], atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(out.logits[i], ref.logits[-1], atol=1e-4, rtol=1e-4)
        step = cache.step(
            torch.tensor([5, 6]), torch.ones(2, dtype=torch.bool)
        )  # the next token attends to the reused head
        for i, prompt in enumerate(prompts):
            torch.testing.assert_close(
                step.logits[i], lm.forward_full(prompt + [5 + i]).logits[-1], atol=1e-4, rtol=1e-4
            )


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


# every module of the tiny Llama named, as a model spread over GPUs would be (here all on the CPU)
TINY_DEVICE_MAP = {
    "model.embed_tokens": "cpu",
    "model.layers.0": "cpu",
    "model.layers.1": "cpu",
    "model.norm": "cpu",
    "model.rotary_emb": "cpu",
    "lm_head": "cpu",
}


def test_device_map_cache_keeps_each_layer_on_its_device_and_matches(tiny):
    """FrozenLM(device_map=...) runs through accelerate's hooks; the cache gives each layer buffers on its layer's device.

    On one CPU this checks the bookkeeping and that outputs equal the unmapped model's; that indices
    really cross devices (cuda:0 -> cuda:1) needs a machine with two GPUs.
    """
    from proxy_env.engine.lm import FrozenLM
    from proxy_env.engine.tiny import tiny_model

    spread = FrozenLM(tiny_model("llama"), tiny.tokenizer, device_map=TINY_DEVICE_MAP, dtype="float32")
    assert spread.device_map == TINY_DEVICE_MAP and spread.layer_devices == [torch.device("cpu")] * 2
    assert all(hasattr(layer, "_hf_hook") for layer in spread.model.model.layers)  # dispatched, not moved
    checked, cache, _ = _random_walk(spread)
    assert checked > 100
    assert [layer.kbuf.device for layer in cache.layers] == spread.layer_devices
    assert [layer.vbuf.device for layer in cache.layers] == spread.layer_devices
    # the same weights give the same outputs, row for row, with and without the map
    seqs = [tiny.encode_prompt(p) for p in ["hi", "What is your name?"]]
    rows = torch.ones(2, dtype=torch.bool)
    a, b = tiny.new_cache(2).reset_rows(rows, seqs), spread.new_cache(2).reset_rows(rows, seqs)
    torch.testing.assert_close(a.logits, b.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.hidden, b.hidden, atol=1e-5, rtol=1e-5)


def test_a_static_batch_steps_with_fixed_shapes_and_addresses(tiny, monkeypatch):
    """What CUDA graphs need: every step of a static batch feeds the same shapes (all rows, the whole buffer under a
    4-D mask) and writes into the same buffers, until a buffer must grow; and its outputs match a full forward."""
    from proxy_env.engine.row_cache import RowCache

    shapes, addresses = [], []
    forward = RowCache._forward

    def spy(self, input_ids, mask, position_ids, cache, model=None):
        shapes.append((tuple(input_ids.shape), tuple(mask.shape), tuple(position_ids.shape)))
        return forward(self, input_ids, mask, position_ids, cache, model)

    monkeypatch.setattr(RowCache, "_forward", spy)
    cache = tiny.new_cache(4)
    cache.dense_fraction = 0.0
    assert cache.static_batch
    prompts = [tiny.encode_prompt(p) for p in ["hello there", "What is your name?", "ok", "Tell me a story."]]
    cache.reset_rows(torch.ones(4, dtype=torch.bool), prompts)
    shapes.clear()
    g = torch.Generator().manual_seed(1)
    grown = 0
    for _ in range(120):
        capacity = cache.layers[0].capacity
        active = torch.rand(4, generator=g) < 0.7
        cache.step(torch.randint(3, 1000, (4,), generator=g), active)
        keep = active & (torch.rand(4, generator=g) < 0.5)
        cache.commit(keep)
        cache.discard(active & ~keep)
        grown += cache.layers[0].capacity != capacity
        addresses.append((cache.layers[0].kbuf.data_ptr(), cache.layers[0].capacity))
        assert tuple(cache.layers[0].keys.shape[2:3]) == (cache.layers[0].capacity,)  # attention reads the whole buffer
    assert len(set(shapes)) == 1 + grown and grown <= 2
    moved = sum(a != b for a, b in itertools.pairwise(addresses))  # compactions and growths re-allocate
    assert moved <= 8, moved


def test_a_compiled_static_step_is_one_graph_and_decodes_as_the_model(tiny, monkeypatch):
    """compile_decode_step: the fixed-shape step compiles to a single graph with no break (what CUDA graphs capture on
    a GPU; the CPU runs torch.compile's default mode), and its outputs are the eager model's."""
    from torch._dynamo.utils import counters

    from proxy_env.engine.row_cache import compile_decode_step
    from proxy_env.engine.tiny import tiny_lm

    torch._dynamo.reset()
    counters.clear()
    compiled_lm = tiny_lm()  # a model of its own: the compiled step is attached to it
    compile_decode_step(compiled_lm, mode="default")
    outputs = []
    for lm in (tiny, compiled_lm):
        cache = lm.new_cache(4)
        cache.dense_fraction = 0.0
        prompts = [lm.encode_prompt(p) for p in ["hello there", "What is your name?", "ok", "Tell me a story."]]
        cache.reset_rows(torch.ones(4, dtype=torch.bool), prompts)
        g = torch.Generator().manual_seed(1)
        logits = []
        for _ in range(12):
            active = torch.rand(4, generator=g) < 0.7
            out = cache.step(torch.randint(3, 1000, (4,), generator=g), active)
            logits.append(torch.where(active[:, None], out.logits, 0.0))
            keep = active & (torch.rand(4, generator=g) < 0.5)
            cache.commit(keep)
            cache.discard(active & ~keep)
        outputs.append(torch.stack(logits))
    torch.testing.assert_close(outputs[1], outputs[0], atol=1e-4, rtol=1e-4)
    assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"]
