"""The device script's benchmarks: every engine figure the GPU work needs, in one run, as results.md + results.json.

    bash benchmarks/gpu/run.sh                                    # on the device machine (see run.sh)
    python benchmarks/gpu/bench_gpu.py --smoke --out /tmp/smoke   # any CPU: the tiny model, small sizes (CI runs it)

Each stage prints one progress line and adds a section to the results; a stage that fails is recorded as failed
(with its error) and the next one runs, so one bad stage costs its own minutes, not the run's.

* **machine**: torch, CUDA, the device, the model and how it was built. ``--model random`` is
  SmolLM2-135M-Instruct's architecture (``smollm2_config.json``, read from the converted default model) with
  random weights and the real tokenizer: **random weights, speed only**; a random model's pools hold one
  token more or less often than the real one's, so forced commits per decision are reported beside it.
* **env**: ``benchmarks/bench_env.py``'s side-by-side measure (the env in each engine mode against a bare
  one-token Hugging Face forward at the same batch and context) at each ``--num-envs``: decisions/s, the
  ratio, forwards per step, rows fed per decision, forced commits per decision.
* **host reads**: device-to-host reads per env step (``HostReads``), per mode.
* **reward share**: the share of a step spent in the reward (VADER) at the largest batch: steps with VADER, in
  the env's process and in worker processes (``reward_workers``), against the same steps with a zero reward.
* **sb3** and **tilt**: a few PPO updates and a short tilt collection + fit on the device; decisions/s and
  whether the weights changed.
* **torch_ppo**: ``--backend torch`` (agents/torch_ppo.py), rollouts and updates on the device: decisions/s.
* **compiled**: the static-batch step eager and through ``torch.compile`` (``reduce-overhead``: CUDA graphs),
  side by side at 1,024 envs (``proxy_env.engine.row_cache.compile_decode_step``).
* **large**: a 1B-class Llama config (TinyLlama-1.1B's shape, SmolLM2's tokenizer), **random weights, speed only**,
  at 256 and 1,024 envs, side by side with its bare forward.
* **memory**: device memory over ``--memory-steps`` steps at 256 envs (flat, or the cache leaks).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from bench_env import MODES, Args, _venv, side_by_side  # noqa: E402  (the benchmarks folder is not a package)
from bench_host_reads import count  # noqa: E402

from proxy_env.engine.lm import FrozenLM  # noqa: E402

CONFIG = Path(__file__).with_name("smollm2_config.json")  # SmolLM2-135M-Instruct's config.json, weights not included


def build_lm(model: str, device: str, dtype: str | None) -> tuple[FrozenLM, str]:
    """The LLM and how it was built: ``tiny``, ``random`` (SmolLM2's architecture, random weights) or a path/name."""
    from proxy_env.engine.tiny import tiny_lm

    if model == "tiny":
        return tiny_lm(device=device), "tiny random model (hidden 64, 2 layers): code paths only"
    if model == "random":
        from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

        from proxy_env.assets import default_tokenizer_dir

        config = LlamaConfig(**{k: v for k, v in json.loads(CONFIG.read_text()).items() if not k.startswith("_")})
        torch.manual_seed(0)
        net = LlamaForCausalLM(config).eval()
        tokenizer = AutoTokenizer.from_pretrained(os.environ.get("PROXY_ENV_TOKENIZER") or default_tokenizer_dir())
        lm = FrozenLM(net, tokenizer, device=device, dtype=dtype)
        return lm, "SmolLM2-135M-Instruct architecture, RANDOM WEIGHTS: speed only"
    return FrozenLM(model, device=device, dtype=dtype), f"{model} (trained weights)"


class Results:
    """The run's sections, written after every stage (a run cut short still leaves what it measured)."""

    def __init__(self, out: Path, meta: dict[str, Any]) -> None:
        self.out, self.meta, self.sections = out, meta, []  # type: ignore[var-annotated]
        out.mkdir(parents=True, exist_ok=True)

    def stage(self, name: str, run: Callable[[], tuple[dict[str, Any], list[str]]]) -> None:
        start = time.perf_counter()
        print(f"[{time.strftime('%H:%M:%S')}] {name} ...", flush=True)
        try:
            data, lines = run()
            status = "ok"
        except Exception as exc:  # a failed stage is a result too; the next stage still runs
            data, lines, status = (
                {"error": f"{type(exc).__name__}: {exc}"},
                ["```", traceback.format_exc(), "```"],
                "failed",
            )
        seconds = time.perf_counter() - start
        self.sections.append(
            {"stage": name, "status": status, "seconds": round(seconds, 1), "data": data, "lines": lines}
        )
        print(f"[{time.strftime('%H:%M:%S')}] {name}: {status} in {seconds:.0f} s", flush=True)
        self.write()

    def write(self) -> None:
        (self.out / "results.json").write_text(json.dumps({"meta": self.meta, "sections": self.sections}, indent=1))
        md = ["# GPU device script results", ""] + [f"* {k}: {v}" for k, v in self.meta.items()] + [""]
        for s in self.sections:
            md += [f"## {s['stage']} ({s['status']}, {s['seconds']} s)", "", *s["lines"], ""]
        (self.out / "results.md").write_text("\n".join(md))


def env_stage(lm: FrozenLM, args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    bench = Args(steps=args.steps, rounds=2, warmup=args.warmup, max_new_tokens=args.max_new_tokens)
    rows, lines = (
        [],
        [
            "| num_envs | mode | decisions/s | bare decisions/s | env / bare | forwards/step | rows fed / decision | forced / decision |",
            "|---|---|---|---|---|---|---|---|",
        ],
    )
    for num_envs in args.num_envs:
        for mode in args.modes:
            r = side_by_side(lm, num_envs, mode, bench)
            r.update(num_envs=num_envs, mode=mode)
            rows.append(r)
            lines.append(
                f"| {num_envs} | {mode} | {r['decisions/s']:,.0f} | {r['bare decisions/s']:,.0f} | "
                f"{r['decisions/s'] / r['bare decisions/s']:.2f} | {r['forwards/step']:.2f} | "
                f"{r['row-fwd/decision']:.2f} |"
            )
            print(f"    {lines[-1]}", flush=True)
    return {"rows": rows}, lines


def pools_stage(lm: FrozenLM, args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    """Forced commits per decision of this model (random weights change how often a pool holds one token)."""
    num_envs = min(64, max(args.num_envs))
    venv = _venv(lm, num_envs, args.max_new_tokens)
    rng = np.random.default_rng(1)
    venv.reset(seed=1)
    forced = decisions = episodes = 0
    for _ in range(2 * args.max_new_tokens):
        _, _, term, trunc, info = venv.step((rng.random(num_envs) >= 0.3).astype(np.int64))
        end = info.get("final_info", {})
        for i in np.flatnonzero(term | trunc):
            forced, decisions, episodes = (
                forced + int(end["forced_commits"][i]),
                decisions + int(end["decisions"][i]),
                episodes + 1,
            )
    venv.close()
    share = forced / max(1, decisions)
    line = f"{num_envs} envs, {episodes} episodes: {forced:,} forced commits for {decisions:,} decisions = **{share:.3f} per decision**"
    return {"forced": forced, "decisions": decisions, "episodes": episodes, "per_decision": share}, [line]


def host_reads_stage(lm: FrozenLM, args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    num_envs = max(args.num_envs)
    data, lines = {}, [f"{num_envs} envs", "", "| mode | host reads / step | the most frequent |", "|---|---|---|"]
    for mode in args.modes:
        total, top = count(lm, num_envs, mode, max(3, args.steps // 4))
        data[mode] = {"per_step": total, "top": top}
        lines.append(f"| {mode} | {total:.1f} | {', '.join(f'{k} {v:.1f}' for k, v in top.items())} |")
    return data, lines


def _zero_reward(prompts: list[str], responses: list[str]) -> list[float]:
    return [0.0] * len(responses)


def reward_stage(lm: FrozenLM, args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    """Steps with VADER (in the env's process, then in worker processes: ``reward_workers``) against the same steps
    with a zero reward (prefix+forced_steps, the largest batch)."""
    from proxy_env.rewards import resolve_reward
    from proxy_env.rewards.parallel import ProcessPoolReward

    num_envs, mode = max(args.num_envs), "prefix+forced_steps"
    workers = 2 if args.smoke else max(2, min(8, (os.cpu_count() or 2) - 2))
    seconds = {}
    sources: dict[str, Callable[[], Any]] = {
        "zero": lambda: _zero_reward,
        "vader": lambda: resolve_reward("default"),
        f"vader, {workers} workers": lambda: ProcessPoolReward("vader", workers),
    }
    for name, make in sources.items():
        reward = make()
        venv = _venv(lm, num_envs, args.max_new_tokens, **MODES[mode])
        venv.unwrapped.reward_fn = reward  # the same env settings; only the reward source differs
        rng = np.random.default_rng(0)
        venv.reset(seed=0)
        for _ in range(args.warmup):
            venv.step((rng.random(num_envs) >= 0.3).astype(np.int64))
        start = time.perf_counter()
        for _ in range(args.steps):
            venv.step((rng.random(num_envs) >= 0.3).astype(np.int64))
        seconds[name] = time.perf_counter() - start
        venv.close()
        if isinstance(reward, ProcessPoolReward):
            reward.close()
    shares = {name: max(0.0, (t - seconds["zero"]) / t) for name, t in seconds.items() if name != "zero"}
    lines = [f"{num_envs} envs, {mode}, {args.steps} steps: {seconds['zero']:.2f} s with a zero reward"]
    lines += [
        f"* {name}: {seconds[name]:.2f} s: **the reward is {share:.0%} of a step** (target: at most 20%)"
        for name, share in shares.items()
    ]
    return {"seconds": seconds, "share": shares, "num_envs": num_envs}, lines


class _InitialWeights(BaseCallback):
    """Keeps the policy's weights as training starts, to check that training changed them."""

    def _on_training_start(self) -> None:
        self.weights = [p.detach().clone() for p in self.model.policy.parameters()]

    def _on_step(self) -> bool:
        return True


def sb3_stage(lm: FrozenLM, args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    from agents.train import SB3Config, train
    from proxy_env.config import EnvConfig

    num_envs = max(args.num_envs[:2]) if args.smoke else 256
    env = EnvConfig(prompts="default-eval", max_new_tokens=args.max_new_tokens, observation="prefix", forced_steps=True)
    cfg = SB3Config(
        env=env,
        num_envs=num_envs,
        total_timesteps=num_envs * 32 * 2,
        n_steps=32,
        batch_size=min(1024, num_envs * 32),
        policy_device=lm.device.type,
        eval_prompts="",
        algo_kwargs={"n_epochs": 2},
    )
    initial = _InitialWeights()
    start = time.perf_counter()
    result = train(cfg, model=lm, reward=lambda p, r: [len(x) / 100 for x in r], callbacks=[initial])
    seconds = time.perf_counter() - start
    after = list(result.model.policy.parameters())
    changed = any(not torch.equal(a.detach(), b) for a, b in zip(after, initial.weights))
    steps = result.model.num_timesteps
    line = (
        f"SB3 PPO, {num_envs} envs, prefix+forced_steps: {steps:,} steps in {seconds:.1f} s = "
        f"{steps / seconds:,.0f} steps/s; weights changed: {changed}"
    )
    return {"steps": steps, "seconds": seconds, "changed": changed, "num_envs": num_envs}, [line]


def compiled_stage(lm: FrozenLM, args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    """The static-batch step eager and through torch.compile (CUDA graphs on a GPU), side by side, same batch."""
    from proxy_env.engine.row_cache import compile_decode_step

    num_envs = max(args.num_envs[:2]) if args.smoke else 1024
    mode = "prefix+forced_steps"
    bench = Args(steps=args.steps, rounds=2, warmup=max(args.warmup, 3), max_new_tokens=args.max_new_tokens)
    data, lines = {}, ["| step | decisions/s | bare decisions/s | env / bare | compile s |", "|---|---|---|---|---|"]
    static = lm.static_batch
    for name in ("eager", "compiled"):
        start = time.perf_counter()
        if name == "compiled":
            compile_decode_step(lm, mode="reduce-overhead" if lm.device.type == "cuda" else "default")
        lm.static_batch = True  # the GPU's default; on the CPU (smoke) it makes the compiled step run
        try:
            r = side_by_side(lm, num_envs, mode, bench)  # the warm-up steps compile (and capture the graph)
        finally:
            lm.static_batch, lm.decode_step_model = static, None  # the stages after this one run as before
        r["seconds"] = time.perf_counter() - start
        data[name] = r
        lines.append(
            f"| {name} | {r['decisions/s']:,.0f} | {r['bare decisions/s']:,.0f} | "
            f"{r['decisions/s'] / r['bare decisions/s']:.2f} | {r['seconds']:.0f} (stage) |"
        )
        print(f"    {lines[-1]}", flush=True)
    lines.insert(0, f"{num_envs} envs, {mode}, static batch; the bare forward is eager in both rows")
    return data, lines


# a 1B-class Llama (TinyLlama-1.1B's shape: hidden 2048, 22 layers, 32 heads, 4 key/value heads) over SmolLM2's
# tokenizer (vocabulary 49,152): random weights, speed only
LARGE = {
    "hidden_size": 2048,
    "intermediate_size": 5632,
    "num_hidden_layers": 22,
    "num_attention_heads": 32,
    "num_key_value_heads": 4,
}


def large_stage(lm: FrozenLM, args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    """The env on a 1B-class Llama config with random weights (speed only), side by side with its bare forward."""
    from transformers import LlamaConfig, LlamaForCausalLM

    base = lm.model.config.to_dict()
    shape = {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 3} if args.smoke else LARGE
    config = LlamaConfig(**{**{k: v for k, v in base.items() if k in LlamaConfig().to_dict()}, **shape})
    torch.manual_seed(0)
    big = FrozenLM(LlamaForCausalLM(config).eval(), lm.tokenizer, device=lm.device.type, dtype=str(lm.dtype)[6:])
    params = big.num_parameters
    bench = Args(steps=args.steps, rounds=2, warmup=args.warmup, max_new_tokens=args.max_new_tokens)
    data: dict[str, Any] = {"parameters": params}
    lines = [
        f"Llama, {params / 1e9:.2f} B parameters, RANDOM WEIGHTS (speed only), {big.dtype}",
        "",
        "| num_envs | mode | decisions/s | bare decisions/s | env / bare |",
        "|---|---|---|---|---|",
    ]
    for num_envs in args.num_envs[-2:] if args.smoke else (256, 1024):
        r = side_by_side(big, num_envs, "prefix+forced_steps", bench)
        data[str(num_envs)] = r
        lines.append(
            f"| {num_envs} | prefix+forced_steps | {r['decisions/s']:,.0f} | {r['bare decisions/s']:,.0f} | "
            f"{r['decisions/s'] / r['bare decisions/s']:.2f} |"
        )
        print(f"    {lines[-1]}", flush=True)
    del big
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return data, lines


def memory_stage(lm: FrozenLM, args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    """Device memory (CUDA: allocated; CPU: the process's RSS) over many steps: it must stay flat."""
    from bench_env import _rss_mb

    cuda = lm.device.type == "cuda"
    num_envs, steps = (4, 200) if args.smoke else (256, args.memory_steps)
    venv = _venv(lm, num_envs, args.max_new_tokens, observation="prefix", forced_steps=True)
    venv.reset(seed=0)
    rng = np.random.default_rng(0)

    def used() -> float:
        return torch.cuda.memory_allocated() / 2**20 if cuda else _rss_mb()

    marks, start, t = {}, time.perf_counter(), 0
    while t < steps:
        t += 1
        venv.step((rng.random(num_envs) >= 0.3).astype(np.int64))
        late = time.perf_counter() - start > args.memory_seconds  # the device's minutes are few: stop, say where
        if t in (steps // 10, steps // 2, steps) or late:
            marks[t] = (used(), venv.unwrapped.decoder.cache.length)
        if late:
            break
    steps, seconds = t, time.perf_counter() - start
    venv.close()
    what = "allocated on the GPU" if cuda else "process RSS"
    lines = [f"{num_envs} envs, prefix+forced_steps, {steps:,} steps in {seconds:.0f} s ({what}):", ""]
    lines += [f"* after {t:,} steps: {mb:,.1f} MiB, cache length {length}" for t, (mb, length) in marks.items()]
    per_env = marks[steps][0] / num_envs
    lines.append(f"* {per_env:.2f} MiB per env (the model's weights included)")
    return {"marks": {str(k): v for k, v in marks.items()}, "seconds": seconds, "per_env_mb": per_env}, lines


def _keep(into: list[Any], agent: Any, stats: Any) -> None:
    into.append(stats)


def torch_ppo_stage(lm: FrozenLM, args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    """Our CleanRL-style PPO (agents/torch_ppo.py): observations, rollouts and updates stay on the device."""
    from agents.torch_ppo import TorchPPOConfig, train_torch_ppo
    from proxy_env.config import EnvConfig

    data, lines = (
        {},
        ["| num_envs | decisions | rollout s | update s | decisions/s (rollouts + updates) |", "|---|---|---|---|---|"],
    )
    for num_envs in args.num_envs[-2:] if args.smoke else (1024, 4096):
        env = EnvConfig(
            prompts="default-eval", max_new_tokens=args.max_new_tokens, observation="prefix", forced_steps=True
        )
        cfg = TorchPPOConfig(
            env=env,
            num_envs=num_envs,
            n_steps=16,
            total_timesteps=num_envs * 16 * 3,
            batch_size=min(4096, num_envs * 16),
            n_epochs=2,
            policy_device=lm.device.type,
        )
        stats: list[Any] = []
        train_torch_ppo(cfg, model=lm, reward=lambda p, r: [len(x) / 100 for x in r], on_update=partial(_keep, stats))
        timed = stats[1:]  # the first rollout warms up (allocation, kernels)
        decisions = sum(num_envs * 16 for _ in timed)
        rollout, update = sum(s.rollout_s for s in timed), sum(s.update_s for s in timed)
        rate = decisions / (rollout + update)
        data[str(num_envs)] = {"decisions": decisions, "rollout_s": rollout, "update_s": update, "per_s": rate}
        lines.append(f"| {num_envs} | {decisions:,} | {rollout:.2f} | {update:.2f} | {rate:,.0f} |")
        print(f"    {lines[-1]}", flush=True)
    return data, lines


def tilt_stage(lm: FrozenLM, args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    from agents.tilt.backend import TiltConfig, train_tilt
    from proxy_env.config import EnvConfig

    num_envs = max(args.num_envs[:2]) if args.smoke else 256
    cfg = TiltConfig(
        env=EnvConfig(prompts="default-eval", max_new_tokens=args.max_new_tokens, observation="prefix", kl_coef=0.2),
        num_envs=num_envs,
        total_timesteps=num_envs * 16,
        tilt_epochs=2,
        policy_device=lm.device.type,
    )
    start = time.perf_counter()
    result = train_tilt(cfg, model=lm, reward="default")
    seconds = time.perf_counter() - start
    kl = [round(r.kl, 4) for r in result.kl_history]
    line = f"tilt, {num_envs} envs: {cfg.total_timesteps:,} decisions collected and 2 epochs fitted in {seconds:.1f} s; KL per position by epoch {kl}"
    return {"seconds": seconds, "kl": kl, "num_envs": num_envs}, [line]


def value_stage(lm: FrozenLM, args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    """Issue 31's value data at a GPU batch (``collect_value_data``: the LLM's own sampler, every response scored by
    VADER, labelled positions): responses per second, the first batch (warm-up) left out of the rate."""
    from agents.value.data import collect_value_data
    from agents.value.run import ValueConfig
    from proxy_env.prompts import load_prompts
    from proxy_env.rewards import resolve_reward

    samples, batch_prompts, batches = (8, 2, 2) if args.smoke else (64, 16, 4)
    cfg = ValueConfig(samples=samples, max_new_tokens=min(32, args.max_new_tokens), num_prompts=batch_prompts * batches)
    prompts = load_prompts(cfg.prompts)[: cfg.num_prompts]
    max_new_tokens = cfg.max_new_tokens
    key = cfg.data_key(getattr(lm, "name", args.model))
    stamps = [time.perf_counter()]
    data = collect_value_data(
        lm,
        prompts,
        resolve_reward(cfg.reward),
        key,
        batch_prompts=batch_prompts,
        progress=lambda done, total: stamps.append(time.perf_counter()),
    )
    rows = batch_prompts * samples
    rate = rows * (batches - 1) / (stamps[-1] - stamps[1])
    line = (
        f"value data, {rows:,} responses at once ({batch_prompts} prompts x {samples} samples, {max_new_tokens} "
        f"tokens): {rate:,.0f} responses/s after the first batch ({stamps[1] - stamps[0]:.1f} s); "
        f"{len(data):,} labelled positions; the 40,768 responses the CPU-fitted head learned from would take {40768 / rate:,.0f} s"
    )
    return {"responses_per_s": rate, "rows": rows, "first_batch_s": stamps[1] - stamps[0], "positions": len(data)}, [
        line
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny model, tiny sizes: checks the script runs (CI, any CPU)")
    p.add_argument("--model", default=None, help="'random' (default on a GPU), 'tiny' (default with --smoke) or a path")
    p.add_argument("--dtype", default=None, help="LLM dtype (default: bfloat16 on CUDA, float32 on CPU)")
    p.add_argument("--num-envs", type=int, nargs="+", default=None, help="batch sizes (default: 1 64 512 4096)")
    p.add_argument(
        "--modes", nargs="+", choices=list(MODES), default=["candidate+forced_steps", "prefix+forced_steps", "prefix"]
    )
    p.add_argument("--steps", type=int, default=None, help="timed steps per configuration (default: 40; smoke: 4)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 5; smoke: 1)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--memory-steps", type=int, default=20000, help="steps of the memory stage (256 envs)")
    p.add_argument("--memory-seconds", type=float, default=60.0, help="the memory stage stops here, at any step")
    p.add_argument(
        "--stages",
        nargs="+",
        # the table first: a run cut short by the device's minutes keeps what matters most (results are
        # written after every stage)
        default=[
            "env",
            "host_reads",
            "pools",
            "torch_ppo",
            "sb3",
            "reward",
            "large",
            "tilt",
            "value",
            "memory",
            "compiled",
        ],
    )
    p.add_argument("--out", default=os.environ.get("OUT", "runs/gpu"), help="folder for results.md and results.json")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    args.model = args.model or ("tiny" if args.smoke or not cuda else "random")
    args.num_envs = args.num_envs or ([1, 4] if args.smoke else [1, 64, 512, 4096])
    args.steps = args.steps or (4 if args.smoke else 40)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.smoke else 5)
    if args.smoke:
        args.max_new_tokens = min(args.max_new_tokens, 8)
    if not cuda:
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    start = time.perf_counter()
    lm, how = build_lm(args.model, device, args.dtype)
    meta = {
        "device": torch.cuda.get_device_name()
        if cuda
        else f"CPU ({platform.processor() or platform.machine()}), {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "model": how,
        "dtype": str(lm.dtype),
        "load_s": round(time.perf_counter() - start, 1),
        "args": {k: v for k, v in vars(args).items()},
    }
    print(f"model: {how} on {meta['device']} ({meta['dtype']}), loaded in {meta['load_s']} s", flush=True)
    results = Results(Path(args.out), meta)
    stages = {
        "pools": pools_stage,
        "env": env_stage,
        "host_reads": host_reads_stage,
        "reward": reward_stage,
        "sb3": sb3_stage,
        "torch_ppo": torch_ppo_stage,
        "tilt": tilt_stage,
        "value": value_stage,
        "compiled": compiled_stage,
        "large": large_stage,
        "memory": memory_stage,
    }
    for name in args.stages:
        results.stage(name, lambda fn=stages[name]: fn(lm, args))
    failed = [s["stage"] for s in results.sections if s["status"] != "ok"]
    print(
        f"done in {time.perf_counter() - start:.0f} s; results in {args.out}"
        + (f"; FAILED: {failed}" if failed else "")
    )
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
