"""The proxy folder (agents/saving/folder.py, agents/saving/export.py, agents/saving/model_card.py): SB3-free loading, export, Hub upload."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from gymnasium import spaces

from agents.accept import accept_model
from agents.cli import main
from agents.policies import count_trainable, proxy_policy_kwargs
from agents.saving.checkpoint import CheckpointError, save_checkpoint
from agents.saving.export import UPLOAD_FILES, export, hub_files, push_to_hub
from agents.saving.folder import ProxyFolderError, load_proxy
from proxy_env.errors import ProxyEnvError
from tests.conftest import PROMPTS

ENV = {"model": "tiny", "observation": "prefix", "top_k": 5, "top_p": 1.0, "max_new_tokens": 4}


def _agent(algo: str, dim: int):
    from agents.algos import get_algo

    torch.manual_seed(0)
    cls = get_algo(algo).load_class()
    agent = cls(
        "MlpPolicy", None, policy_kwargs=proxy_policy_kwargs(algo), _init_setup_model=False, seed=0, device="cpu"
    )
    agent.observation_space, agent.action_space, agent.n_envs = (
        spaces.Box(-np.inf, np.inf, (dim,), np.float32),
        spaces.Discrete(2),
        1,
    )
    agent._setup_model()
    with torch.no_grad():
        for p in agent.policy.parameters():
            p.add_(torch.randn_like(p) * 0.5)  # away from SB3's init, so a wrong layer order shows
    return agent


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory):
    """A PPO proxy trained briefly on the tiny model, as `proxy-rlhf train` / `make demo` save it."""
    from agents.train import SB3Config, train
    from proxy_env.config import EnvConfig

    folder = tmp_path_factory.mktemp("run") / "ppo"
    cfg = SB3Config(
        env=EnvConfig(model="tiny", prompts=PROMPTS, max_new_tokens=4, observation="prefix", top_k=5, top_p=1.0),
        num_envs=4,
        total_timesteps=64,
        n_steps=16,
        batch_size=32,
        seed=0,
        policy_device="cpu",
        eval_freq=0,
        save_dir=str(folder),
    )
    result = train(cfg)  # the model by name, as the CLI does: the folder records "tiny"
    return result.model, folder


@pytest.mark.parametrize("algo", ["ppo", "a2c", "dqn", "qrdqn"])
@pytest.mark.parametrize("deterministic", [False, True], ids=["sampled", "argmax"])
def test_accept_net_matches_the_sb3_policy(algo, deterministic, tiny, tmp_path):
    agent = _agent(algo, 2 * tiny.hidden_size + 2)
    agent.exploration_rate = 0.2
    folder = save_checkpoint(agent, tmp_path / algo, env_kwargs=ENV, lm=tiny)
    proxy = load_proxy(folder)
    obs = np.random.default_rng(0).normal(size=(64, 2 * tiny.hidden_size + 2)).astype(np.float32) * 3
    ours = proxy.net(torch.from_numpy(obs), deterministic=deterministic).double().numpy()
    np.testing.assert_allclose(ours, accept_model(agent, deterministic)(obs), atol=1e-6)
    assert 0.05 < ours.std() or deterministic or algo in ("dqn", "qrdqn")  # the observations do move the answer


def test_config_records_what_a_user_needs(trained, tiny):
    agent, folder = trained
    config = json.loads((folder / "proxy_config.json").read_text())
    assert config["format_version"] == 2 and config["algo"] == "ppo" and config["config"]["total_timesteps"] == 64
    assert config["observation"] == "prefix" and config["hidden_layer"] == -1
    assert config["skam"] == {"top_k": 5, "top_p": 1.0, "temperature": 1.0, "max_rejections": None, "order": "sample"}
    assert config["param_count"] == count_trainable(agent) > 0
    fp = config["llm"]["fingerprint"]
    assert config["llm"]["name"] == "tiny" and fp["vocab_size"] == 49152 and len(fp["config_hash"]) == 16


def test_export_writes_the_card_and_keeps_the_fingerprint(trained, tmp_path):
    _, folder = trained
    bench = tmp_path / "results.csv"
    bench.write_text(
        "agent,kind,reward,reward_lo,reward_hi,win_rate,kl,rejection_rate,distinct_2,perplexity\n"
        "always-accept,baseline,0.224,0.118,0.330,0.5,0,0,0.83,7.4\nproxy ppo (sample),proxy,0.272,0.177,0.368,0.46,0.143,0.1,0.8,7.9\n"
    )
    out = export(folder, tmp_path / "hub", bench=bench)
    assert sorted(p.name for p in out.iterdir()) == sorted(UPLOAD_FILES)
    card = (out / "README.md").read_text()
    source = json.loads((folder / "proxy_config.json").read_text())
    exported = json.loads((out / "proxy_config.json").read_text())
    assert exported["llm"] == source["llm"] and exported["num_timesteps"] == source["num_timesteps"]
    for text in (
        "library_name: proxy-rlhf",
        "`tiny`",
        source["llm"]["fingerprint"]["config_hash"],
        "VADER positivity",
        "| proxy ppo (sample) | +0.272 [+0.177, +0.368] | 0.46 | 0.143",
        "ProxyLogitsProcessor",
        "`prefix`",
        "top_k=5",
    ):
        assert text in card, text
    torch.testing.assert_close(load_proxy(out).net.state_dict(), load_proxy(folder).net.state_dict())
    from agents.generate import ProxyGenerator

    (generation,) = ProxyGenerator.from_checkpoint(out, max_new_tokens=2).generate(
        ["Hello!"]
    )  # generate/bench load it too
    assert 1 <= len(generation.token_ids) <= 2


def test_export_of_sb3_zips_needs_trust(tiny, tmp_path):
    agent = _agent("ppo", 2 * tiny.hidden_size + 2)
    old = save_checkpoint(agent, tmp_path / "old", env_kwargs=ENV, format="sb3")
    with pytest.raises(CheckpointError, match="unpickles Python objects"):
        export(old, tmp_path / "a")
    out = export(old, tmp_path / "a", trust=True, lm=tiny)  # format 1 records no fingerprint: the LLM gives it
    assert load_proxy(out).llm["fingerprint"]["model_type"] == "llama"
    agent.save(tmp_path / "bare.zip")
    with pytest.raises(CheckpointError, match="unpickles Python objects"):
        export(tmp_path / "bare.zip", tmp_path / "b")
    out = export(
        tmp_path / "bare.zip", tmp_path / "b", trust=True, env_kwargs=ENV
    )  # the name 'tiny' is loaded for the fingerprint
    proxy = load_proxy(out)
    assert (
        proxy.observation == "prefix" and proxy.skam["top_k"] == 5 and proxy.llm["fingerprint"]["vocab_size"] == 49152
    )


def test_cli_export_and_one_line_errors(trained, tmp_path, capsys):
    _, folder = trained
    assert main(["export", str(folder), str(tmp_path / "out")]) == 0
    assert "README.md" in capsys.readouterr().out and (tmp_path / "out" / "README.md").is_file()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert main(["export", str(folder), str(tmp_path / "mine")]) == 2
    assert "notes.txt" in capsys.readouterr().err and (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    assert main(["export", str(folder), str(tmp_path / "x"), "--bench", str(tmp_path / "missing.csv")]) == 2
    assert "bench=" in capsys.readouterr().err and not (tmp_path / "x").exists()


@pytest.mark.slow  # a fresh interpreter imports torch and transformers: ~5-15 s
def test_folder_loads_and_steers_generate_in_a_fresh_process_without_sb3(trained, tmp_path):
    _, folder = trained
    out = export(folder, tmp_path / "hub")
    code = f"""
import sys, torch
from agents.logits_processor import ProxyLogitsProcessor
from proxy_env.engine.tiny import tiny_lm
lm = tiny_lm()
processor = ProxyLogitsProcessor({str(out)!r}, lm.model, lm.tokenizer)
ids, mask = lm.left_pad([lm.encode_prompt("Hello!"), lm.encode_prompt("How are you today?")])
torch.manual_seed(0)
rows = lm.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=4, pad_token_id=2, **processor.generate_kwargs())
assert rows.shape == (2, ids.shape[1] + 4), rows.shape
assert "stable_baselines3" not in sys.modules and "sb3_contrib" not in sys.modules, "SB3 was imported"
print("steered", rows[:, ids.shape[1]:].tolist())
"""
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parents[1],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "steered" in done.stdout


def test_load_proxy_refusals(trained, tmp_path):
    _, folder = trained
    with pytest.raises(ProxyFolderError, match="is not a folder"):
        load_proxy(tmp_path / "nope")
    export(folder, tmp_path / "p")
    config = json.loads((tmp_path / "p" / "proxy_config.json").read_text())
    (tmp_path / "p" / "proxy_config.json").write_text(json.dumps({**config, "algo": "recurrentppo"}))
    with pytest.raises(ProxyFolderError, match="algo='recurrentppo' cannot steer.*memory"):
        load_proxy(tmp_path / "p")
    (tmp_path / "p" / "model.safetensors").write_bytes(b"garbage")
    (tmp_path / "p" / "proxy_config.json").write_text(json.dumps(config))
    with pytest.raises(ProxyFolderError, match="damaged or truncated"):
        load_proxy(tmp_path / "p")


class _FakeApi:
    def __init__(self):
        self.calls = []

    def create_repo(self, **kwargs):
        self.calls.append(("create_repo", kwargs))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))


def test_push_to_hub_uploads_exactly_the_folder(trained, tmp_path, monkeypatch):
    _, folder = trained
    out = export(folder, tmp_path / "hub")
    api = _FakeApi()
    files = push_to_hub(out, "me/proxy", api=api, private=True)
    assert files == sorted(UPLOAD_FILES) == hub_files(out)
    (create, repo), (upload, kwargs) = api.calls
    assert create == "create_repo" and repo == {
        "repo_id": "me/proxy",
        "repo_type": "model",
        "private": True,
        "exist_ok": True,
    }
    assert upload == "upload_folder" and kwargs["folder_path"] == str(out) and kwargs["allow_patterns"] == files
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", lambda token=None: api)  # the default client, offline
    assert push_to_hub(out, "me/proxy", token="t") == files
    with pytest.raises(ProxyEnvError, match="repo_id='proxy' must be 'user/name'"):
        push_to_hub(out, "proxy", api=api)
    (out / "notes.txt").write_text("private")
    with pytest.raises(ProxyEnvError, match=r"holds \['notes.txt'\]"):
        push_to_hub(out, "me/proxy", api=api)
