"""Probe the env and the CLI as a careless or hostile user would, and count the outcomes.

Each probe does one thing a user might do and judges what happened:

* ``clear``     -- an error that is ours (``ProxyEnvError``; on the CLI exit 2, one line, no traceback)
                   and names what to fix (the probe's keyword is in the message);
* ``unclear``   -- an error, but a raw traceback from a library, or a message without the keyword;
* ``silent``    -- no error, but the wrong thing happened (the probe's check failed);
* ``ok``        -- it worked as intended (the probe's check passed);
* ``data lost`` -- a file the user had was gone or changed afterwards (counted over any other outcome).

    python benchmarks/probe_reliability.py --out benchmarks/results/reliability_probes.md

Runs on the tiny model, on CPU, in ~3 minutes (two probes start a subprocess).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch

torch.set_num_threads(1)

import gymnasium as gym  # noqa: E402

import proxy_env  # noqa: E402
from proxy_env.errors import ProxyEnvError  # noqa: E402

ROOT = Path(tempfile.mkdtemp(prefix="probes-"))
PROMPTS = ["Hello!", "How are you today?", "Tell me about the weather."]
TRAIN = [
    "train",
    "--model",
    "tiny",
    "--total-timesteps",
    "64",
    "--num-envs",
    "2",
    "--n-steps",
    "32",
    "--batch-size",
    "64",
    "--max-new-tokens",
    "4",
    "--eval-prompts",
    "",
    "--no-progress-bar",
    "--policy-device",
    "cpu",
    "--prompts",
    "default",
]
PROBES: list[tuple[str, str, Callable[[], str]]] = []
_TINY: dict[str, Any] = {}


class Outcome(Exception):
    """Raised by a probe's body to state its result directly."""

    def __init__(self, result: str, note: str = "") -> None:
        super().__init__(note)
        self.result, self.note = result, note


def probe(category: str, name: str):
    def register(fn: Callable[[], str]) -> Callable[[], str]:
        PROBES.append((category, name, fn))
        return fn

    return register


def tiny(arch: str = "llama"):
    if arch not in _TINY:
        from proxy_env.engine.tiny import tiny_lm

        _TINY[arch] = tiny_lm(arch)
    return _TINY[arch]


def zero(prompts, responses):
    return [0.0] * len(responses)


def folder(name: str) -> Path:
    path = ROOT / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def user_files(base: Path) -> dict[str, bytes]:
    return {str(p.relative_to(base)): p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()}


def thesis(name: str) -> tuple[Path, dict[str, bytes]]:
    docs = folder(name)
    (docs / "thesis").mkdir(exist_ok=True)
    (docs / "thesis" / "ch1.tex").write_text("\\chapter{One}")
    return docs, user_files(docs)


def expect_error(call: Callable[[], Any], keyword: str, *, keep: tuple[Path, dict[str, bytes]] | None = None) -> str:
    """``clear`` if ``call`` raises our error naming ``keyword``; ``unclear``/``silent`` otherwise; ``data lost`` first."""
    try:
        call()
        result, note = "silent", "no error"
    except ProxyEnvError as exc:
        result, note = (
            ("clear", str(exc)) if keyword.lower() in str(exc).lower() else ("unclear", f"no {keyword!r}: {exc}")
        )
    except Exception as exc:
        result, note = "unclear", f"{type(exc).__name__}: {exc}"
    if keep is not None and user_files(keep[0]) != keep[1]:
        return "data lost", note
    raise Outcome(result, note)


def expect_ok(call: Callable[[], Any], check: Callable[[Any], bool] = lambda value: True) -> str:
    try:
        value = call()
    except Exception as exc:
        raise Outcome("unclear", f"{type(exc).__name__}: {exc}") from exc
    raise Outcome("ok" if check(value) else "silent", "" if check(value) else f"check failed: {value!r}"[:200])


def cli(*argv: str) -> tuple[int, str]:
    from agents.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse
            code = int(exc.code or 0)
    return code, err.getvalue()


def expect_cli_error(
    argv: list[str], keyword: str, *, keep: tuple[Path, dict[str, bytes]] | None = None, marker: Path | None = None
) -> str:
    code, err = cli(*argv)
    errors = [line for line in err.splitlines() if "error:" in line]  # progress bars and log lines aside
    if keep is not None and user_files(keep[0]) != keep[1]:
        return "data lost"
    if marker is not None and marker.exists():
        raise Outcome("silent", "the payload ran")
    if code == 0:
        raise Outcome("silent", "exit 0")
    good = code == 2 and "Traceback" not in err and len(errors) == 1 and keyword.lower() in errors[0].lower()
    raise Outcome("clear" if good else "unclear", f"exit {code}: {(errors[-1] if errors else err.strip())[-300:]}")


def venv(num_envs: int = 2, **kwargs: Any):
    kwargs.setdefault("model", tiny())
    kwargs.setdefault("prompts", PROMPTS)
    kwargs.setdefault("max_new_tokens", 4)
    return gym.make_vec(proxy_env.ENV_ID, num_envs=num_envs, vectorization_mode="vector_entry_point", **kwargs)


def train_cfg(**kwargs: Any):
    from agents.train import SB3Config

    base = dict(total_timesteps=64, n_steps=32, batch_size=64, eval_freq=0, max_new_tokens=4)
    return train_cfg_of(SB3Config, **{**base, **kwargs})


def checkpoint() -> Path:
    """A trained proxy in format 2 (trained once, copied per probe)."""
    path = ROOT / "base-ckpt"
    if not path.exists():
        from agents.train import train

        train(train_cfg(save_dir=str(path)), reward=zero)
    return path


def copy_checkpoint(name: str) -> Path:
    target = ROOT / name
    shutil.copytree(checkpoint(), target)
    return target


def sb3_checkpoint(name: str, marker: Path | None = None) -> Path:
    """The same proxy as an SB3 proxy.zip folder (format 1), optionally carrying a payload that creates ``marker``."""
    import zipfile

    from agents.saving.checkpoint import load_checkpoint, read_meta, save_checkpoint

    path = ROOT / name
    save_checkpoint(
        load_checkpoint(checkpoint(), device="cpu").model,
        path,
        env_kwargs=read_meta(checkpoint()).env_kwargs,
        format="sb3",
    )
    if marker is not None:

        class Payload:
            def __reduce__(self):
                return (open, (str(marker), "w"))

        with zipfile.ZipFile(path / "proxy.zip") as zf:
            members = {n: zf.read(n) for n in zf.namelist()}
        data = json.loads(members["data"])
        data["evil"] = {
            ":type:": "<class 'object'>",
            ":serialized:": base64.b64encode(pickle.dumps(Payload())).decode(),
        }
        members["data"] = json.dumps(data).encode()
        with zipfile.ZipFile(path / "proxy.zip", "w") as zf:
            for n, blob in members.items():
                zf.writestr(n, blob)
    return path


# ====================================================================== 1. user files
@probe("1 folders", "train --save-dir on a folder holding a thesis")
def _():
    keep = thesis("p-thesis")
    return expect_cli_error([*TRAIN, "--save-dir", str(keep[0])], "did not write", keep=keep)


@probe("1 folders", "train --save-dir runs (holding a checkpoint)")
def _():
    runs = folder("p-runs")
    shutil.copytree(checkpoint(), runs / "demo")
    keep = (runs, user_files(runs))
    return expect_cli_error([*TRAIN, "--save-dir", str(runs)], "did not write", keep=keep)


@probe("1 folders", "demo --out on a folder holding a thesis")
def _():
    keep = thesis("p-demo-thesis")
    return expect_cli_error(["demo", "--model", "tiny", "--out", str(keep[0])], "did not write", keep=keep)


@probe("1 folders", "save_checkpoint into a folder holding someone's model.safetensors")
def _():
    from agents.saving.checkpoint import load_checkpoint, save_checkpoint

    target = folder("p-lone")
    (target / "model.safetensors").write_bytes(b"theirs")
    keep = (target, user_files(target))
    model = load_checkpoint(checkpoint(), device="cpu").model
    return expect_error(
        lambda: save_checkpoint(model, target, env_kwargs={"model": "tiny"}), "did not write", keep=keep
    )


@probe("1 folders", "save_checkpoint over an existing checkpoint (ours: replaced)")
def _():
    from agents.saving.checkpoint import load_checkpoint, read_meta, save_checkpoint

    target = copy_checkpoint("p-over")
    model = load_checkpoint(target, device="cpu").model
    return expect_ok(
        lambda: save_checkpoint(model, target, env_kwargs={"model": "tiny"}, seed=7),
        lambda path: (
            read_meta(path).seed == 7 and not any(p.name.startswith(".") for p in ROOT.iterdir() if "p-over" in p.name)
        ),
    )


@probe("1 folders", "train --save-dir on an empty existing folder")
def _():
    from agents.saving.checkpoint import read_meta

    target = folder("p-empty")
    return expect_ok(
        lambda: cli(*TRAIN, "--save-dir", str(target)), lambda r: r[0] == 0 and read_meta(target).num_timesteps >= 64
    )


@probe("1 folders", "train --save-dir on a git repository")
def _():
    repo = folder("p-repo")
    (repo / ".git").mkdir(exist_ok=True)
    (repo / ".git" / "HEAD").write_text("ref: refs/heads/main")
    keep = (repo, user_files(repo))
    return expect_cli_error([*TRAIN, "--save-dir", str(repo)], "did not write", keep=keep)


@probe("1 folders", "finetune --out on a user folder with --overwrite")
def _():
    from agents.finetune import FinetuneConfig

    keep = thesis("p-ft")
    return expect_error(lambda: FinetuneConfig(out=str(keep[0]), overwrite=True).validate(), "did not write", keep=keep)


@probe("1 folders", "rm train --out on a user folder")
def _():
    keep = thesis("p-rm")
    return expect_cli_error(
        ["rm", "train", "--pairs", str(ROOT / "none.jsonl"), "--out", str(keep[0])], "did not write", keep=keep
    )


@probe("1 folders", "train --save-dir through a symbolic link to a user folder")
def _():
    keep = thesis("p-link-target")
    link = ROOT / "p-link"
    link.symlink_to(keep[0])
    return expect_cli_error([*TRAIN, "--save-dir", str(link)], "symbolic link", keep=keep)


@probe("1 folders", "a user file appears in --save-dir during training")
def _():
    from stable_baselines3.common.callbacks import BaseCallback

    from agents.train import train

    target = ROOT / "p-during"

    class UserWrites(BaseCallback):
        def _on_step(self) -> bool:
            target.mkdir(exist_ok=True)
            (target / "notes.txt").write_text("mine")
            return True

    try:
        train(train_cfg(save_dir=str(target)), reward=zero, callbacks=[UserWrites()])
    except ProxyEnvError as exc:
        intact = (target / "notes.txt").read_text() == "mine"
        rescued = any(p.name.startswith("p-during.rescued-") for p in ROOT.iterdir())
        if not intact:
            return "data lost"
        raise Outcome("clear" if rescued and "rescued" in str(exc) else "unclear", str(exc)) from exc
    return "data lost" if not (target / "notes.txt").is_file() else "silent"


# ====================================================================== 2. code in checkpoints
@probe("2 pickles", "load_checkpoint of a poisoned proxy.zip")
def _():
    from agents.saving.checkpoint import load_checkpoint

    marker = ROOT / "pwned-1"
    path = sb3_checkpoint("p-poison-1", marker)
    result = expect_error(lambda: load_checkpoint(path, device="cpu"), "trust")
    return result


@probe("2 pickles", "generate --checkpoint poisoned")
def _():
    marker = ROOT / "pwned-2"
    path = sb3_checkpoint("p-poison-2", marker)
    return expect_cli_error(
        ["generate", "--checkpoint", str(path), "Hi", "--max-new-tokens", "2"], "--trust-checkpoint", marker=marker
    )


@probe("2 pickles", "train --resume poisoned")
def _():
    marker = ROOT / "pwned-3"
    path = sb3_checkpoint("p-poison-3", marker)
    return expect_cli_error([*TRAIN, "--resume", str(path)], "--trust-checkpoint", marker=marker)


@probe("2 pickles", "bench --checkpoints poisoned")
def _():
    marker = ROOT / "pwned-4"
    path = sb3_checkpoint("p-poison-4", marker)
    return expect_cli_error(
        ["bench", "--quick", "--checkpoints", str(path), "--out", str(ROOT / "p-bench")],
        "--trust-checkpoint",
        marker=marker,
    )


@probe("2 pickles", "proxy_config.json naming a class outside the allow-list")
def _():
    from agents.saving.checkpoint import load_checkpoint

    path = copy_checkpoint("p-class")
    config = json.loads((path / "proxy_config.json").read_text())
    config["policy_kwargs"]["features_extractor_class"] = {"class": "Popen"}
    (path / "proxy_config.json").write_text(json.dumps(config))
    return expect_error(lambda: load_checkpoint(path, device="cpu"), "not one this format loads")


@probe("2 pickles", "a serialized pickle pasted into proxy_config.json")
def _():
    from agents.saving.checkpoint import load_checkpoint

    path = copy_checkpoint("p-pasted")
    marker = ROOT / "pwned-5"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    config = json.loads((path / "proxy_config.json").read_text())
    config["algo_kwargs"]["evil"] = {":serialized:": base64.b64encode(pickle.dumps(Payload())).decode()}
    (path / "proxy_config.json").write_text(json.dumps(config))
    try:
        load_checkpoint(path, device="cpu")
    except ProxyEnvError as exc:
        raise Outcome("silent" if marker.exists() else "clear", str(exc)) from exc
    except Exception as exc:
        raise Outcome("silent" if marker.exists() else "unclear", f"{type(exc).__name__}: {exc}") from exc
    raise Outcome("silent" if marker.exists() else "ok", "")


@probe("2 pickles", "load with trust=True warns and works")
def _():
    import logging

    from agents.saving.checkpoint import load_checkpoint

    path = sb3_checkpoint("p-trusted")
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("agents.saving.checkpoint").addHandler(handler)
    try:
        return expect_ok(
            lambda: load_checkpoint(path, device="cpu", trust=True),
            lambda ck: ck.model is not None and any("arbitrary code" in r for r in records),
        )
    finally:
        logging.getLogger("agents.saving.checkpoint").removeHandler(handler)


@probe("2 pickles", "the default format loads with every unpickler disabled")
def _():
    import cloudpickle

    from agents.saving.checkpoint import load_checkpoint

    saved = {
        (pickle, "loads"): pickle.loads,
        (pickle, "load"): pickle.load,
        (cloudpickle, "loads"): cloudpickle.loads,
        (torch, "load"): torch.load,
    }

    def refuse(*args, **kwargs):
        raise RuntimeError("unpickling")

    for module, name in saved:
        setattr(module, name, refuse)
    try:
        return expect_ok(lambda: load_checkpoint(checkpoint(), device="cpu"))
    finally:
        for (module, name), fn in saved.items():
            setattr(module, name, fn)


# ====================================================================== 3. bad rewards
class Flaky:
    name = "flaky"

    def __init__(self, value: Any = None, exc: BaseException | None = None):
        self.calls, self.value, self.exc = 0, value, exc

    def __call__(self, prompts, responses):
        self.calls += 1
        if self.calls == 1:
            if self.exc is not None:
                raise self.exc
            return self.value if not callable(self.value) else self.value(responses)
        return [1.0] * len(responses)


def recovers(reward: Any, keyword: str, *, single: bool = False, base: type = Exception) -> str:
    env = (
        gym.make(proxy_env.ENV_ID, model=tiny(), prompts=PROMPTS, max_new_tokens=3, reward=reward)
        if single
        else venv(2, reward=reward, max_new_tokens=3)
    )
    env.reset(seed=0)
    action = 1 if single else np.ones(2, dtype=np.int64)
    message = None
    for _ in range(50):
        try:
            env.step(action)
        except base as exc:
            message = f"{type(exc).__name__}: {exc}"
            ours = isinstance(exc, ProxyEnvError) or not isinstance(exc, Exception)
            break
    if message is None:
        raise Outcome("silent", "no error")
    try:
        env.step(action)
        raise Outcome("silent", "stepped on after the failure without reset")
    except ProxyEnvError as exc:
        if "reset()" not in str(exc):
            raise Outcome("unclear", str(exc)) from exc
    except Exception as exc:
        raise Outcome("unclear", f"after the failure: {type(exc).__name__}: {exc}") from exc
    env.reset(seed=1)
    for _ in range(10):
        *_, terminated, truncated, _ = env.step(action)
        if single and (terminated or truncated):
            env.reset()
    clear = ours and (keyword in message) and (base is not Exception or "reset()" in message)
    raise Outcome("clear" if clear else "unclear", message)


@probe("3 rewards", "reward callable raises once")
def _():
    return recovers(Flaky(exc=ValueError("server timeout")), "server timeout")


@probe("3 rewards", "reward callable returns NaN once")
def _():
    return recovers(Flaky(lambda r: [float("nan")] * len(r)), "finite")


@probe("3 rewards", "reward returns the wrong number of values")
def _():
    return recovers(Flaky(lambda r: [0.0]), "one float per response")


@probe("3 rewards", "reward returns strings")
def _():
    return recovers(Flaky(lambda r: ["good"] * len(r)), "one int or float per response")


@probe("3 rewards", "reward returns inf")
def _():
    return recovers(Flaky(lambda r: [float("inf")] * len(r)), "finite")


@probe("3 rewards", "reward raises KeyboardInterrupt (Ctrl-C in a notebook)")
def _():
    return recovers(Flaky(exc=KeyboardInterrupt()), "KeyboardInterrupt", base=BaseException)


@probe("3 rewards", "single env: reward raises once")
def _():
    return recovers(Flaky(exc=RuntimeError("gpu lost")), "gpu lost", single=True)


@probe("3 rewards", "reward returns None")
def _():
    return recovers(Flaky(lambda r: None), "not a list of floats")


# ====================================================================== 4. interrupted / failed saves
@probe("4 saves", "SIGINT mid-training (in-process)")
def _():
    from stable_baselines3.common.callbacks import BaseCallback

    from agents.saving.checkpoint import read_meta
    from agents.train import train

    class Kill(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps == 8:
                os.kill(os.getpid(), signal.SIGINT)
            return True

    target = ROOT / "p-sigint"
    return expect_ok(
        lambda: train(train_cfg(save_dir=str(target), total_timesteps=10_000), reward=zero, callbacks=[Kill()]),
        lambda r: r.interrupted == "SIGINT" and read_meta(target).num_timesteps == r.model.num_timesteps < 10_000,
    )


@probe("4 saves", "kill (SIGTERM) of proxy-rlhf train in a subprocess")
def _():
    from agents.saving.checkpoint import read_meta

    target = ROOT / "p-sigterm"
    argv = [*TRAIN[:4], "1000000", *TRAIN[5:], "--save-dir", str(target)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "agents.cli", *argv],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    deadline = time.time() + 120
    while time.time() < deadline and not (ROOT / ".p-sigterm.lock").exists():  # the run has started
        time.sleep(0.2)
    time.sleep(8.0)  # loading the tiny model; then it trains (a signal while loading also saves, after one step)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    try:
        saved = read_meta(target).num_timesteps > 0
    except ProxyEnvError:
        saved = False
    raise Outcome(
        "ok" if proc.returncode == 143 and saved else "silent", f"exit {proc.returncode}, saved={saved}: {err[-200:]}"
    )


@probe("4 saves", "--save-dir afile/sub (under a file)")
def _():
    (ROOT / "afile").write_text("x")
    return expect_cli_error([*TRAIN, "--save-dir", str(ROOT / "afile" / "sub")], "which is a file")


@probe("4 saves", "--save-dir . (the current folder)")
def _():
    cwd = os.getcwd()
    os.chdir(folder("p-cwd"))
    try:
        return expect_cli_error([*TRAIN, "--save-dir", "."], "current")
    finally:
        os.chdir(cwd)


@probe("4 saves", "--save-dir naming an existing file")
def _():
    (ROOT / "bfile").write_text("x")
    return expect_cli_error([*TRAIN, "--save-dir", str(ROOT / "bfile")], "is a file")


@probe("4 saves", "--save-dir ''")
def _():
    from agents.train import train

    return expect_error(lambda: train(train_cfg(save_dir="")), "empty")


# ====================================================================== 5. demo budget (--decisions)
for _budget in ("0", "-1", "nan", "inf"):

    def _demo_probe(budget=_budget):
        return expect_cli_error(["demo", "--model", "tiny", "--decisions", budget], "--decisions")

    probe("5 demo", f"demo --decisions {_budget}")(_demo_probe)


# ====================================================================== 6. two runs, one folder
@probe("6 locks", "two proxy-rlhf train processes on one --save-dir")
def _():
    from agents.saving.checkpoint import read_meta

    target = ROOT / "p-race"
    argv = [sys.executable, "-m", "agents.cli", *TRAIN[:4], "3000", *TRAIN[5:], "--save-dir", str(target)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env=env)
    lock = ROOT / ".p-race.lock"
    deadline = time.time() + 120
    while time.time() < deadline and not lock.exists():
        time.sleep(0.2)
    second = subprocess.run(argv, stderr=subprocess.PIPE, text=True, env=env, timeout=300)
    first.communicate(timeout=600)
    ok_first = first.returncode == 0 and read_meta(target).num_timesteps >= 3000
    clear = (
        second.returncode == 2 and "being written by another run" in second.stderr and "Traceback" not in second.stderr
    )
    raise Outcome(
        "clear" if clear and ok_first else "unclear",
        f"first {first.returncode}, second {second.returncode}: {second.stderr.strip()[-200:]}",
    )


@probe("6 locks", "train while this process holds the folder's lock")
def _():
    from agents.train import train
    from proxy_env.folders import FolderLock

    with FolderLock(ROOT / "p-held"):
        return expect_error(lambda: train(train_cfg(save_dir=str(ROOT / "p-held")), reward=zero), "another run")


# 7. reward normalisation: retired from the env in 0.2.0 (Gymnasium NormalizeReward / SB3 VecNormalize do it)


# ====================================================================== 8. budgets
for _tokens in (10**9, 10**12):

    def _tokens_probe(tokens=_tokens):
        start = time.perf_counter()
        result = expect_error(lambda: venv(1, max_new_tokens=tokens), "max_new_tokens")
        return result if time.perf_counter() - start < 10 else "unclear"

    probe("8 budgets", f"max_new_tokens={_tokens}")(_tokens_probe)


@probe("8 budgets", "a prompt longer than GPT-2's positions")
def _():
    return expect_error(lambda: venv(1, model=tiny("gpt2"), prompts=["hello world " * 1500]), "prompts[0]")


@probe("8 budgets", "a prompt longer than Llama's positions")
def _():
    return expect_error(lambda: venv(1, prompts=["hello world " * 1500]), "prompts[0]")


@probe("8 budgets", "num_envs=10**6 with max_new_tokens=1000")
def _():
    return expect_error(lambda: venv(10**6, max_new_tokens=900), "GiB")


@probe("8 budgets", "train --n-steps 10**9")
def _():
    return expect_cli_error([*TRAIN, "--n-steps", str(10**9)], "n_steps")


@probe("8 budgets", "generate --max-new-tokens 0")
def _():
    return expect_cli_error(
        ["generate", "--checkpoint", str(checkpoint()), "Hi", "--max-new-tokens", "0"], "--max-new-tokens"
    )


@probe("8 budgets", "generate --max-new-tokens 100000")
def _():
    return expect_cli_error(
        ["generate", "--checkpoint", str(checkpoint()), "Hi", "--max-new-tokens", "100000"], "max_new_tokens"
    )


# ====================================================================== 9. seeds
@probe("9 seeds", "vector reset(seed=np.int64(3))")
def _():
    env = venv(2)
    return expect_ok(
        lambda: (env.reset(seed=np.int64(3))[0], env.reset(seed=3)[0]), lambda pair: bool(np.array_equal(*pair))
    )


@probe("9 seeds", "vector reset(seed=2**63-1)")
def _():
    env = venv(2)
    single = gym.make(proxy_env.ENV_ID, model=tiny(), prompts=PROMPTS, max_new_tokens=4)
    return expect_ok(
        lambda: (env.reset(seed=2**63 - 1)[1]["token_id"], single.reset(seed=2**63)[1]["token_id"]),
        lambda pair: int(pair[0][1]) == int(pair[1]),
    )


@probe("9 seeds", "vector reset(seed='abc')")
def _():
    return expect_error(lambda: venv(2).reset(seed="abc"), "seed='abc'")


@probe("9 seeds", "vector reset(seed=-1)")
def _():
    return expect_error(lambda: venv(2).reset(seed=-1), "seed=-1")


@probe("9 seeds", "vector reset(seed=1.5)")
def _():
    return expect_error(lambda: venv(2).reset(seed=1.5), "seed=1.5")


@probe("9 seeds", "vector reset(seed=[1, None])")
def _():
    return expect_ok(lambda: venv(2).reset(seed=[1, None]))


@probe("9 seeds", "single reset(seed=np.uint64(2**64-1))")
def _():
    env = gym.make(proxy_env.ENV_ID, model=tiny(), prompts=PROMPTS, max_new_tokens=4)
    return expect_ok(lambda: env.reset(seed=np.uint64(2**64 - 1)))


@probe("9 seeds", "train --seed 2**32 (numpy's legacy RNG limit)")
def _():
    return expect_cli_error([*TRAIN, "--seed", str(2**32)], "seed=")


@probe("9 seeds", "generate --seed -1")
def _():
    return expect_cli_error(["generate", "--checkpoint", str(checkpoint()), "Hi", "--seed", "-1"], "--seed")


@probe("9 seeds", "vector reset with 3 seeds for 2 envs")
def _():
    return expect_error(lambda: venv(2).reset(seed=[1, 2, 3]), "num_envs=2")


# ====================================================================== 10. damaged files
def _edit_json(path: Path, edit: Callable[[dict], None]) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@probe("10 damaged", "meta.json missing env_kwargs (format 1)")
def _():
    from agents.saving.checkpoint import load_checkpoint

    path = sb3_checkpoint("p-meta-missing")
    _edit_json(path / "meta.json", lambda d: d.pop("env_kwargs"))
    return expect_error(lambda: load_checkpoint(path, trust=True), "env_kwargs")


@probe("10 damaged", "meta.json with num_timesteps='many'")
def _():
    from agents.saving.checkpoint import load_checkpoint

    path = sb3_checkpoint("p-meta-type")
    _edit_json(path / "meta.json", lambda d: d.update(num_timesteps="many"))
    return expect_error(lambda: load_checkpoint(path, trust=True), "num_timesteps")


@probe("10 damaged", "proxy_config.json truncated")
def _():
    path = copy_checkpoint("p-config-trunc")
    _truncate(path / "proxy_config.json")
    return expect_cli_error(["generate", "--checkpoint", str(path), "Hi"], "proxy_config.json")


@probe("10 damaged", "model.safetensors truncated")
def _():
    path = copy_checkpoint("p-weights-trunc")
    _truncate(path / "model.safetensors")
    return expect_cli_error(["generate", "--checkpoint", str(path), "Hi"], "model.safetensors")


@probe("10 damaged", "model.safetensors empty")
def _():
    path = copy_checkpoint("p-weights-empty")
    (path / "model.safetensors").write_bytes(b"")
    return expect_cli_error(["generate", "--checkpoint", str(path), "Hi"], "model.safetensors")


@probe("10 damaged", "optimizer.safetensors truncated (train --resume)")
def _():
    path = copy_checkpoint("p-opt-trunc")
    _truncate(path / "optimizer.safetensors")
    return expect_cli_error([*TRAIN, "--resume", str(path)], "optimizer.safetensors")


@probe("10 damaged", "proxy_config.json lost its policy_kwargs")
def _():
    from agents.saving.checkpoint import load_checkpoint

    path = copy_checkpoint("p-no-kwargs")
    _edit_json(path / "proxy_config.json", lambda d: d.pop("policy_kwargs"))
    return expect_error(lambda: load_checkpoint(path, device="cpu"), "model.safetensors")


@probe("10 damaged", "proxy_config.json with an observation space of the wrong size")
def _():
    path = copy_checkpoint("p-space")
    _edit_json(path / "proxy_config.json", lambda d: d["observation_space"].update(shape=[65]))
    return expect_cli_error(["generate", "--checkpoint", str(path), "Hi"], "model.safetensors")


def _reward_model(name: str) -> Path:
    from proxy_env.rewards.learned import BTRewardModel, make_head

    class Encoder:
        name, dim = "stub", 4

        def spec(self):
            return {"kind": "minilm"}

    return BTRewardModel(Encoder(), make_head(4, 0), hidden=0).save(ROOT / name)


@probe("10 damaged", "reward model's model.safetensors truncated")
def _():
    import proxy_env.rewards.learned as rm

    path = _reward_model("p-rm-trunc")
    _truncate(path / rm.WEIGHTS_NAME)
    original = rm.encoder_from_spec
    rm.encoder_from_spec = lambda spec, **kw: type("E", (), {"dim": 4, "name": "stub"})()
    try:
        return expect_error(lambda: rm.load_reward_model(path), "damaged or truncated")
    finally:
        rm.encoder_from_spec = original


@probe("10 damaged", "reward_model.json garbage")
def _():
    from proxy_env.rewards.learned import CONFIG_NAME, load_reward_model

    path = _reward_model("p-rm-json")
    (path / CONFIG_NAME).write_text("{{{")
    return expect_error(lambda: load_reward_model(path), "not valid JSON")


@probe("10 damaged", "a user's model folder with truncated weights")
def _():
    from transformers import AutoTokenizer

    from proxy_env.assets import default_tokenizer_dir
    from proxy_env.engine.lm import FrozenLM
    from proxy_env.engine.tiny import tiny_model

    path = folder("p-hf")
    tiny_model().save_pretrained(path)
    AutoTokenizer.from_pretrained(default_tokenizer_dir()).save_pretrained(path)
    _truncate(path / "model.safetensors")
    return expect_error(lambda: FrozenLM(str(path), device="cpu"), "damaged")


@probe("10 damaged", "truncated cached default model (rebuilt)")
def _():
    from transformers import AutoTokenizer

    from proxy_env import assets
    from proxy_env.engine.lm import FrozenLM
    from proxy_env.engine.tiny import tiny_model

    tokenizer = assets.default_tokenizer_dir()
    saved = (assets._default_root, assets.default_tokenizer_dir, assets._convert_default_model)
    builds = []

    def convert(gguf, tokenizer_dir, tmp):
        builds.append(tmp)
        tiny_model().save_pretrained(tmp)
        AutoTokenizer.from_pretrained(tokenizer).save_pretrained(tmp)

    old_env = os.environ.get(assets.CACHE_ENV_VAR)
    os.environ[assets.CACHE_ENV_VAR] = str(ROOT / "cache")
    assets._default_root = lambda: (Path("x.gguf"), ROOT / "cache" / f"{assets.DEFAULT_NAME}-0")
    assets.default_tokenizer_dir = lambda: tokenizer
    assets._convert_default_model = convert
    try:
        model_dir = assets.default_model_dir()
        (model_dir / assets.MANIFEST).unlink()  # an old cache: only the failed load can tell
        _truncate(model_dir / "model.safetensors")
        return expect_ok(lambda: FrozenLM("default", device="cpu"), lambda lm: len(builds) == 2)
    finally:
        assets._default_root, assets.default_tokenizer_dir, assets._convert_default_model = saved
        if old_env is None:
            os.environ.pop(assets.CACHE_ENV_VAR, None)
        else:
            os.environ[assets.CACHE_ENV_VAR] = old_env


@probe("10 damaged", "prompts file that does not exist")
def _():
    return expect_cli_error([*TRAIN[:-2], "--prompts", str(ROOT / "nope.txt")], "nope.txt")


@probe("10 damaged", "prompts file of binary garbage")
def _():
    (ROOT / "garbage.txt").write_bytes(bytes(range(256)) * 4)
    return expect_cli_error([*TRAIN[:-2], "--prompts", str(ROOT / "garbage.txt")], "garbage.txt")


@probe("10 damaged", "prompts .jsonl with a broken line")
def _():
    (ROOT / "broken.jsonl").write_text('{"prompt": "Hi"}\n{"prompt": \n')
    return expect_cli_error([*TRAIN[:-2], "--prompts", str(ROOT / "broken.jsonl")], "broken.jsonl")


# ====================================================================== smaller ones and the CLI
@probe("11 other", "dtype='bfloat16' with a float32 FrozenLM")
def _():
    return expect_error(lambda: venv(1, dtype="bfloat16"), "dtype='bfloat16'")


@probe("11 other", "device='cuda' with a CPU FrozenLM")
def _():
    return expect_error(lambda: venv(1, device="cuda"), "device='cuda'")


@probe("11 other", "demo checkpoint then generate without --model")
def _():
    out = ROOT / "p-demo"
    code, err = cli(
        "demo",
        "--model",
        "tiny",
        "--decisions",
        "64",
        "--no-progress-bar",
        "--num-envs",
        "2",
        "--max-new-tokens",
        "4",
        "--eval-prompts",
        "2",
        "--show",
        "0",
        "--out",
        str(out),
    )
    if code != 0:
        raise Outcome("unclear", err[-300:])
    return expect_ok(lambda: cli("generate", "--checkpoint", str(out), "Hi there"), lambda r: r[0] == 0)


@probe("11 other", "generate with an LLM of another fingerprint")
def _():
    return expect_cli_error(
        ["generate", "--checkpoint", str(checkpoint()), "Hi", "--model", str(ROOT / "p-hf-ok")], "fingerprint"
    )


@probe("11 other", "--debug shows the traceback")
def _():
    from agents.cli import main

    try:
        main(["generate", "--checkpoint", str(ROOT / "missing"), "Hi", "--debug"])
    except ProxyEnvError:
        raise Outcome("ok") from None
    raise Outcome("silent", "no exception")


@probe("11 other", "train --algo-kwargs '{broken'")
def _():
    return expect_cli_error([*TRAIN, "--algo-kwargs", "{broken"], "--algo-kwargs")


@probe("11 other", "train --algo-kwargs with an unknown hyper-parameter")
def _():
    return expect_cli_error([*TRAIN, "--algo-kwargs", '{"n_epoch": 4}'], "n_epoch")


@probe("11 other", "train --hidden 0")
def _():
    return expect_cli_error([*TRAIN, "--hidden", "0"], "hidden")


@probe("11 other", "train --gamma 1.5")
def _():
    return expect_cli_error([*TRAIN, "--gamma", "1.5"], "gamma")


@probe("11 other", "train --resume a folder that is not a checkpoint")
def _():
    return expect_cli_error([*TRAIN, "--resume", str(folder("p-not-ckpt"))], "proxy_config.json")


# ====================================================================== 12. more hostile arguments (written after the fixes, unseen)
for _flags, _keyword in [
    (["--policy-device", "tpu"], "device"),
    (["--llm-device", "cuda:7"], "device"),
    (["--total-timesteps", "0"], "total_timesteps"),
    (["--top-p", "0"], "top_p"),
    (["--temperature", "0"], "temperature"),
    (["--observation", "hidden"], "observation"),
    (["--reward", str(Path(tempfile.gettempdir()) / "no-such-rm")], "no-such-rm"),
    (["--reward-baseline", "abc"], "reward_baseline"),
    (["--hidden-layer", "99"], "hidden_layer"),
    (["--algo", "sac"], "algo"),
    (["--algo-kwargs", '{"batch_size": 1}'], "batch_size"),
    (["--algo-kwargs", '{"n_epochs": -1}'], "n_epochs"),
    (["--learning-rate", "1e12"], "learning_rate"),
    (["--tensorboard-log", "/proc/no-such/tb"], "/proc/no-such"),
    (["--save-dir", str(Path(tempfile.gettempdir()) / ("x" * 300))], "too long"),
    (["--eval-episodes", "0"], "eval_episodes"),
]:

    def _flag_probe(flags=_flags, keyword=_keyword):
        return expect_cli_error([*TRAIN, *flags], keyword)

    probe("12 arguments", "train " + " ".join(f if len(f) < 40 else f[:20] + "..." for f in _flags))(_flag_probe)


@probe("12 arguments", "generate --batch-size 0")
def _():
    return expect_cli_error(["generate", "--checkpoint", str(checkpoint()), "Hi", "--batch-size", "0"], "batch_size")


@probe("12 arguments", "generate an empty prompt")
def _():
    return expect_cli_error(["generate", "--checkpoint", str(checkpoint()), ""], "prompt")


@probe("12 arguments", "generate --checkpoint a file")
def _():
    (ROOT / "cfile").write_text("x")
    return expect_cli_error(["generate", "--checkpoint", str(ROOT / "cfile"), "Hi"], "not a folder")


@probe("12 arguments", "load_checkpoint(device='gpu')")
def _():
    from agents.saving.checkpoint import load_checkpoint

    return expect_error(lambda: load_checkpoint(checkpoint(), device="gpu"), "device")


@probe("12 arguments", "save_checkpoint(format='zip')")
def _():
    from agents.saving.checkpoint import load_checkpoint, save_checkpoint

    model = load_checkpoint(checkpoint(), device="cpu").model
    return expect_error(lambda: save_checkpoint(model, ROOT / "p-fmt", env_kwargs={}, format="zip"), "format='zip'")


@probe("12 arguments", "env step with action 2")
def _():
    env = venv(2)
    env.reset(seed=0)
    return expect_error(lambda: env.step(np.array([2, 1])), "actions")


@probe("12 arguments", "env reset(options={'prompt_index': [99, 0]})")
def _():
    return expect_error(lambda: venv(2).reset(options={"prompt_index": [99, 0]}), "prompt_index")


@probe("12 arguments", "env max_new_tokens=True")
def _():
    return expect_error(lambda: venv(1, max_new_tokens=True), "max_new_tokens")


@probe("12 arguments", "FrozenLM(trust_remote_code='yes')")
def _():
    from proxy_env.engine.lm import FrozenLM

    return expect_error(lambda: FrozenLM("default", trust_remote_code="yes"), "trust_remote_code")


@probe("12 arguments", "bench --num-prompts 1")
def _():
    return expect_cli_error(["bench", "--quick", "--num-prompts", "1", "--out", str(ROOT / "p-bench1")], "num_prompts")


def _prepare_other_model() -> None:
    from transformers import AutoTokenizer

    from proxy_env.assets import default_tokenizer_dir
    from proxy_env.engine.tiny import tiny_model

    path = folder("p-hf-ok")
    if not (path / "config.json").exists():
        tiny_model("gpt2").save_pretrained(path)
        AutoTokenizer.from_pretrained(default_tokenizer_dir()).save_pretrained(path)


# ====================================================================== 13. round two (each a defect of the second review)
@probe("13 round two", "tilt: Ctrl-C during collection claims no decisions")
def _():
    import agents.tilt.backend
    from agents.tilt.backend import TiltConfig, train_tilt

    real = agents.tilt.backend.collect

    def interrupted(venv, decisions, **kwargs):
        data = real(venv, 8, seed=0)
        os.kill(os.getpid(), signal.SIGINT)
        return data

    agents.tilt.backend.collect = interrupted
    try:
        cfg = train_cfg_of(
            TiltConfig,
            observation="prefix",
            kl_coef=0.5,
            top_k=6,
            top_p=1.0,
            total_timesteps=10_000,
            save_dir=str(ROOT / "p-tilt-stop"),
        )
        return expect_ok(
            lambda: train_tilt(cfg, model=tiny(), reward=zero),
            lambda r: r.checkpoint is None and r.model.num_timesteps == 0 and r.interrupted == "SIGINT",
        )
    finally:
        agents.tilt.backend.collect = real


@probe("13 round two", "flip 2000 bytes of the weights, then load")
def _():
    from agents.saving.checkpoint import load_checkpoint

    path = copy_checkpoint("p-flip")
    data = bytearray((path / "model.safetensors").read_bytes())
    for i in range(len(data) - 2000, len(data)):
        data[i] ^= 0xFF
    (path / "model.safetensors").write_bytes(bytes(data))
    return expect_error(lambda: load_checkpoint(path), "sha256")


@probe("13 round two", "a proxy folder used with an LLM of the same architecture, other weights")
def _():
    from agents.saving.folder import check_llm, fingerprint
    from proxy_env.engine.tiny import tiny_lm

    other = tiny_lm(seed=1)
    saved = {"name": "tiny", "fingerprint": fingerprint(tiny().model, tiny().tokenizer)}
    return expect_error(lambda: check_llm(saved, other.model, other.tokenizer, where="proxy"), "weights_hash")


@probe("13 round two", "bench --out a file")
def _():
    afile = ROOT / "p-bench-file"
    afile.write_text("mine")
    return expect_cli_error(["bench", "--quick", "--model", "tiny", "--out", str(afile)], "--out")


@probe("13 round two", "a SafetensorError in the final save")
def _():
    from safetensors import SafetensorError

    from agents.saving.checkpoint import save_or_rescue

    def save(agent, path=None):
        if path is None:
            raise SafetensorError("File too large (os error 27)")
        return path

    return expect_error(lambda: save_or_rescue(save, object(), str(ROOT / "p-efbig")), "rescued")


@probe("13 round two", "--tilt-data under a regular file")
def _():
    afile = ROOT / "p-tilt-file"
    afile.write_text("")
    argv = [
        *TRAIN[:-4],
        "--backend",
        "tilt",
        "--observation",
        "prefix",
        "--kl-coef",
        "0.5",
        "--tilt-data",
        str(afile / "d.pt"),
    ]
    return expect_cli_error([a for a in argv if a not in ("--n-steps", "32", "--eval-prompts", "")], "--tilt-data")


@probe("13 round two", "demo --num-envs 0")
def _():
    return expect_cli_error(["demo", "--model", "tiny", "--num-envs", "0", "--out", str(ROOT / "p-d0")], "num_envs=0")


@probe("13 round two", "demo --learning-rate 0")
def _():
    return expect_cli_error(
        ["demo", "--model", "tiny", "--learning-rate", "0", "--out", str(ROOT / "p-d1")], "learning_rate=0"
    )


@probe("13 round two", "train --resume with other env settings")
def _():
    import warnings

    from agents.train import train

    path = copy_checkpoint("p-resume-diff")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(train_cfg(resume=str(path), max_new_tokens=5, top_p=1.0, total_timesteps=32), reward=zero)
    said = any("differ from the checkpoint" in str(w.message) for w in caught)
    raise Outcome("ok" if said else "silent", "" if said else "no warning")


@probe("13 round two", "a proxy whose predict returns 0.7")
def _():
    from agents.generate import ProxyGenerator

    class Half:
        def predict(self, obs, state=None, episode_start=None, deterministic=True):
            return np.full(len(obs), 0.7), state

    return expect_error(lambda: ProxyGenerator(tiny(), Half(), max_new_tokens=2).generate(["Hi"]), "probability")


@probe("13 round two", "a proxy whose predict returns N+1 actions")
def _():
    from agents.generate import ProxyGenerator

    class More:
        def predict(self, obs, state=None, episode_start=None, deterministic=True):
            return np.ones(len(obs) + 1, dtype=np.int64), state

    return expect_error(lambda: ProxyGenerator(tiny(), More(), max_new_tokens=2).generate(["Hi", "Yo"]), "actions for")


@probe("13 round two", "rm train on pairs with chosen == rejected")
def _():
    from feedback import RMTrainConfig, train_reward_model
    from feedback.records import PreferencePair
    from proxy_env.rewards.encoders import LMEncoder

    pairs = [PreferencePair(f"q{i}", "same", "same", "toy") for i in range(8)]
    return expect_error(
        lambda: train_reward_model(pairs, LMEncoder(tiny()), RMTrainConfig(hidden=0, epochs=1)), "preference"
    )


@probe("13 round two", "prefs build --top-p 0")
def _():
    return expect_cli_error(
        ["prefs", "build", "--model", "tiny", "--top-p", "0", "--out", str(ROOT / "p-tp.jsonl")], "top_p=0"
    )


@probe("13 round two", "prefs build --temperature 0")
def _():
    return expect_cli_error(
        ["prefs", "build", "--model", "tiny", "--temperature", "0", "--out", str(ROOT / "p-t0.jsonl")], "temperature"
    )


@probe("13 round two", "prefs build --out an existing folder")
def _():
    return expect_cli_error(["prefs", "build", "--model", "tiny", "--out", str(folder("p-outdir"))], "--out")


@probe("13 round two", "a .csv prompts file with a header")
def _():
    csv = ROOT / "p.csv"
    csv.write_text("prompt\nhello\n")
    return expect_error(lambda: venv(prompts=str(csv)), ".csv")


@probe("13 round two", "an empty prompts file")
def _():
    empty = ROOT / "empty.txt"
    empty.write_text("")
    return expect_error(lambda: venv(prompts=str(empty)), "empty.txt")


@probe("13 round two", "a surrogate character in a prompt")
def _():
    return expect_error(lambda: venv(prompts=["hi \udcff there"]), "surrogate")


@probe("13 round two", "reward returns the string '0.5'")
def _():
    env = venv(reward=lambda p, r: ["0.5"] * len(r), max_new_tokens=1)
    env.reset(seed=0)
    return expect_error(lambda: [env.step(np.ones(2, dtype=np.int64)) for _ in range(4)], "'0.5'")


@probe("13 round two", "reward returns True")
def _():
    env = venv(reward=lambda p, r: [True] * len(r), max_new_tokens=1)
    env.reset(seed=0)
    return expect_error(lambda: [env.step(np.ones(2, dtype=np.int64)) for _ in range(4)], "bool")


@probe("13 round two", "reward='vadr' (a typo)")
def _():
    return expect_error(lambda: venv(reward="vadr"), "reward='vadr'")


@probe("13 round two", "reward='emptydir' (a folder with no model)")
def _():
    return expect_error(lambda: venv(reward=str(folder("p-emptydir"))), "reward=")


@probe("13 round two", "temperature=1e-30")
def _():
    return expect_error(lambda: venv(temperature=1e-30).reset(seed=0), "temperature")


@probe("13 round two", "step with actions on the meta device")
def _():
    env = venv()
    env.reset(seed=0)
    return expect_error(lambda: env.step(torch.ones(2, dtype=torch.long, device="meta")), "meta")


@probe("13 round two", "single env step([1, 0])")
def _():
    env = gym.make(proxy_env.ENV_ID, model=tiny(), prompts=PROMPTS, max_new_tokens=4)
    env.reset(seed=0)
    return expect_error(lambda: env.step([1, 0]), "one action")


@probe("13 round two", "step after close (vector and single env)")
def _():
    env = venv()
    env.reset(seed=0)
    env.close()
    return expect_error(lambda: env.step(np.ones(2, dtype=np.int64)), "after close")


@probe("13 round two", "DISABLED: reset with an all-False mask first")
def _():
    env = venv(autoreset_mode="disabled")
    return expect_error(lambda: env.reset(options={"reset_mask": np.array([False, False])}), "selects no env")


@probe("13 round two", "DISABLED: partial first reset, then step")
def _():
    env = venv(autoreset_mode="disabled")
    env.reset(seed=0, options={"reset_mask": np.array([True, False])})
    return expect_error(lambda: env.step(np.ones(2, dtype=np.int64)), "have not started")


@probe("13 round two", "single env: step after the episode ended")
def _():
    env = gym.make(proxy_env.ENV_ID, model=tiny(), prompts=PROMPTS, max_new_tokens=1)
    env.reset(seed=0)
    env.step(1)
    return expect_error(lambda: env.step(1), "call reset()")


@probe("13 round two", "single env given autoreset_mode")
def _():
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gym.make(proxy_env.ENV_ID, model=tiny(), prompts=PROMPTS, max_new_tokens=2, autoreset_mode="next_step")
    said = any("autoreset_mode" in str(w.message) for w in caught)
    raise Outcome("ok" if said else "silent", "" if said else "no warning")


@probe("13 round two", "reset(options={'prompt_index': [0.7, 1.2]})")
def _():
    return expect_error(lambda: venv().reset(seed=0, options={"prompt_index": [0.7, 1.2]}), "prompt_index")


@probe("13 round two", "reset(options={'promptindex': [0, 1]}) (a typo)")
def _():
    return expect_error(lambda: venv().reset(seed=0, options={"promptindex": [0, 1]}), "prompt_index")


@probe("13 round two", "a checkpoint whose env_kwargs hold 'bogus'")
def _():
    path = copy_checkpoint("p-bogus")
    config = json.loads((path / "proxy_config.json").read_text())
    config["env_kwargs"]["bogus"] = 1
    (path / "proxy_config.json").write_text(json.dumps(config))
    return expect_cli_error(["generate", "--checkpoint", str(path), "--device", "cpu", "Hi"], "proxy_config.json")


@probe("13 round two", "rm train --pairs latin-1")
def _():
    pairs = ROOT / "latin1.jsonl"
    pairs.write_bytes('{"prompt": "caf\xe9", "chosen": "a", "rejected": "b"}\n'.encode("latin-1"))
    return expect_cli_error(["rm", "train", "--pairs", str(pairs), "--out", str(ROOT / "p-rm-l1")], "line 1")


@probe("13 round two", "train --reward nonexistent-rm")
def _():
    return expect_cli_error([*TRAIN, "--reward", "nonexistent-rm"], "reward=")


@probe("13 round two", "train --eval-prompts nonexistent.txt --eval-freq 64")
def _():
    return expect_cli_error([*TRAIN, "--eval-prompts", str(ROOT / "none.txt"), "--eval-freq", "64"], "eval_prompts=")


@probe("13 round two", "a kill in the save swap window, then train --resume")
def _():
    path = ROOT / "p-swap"
    old = ROOT / ".p-swap.old-killed"
    old.mkdir(exist_ok=True)
    shutil.copytree(checkpoint(), old / "p-swap", dirs_exist_ok=True)
    return expect_cli_error([*TRAIN, "--resume", str(path)], "move it back")


@probe("13 round two", "...then a new save puts it back and cleans the leftovers")
def _():
    from agents.saving.checkpoint import load_checkpoint, save_checkpoint

    path = ROOT / "p-swap"
    (ROOT / ".p-swap.tmp-killed").mkdir(exist_ok=True)
    model = load_checkpoint(checkpoint(), device="cpu").model
    save_checkpoint(model, path, env_kwargs={"model": "tiny"})
    left = [p.name for p in ROOT.iterdir() if p.name.startswith(".p-swap.")]
    raise Outcome("ok" if not left else "silent", "" if not left else f"left {left}")


@probe("13 round two", "re-save keeps the folder's mode")
def _():
    from agents.saving.checkpoint import load_checkpoint, save_checkpoint

    path = copy_checkpoint("p-mode")
    os.chmod(path, 0o755)
    save_checkpoint(load_checkpoint(path, device="cpu").model, path, env_kwargs={"model": "tiny"})
    mode = path.stat().st_mode & 0o777
    raise Outcome("ok" if mode == 0o755 else "silent", f"mode {oct(mode)}")


@probe("13 round two", "PROXY_ENV_CACHE is a file")
def _():
    from proxy_env import assets

    afile = ROOT / "cachefile"
    afile.write_text("")
    saved = os.environ.get(assets.CACHE_ENV_VAR)
    os.environ[assets.CACHE_ENV_VAR] = str(afile)
    try:
        return expect_error(assets.cache_dir, "is a file")
    finally:
        if saved is None:
            os.environ.pop(assets.CACHE_ENV_VAR)
        else:
            os.environ[assets.CACHE_ENV_VAR] = saved


@probe("13 round two", "bench --frontier-from a results.csv cut mid-row")
def _():
    cut = ROOT / "cut.csv"
    cut.write_text("agent,kind,reward\nalways-accept,baseline,0.3\nbest-of-2,best-of-n\n")
    return expect_cli_error(
        ["bench", "--quick", "--model", "tiny", "--frontier-from", str(cut), "--out", str(ROOT / "p-cut")], "line 3"
    )


@probe("13 round two", "a tilt data file of the right key, tensors of another width")
def _():
    from agents.tilt.data import Positions, load_positions, save_positions

    z = torch.zeros
    save_positions(ROOT / "wide.pt", {"k": 1}, Positions(z(2, 4).half(), z(2, 3).long(), z(2, 3), z(2, 5), z(2, 3)))
    return expect_error(lambda: load_positions(ROOT / "wide.pt", {"k": 1}), "inconsistent shapes")


def train_cfg_of(cls: Any, **kwargs: Any) -> Any:
    """A backend's config (``cls``) on the tiny model from flat keywords: the env's settings go into ``env``."""
    from dataclasses import fields

    from proxy_env.config import EnvConfig

    base = dict(model="tiny", prompts=PROMPTS, max_new_tokens=6, num_envs=2, seed=0, policy_device="cpu")
    merged = {**base, **kwargs}
    names = {f.name for f in fields(EnvConfig)}
    return cls(
        env=EnvConfig(**{k: v for k, v in merged.items() if k in names}),
        **{k: v for k, v in merged.items() if k not in names},
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="write the table (markdown) here")
    parser.add_argument("-k", default="", help="run only probes whose name contains this")
    args = parser.parse_args()
    _prepare_other_model()
    rows = []
    start = time.perf_counter()
    for category, name, fn in PROBES:
        if args.k and args.k not in name:
            continue
        t0 = time.perf_counter()
        try:
            result, note = fn(), ""
        except Outcome as outcome:
            result, note = outcome.result, outcome.note
        except Exception as exc:
            result, note = "unclear", "probe crashed: " + "".join(traceback.format_exception_only(exc)).strip()
        rows.append((category, name, result, " ".join(str(note).split())[:160], time.perf_counter() - t0))
        print(
            f"{result:>9}  {category:<12} {name}  ({time.perf_counter() - t0:.1f} s)  {rows[-1][3][:100]}", flush=True
        )
    counts = Counter(r[2] for r in rows)
    order = ("clear", "unclear", "silent", "ok", "data lost")
    summary = ", ".join(f"{counts.get(k, 0)} {k}" for k in order)
    print(f"\n{len(rows)} probes in {time.perf_counter() - start:.0f} s: {summary}")
    if args.out:
        lines = [
            "# Reliability probes\n",
            f"`python benchmarks/probe_reliability.py` on the tiny model, CPU, 1 thread: "
            f"**{len(rows)} probes: {summary}**.\n",
            "| category | probe | result | message |",
            "|---|---|---|---|",
        ]
        lines += [f"| {c} | {n} | {r} | {m.replace('|', '/')} |" for c, n, r, m, _ in rows]
        Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    shutil.rmtree(ROOT, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
