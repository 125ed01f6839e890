import pytest
import torch

from proxy_env.engine.lm import FrozenLM, resolve_device, resolve_dtype
from proxy_env.errors import ConfigError, ModelNotFoundError


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


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"device_map": "autoo"}, "device_map='autoo'.*Did you mean 'auto'"),
        ({"device_map": {"model": "disk"}}, "no disk offload"),
        ({"device_map": "auto", "device": "cpu"}, "pass one"),
    ],
    ids=["typo", "disk", "both"],
)
def test_device_map_errors(tiny, kw, match):
    with pytest.raises(ConfigError, match=match):
        FrozenLM(tiny.model, tiny.tokenizer, **kw)


def test_device_map_loads_a_folder(tiny, tmp_path):
    tiny.model.save_pretrained(tmp_path / "m")
    tiny.tokenizer.save_pretrained(tmp_path / "m")
    spread = FrozenLM(str(tmp_path / "m"), device_map={"": "cpu"}, dtype="float32")
    assert spread.device_map == {"": "cpu"} and spread.device == torch.device("cpu")
    ids = tiny.encode_prompt("hi there")
    torch.testing.assert_close(spread.forward_full(ids).logits, tiny.forward_full(ids).logits, atol=1e-5, rtol=1e-5)
