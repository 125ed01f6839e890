"""``proxy-rlhf leaderboard``: every agent trained at the same decision budget on one task, then benchmarked together.

One :class:`LeaderboardConfig` describes a run (it is saved beside the results as ``leaderboard.json``).
For the task's env id (:mod:`proxy_env.tasks`) each agent of :data:`AGENTS` is trained for
``decisions`` proxy decisions on the task's training prompts by its backend (SB3, the tilt recipe,
RLlib, tianshou), saved in the checkpoint format every backend shares, and then all of them are
evaluated in one :func:`agents.eval.bench.run_bench` on the task's held-out prompts with the same
seeds: always-accept, random-reject and best-of-N (the frontier φ is measured against) run there. An
agent whose training fails is a row too, with its error. With ``top_seeds`` the best trained agents
are trained again with the next seed and benchmarked against the first run's best-of-N rows
(``frontier_from``). :mod:`agents.eval.board` writes the task's section of ``LEADERBOARD.md``.

Every trained agent acts by sampling its policy at evaluation (``proxy_actions=("sample",)``): the
stochastic policy is what PPO-family and tilt agents optimise and what the exact KL is computed for;
a DQN-family agent's sampled policy is its ε-greedy one.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import shlex
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.eval.board import Round, TrainedAgent, benched_agent
from agents.eval.results import BenchConfig, BenchResult, Progress
from agents.eval.resume import EVALS, RunLedger, check_resumable, record_path, settings_digest
from agents.training import check_int, check_number, help_text
from proxy_env.assets import atomic_write_text
from proxy_env.config import EnvConfig
from proxy_env.errors import ConfigError, did_you_mean
from proxy_env.tasks import get_task

# backend -> (module, config class, train function)
BACKENDS = {
    "sb3": ("agents.train", "SB3Config", "train"),
    "tilt": ("agents.tilt.backend", "TiltConfig", "train_tilt"),
    "rllib": ("agents.rllib.backend", "RLlibConfig", "agents.rllib.train:train_rllib"),
    "tianshou": ("agents.tianshou_backend", "TianshouConfig", "train_tianshou"),
}


@dataclass(frozen=True)
class AgentSpec:
    """How the leaderboard trains one agent: its backend, that backend's settings and its env settings."""

    backend: str
    settings: dict[str, Any] = field(default_factory=dict)
    env: dict[str, Any] = field(default_factory=dict)  # beyond the task's prompts and reward
    shares_llm: bool = True  # trained in this process on the loaded LLM (RLlib's runners load their own)


def _dqn(algo: str) -> AgentSpec:
    return AgentSpec("sb3", {"algo": algo, "algo_kwargs": {"learning_starts": 256, "train_freq": 4}})


# The README's swappable algorithms, each as its backend trains it by default (SB3: the paper's "candidate"
# observation); "ppo-kl" is the demo's PPO recipe (prefix observation, shaping, the exact KL charge); "tilt" is
# added once per β of LeaderboardConfig.betas.
AGENTS: dict[str, AgentSpec] = {
    "ppo": AgentSpec("sb3", {"algo": "ppo"}),
    "ppo-kl": AgentSpec(
        "sb3",
        {
            "algo": "ppo",
            "n_steps": 64,
            "batch_size": 256,
            "learning_rate": 1e-3,
            "algo_kwargs": {"n_epochs": 4, "gae_lambda": 0.0, "ent_coef": 0.0},
        },
        {"observation": "prefix", "reward_shaping": True},
    ),
    "a2c": AgentSpec("sb3", {"algo": "a2c"}),
    "dqn": _dqn("dqn"),
    "qrdqn": _dqn("qrdqn"),
    "recurrentppo": AgentSpec("sb3", {"algo": "recurrentppo"}),
    "trpo": AgentSpec("sb3", {"algo": "trpo"}),
    "tilt": AgentSpec(
        "tilt",
        {"learning_rate": 3e-3, "batch_size": 64, "tilt_epochs": 12, "num_envs": 32},
        {"observation": "prefix"},
    ),
    "rllib-ppo": AgentSpec("rllib", {"algo": "ppo", "num_env_runners": 2}, shares_llm=False),
    "tianshou-ppo": AgentSpec("tianshou", {}),
}
SMOKE_AGENTS = ("ppo", "tilt")
# n_steps per env of the on-policy SB3 agents (capped by decisions / num_envs): 16 envs x 128 = 2,048 decisions per
# update, 8 updates in 16,384 decisions (SB3's 2,048 per env would be one update of 32,768 decisions, twice the budget)
ON_POLICY_ROLLOUT = {"ppo": 128, "trpo": 128, "recurrentppo": 128}


@dataclass
class LeaderboardConfig:
    """One leaderboard run: a task, a budget, the agents and the seeds."""

    task: str = field(default="sentiment", metadata=help_text("task name or env id (proxy_env.tasks)"))
    decisions: int = field(default=16384, metadata=help_text("training budget of every agent, in proxy decisions"))
    agents: tuple[str, ...] = field(default=tuple(AGENTS), metadata=help_text("agents to train (see AGENTS)"))
    seed: int = field(default=0, metadata=help_text("training seed of the first run (and every sampler's)"))
    top_seeds: int = field(
        default=3, metadata=help_text("the best N trained agents are trained again with seed + 1 (0: none)")
    )
    betas: tuple[float, ...] = field(default=(0.1, 0.3), metadata=help_text("β of each tilt agent"))
    kl_coef: float = field(default=0.05, metadata=help_text("β of the ppo-kl agent's KL charge"))
    num_envs: int = field(default=16, metadata=help_text("envs per agent (the tilt recipe uses 32)"))
    model: str = field(default="default", metadata=help_text("frozen LLM ('default', 'tiny', a hub id or a path)"))
    max_new_tokens: int = field(default=32, metadata=help_text("response budget, in training and evaluation"))
    num_prompts: int | None = field(default=None, metadata=help_text("first N held-out prompts (None: all)"))
    n: tuple[int, ...] = field(default=(2, 4, 8, 16), metadata=help_text("best-of-N sizes (the frontier)"))
    bon_reference: int = field(default=16, metadata=help_text("extra samples per prompt for best-of-N's KL"))
    batch_size: int = field(default=32, metadata=help_text("prompts generated at once in evaluation"))
    out: str = field(default="runs/leaderboard", metadata=help_text("output folder (one subfolder per task)"))
    board: str | None = field(
        default=None,
        metadata=help_text("LEADERBOARD.md to (re)write from every task under out (None: <out>/LEADERBOARD.md)"),
    )
    resume: bool = field(
        default=False,
        metadata=help_text(
            "continue a stopped run of the same settings under <out>/<task>: agents already trained and rounds "
            "already benchmarked are read from disk, not redone"
        ),
    )
    rebuild: bool = field(
        default=False,
        metadata=help_text("train nothing: write the task's board again from what <out>/<task> holds"),
    )
    smoke: bool = field(
        default=False,
        metadata=help_text("the tiny model, agents ppo and tilt, 256 decisions, 4 prompts (fields left at defaults)"),
    )

    def resolved(self) -> LeaderboardConfig:
        """This config with ``smoke`` applied and every value checked (before anything loads)."""
        cfg = self
        if self.smoke:
            defaults = {f.name: f.default for f in dataclasses.fields(LeaderboardConfig)}
            small: dict[str, Any] = {
                "model": "tiny",
                "agents": SMOKE_AGENTS,
                "decisions": 256,
                "top_seeds": 0,
                "num_envs": 4,
                "max_new_tokens": 6,
                "num_prompts": 4,
                "n": (2, 4),
                "bon_reference": 4,
                "betas": (0.3,),
            }
            cfg = dataclasses.replace(self, **{k: v for k, v in small.items() if getattr(self, k) == defaults[k]})
        get_task(cfg.task)
        unknown = [a for a in cfg.agents if a not in AGENTS]
        if unknown or not cfg.agents:
            raise ConfigError(
                f"agents={list(cfg.agents)!r}: each must be one of {list(AGENTS)}." + did_you_mean(unknown[0], AGENTS)
                if unknown
                else f"agents=[] names no agent; pass some of {list(AGENTS)}."
            )
        for name, minimum in (("decisions", 1), ("num_envs", 1), ("max_new_tokens", 1), ("bon_reference", 1)):
            check_int(name, getattr(cfg, name), minimum=minimum)
        check_int("top_seeds", cfg.top_seeds, minimum=0)
        check_int("batch_size", cfg.batch_size, minimum=1)
        check_number("kl_coef", cfg.kl_coef, lambda v: v > 0, "> 0 (the ppo-kl agent's KL charge)")
        if not cfg.betas or any(not isinstance(b, (int, float)) or not b > 0 for b in cfg.betas):
            raise ConfigError(
                f"betas={list(cfg.betas)!r}: give one or more β > 0 for the tilt agents (--betas 0.1 0.3)."
            )
        if not cfg.n or any(not isinstance(x, int) or x < 2 for x in cfg.n):
            raise ConfigError(f"n={list(cfg.n)!r}: best-of-N sizes must be ints >= 2 (the frontier φ is measured on).")
        return cfg

    def runs(self) -> list[tuple[str, AgentSpec, dict[str, Any]]]:
        """(row name, spec, extra env settings) of every agent: one tilt row per β."""
        out = []
        for name in self.agents:
            spec = AGENTS[name]
            if name == "tilt":
                out += [(f"tilt-b{b:g}", spec, {"kl_coef": float(b)}) for b in self.betas]
            elif name == "ppo-kl":
                out.append((name, spec, {"kl_coef": float(self.kl_coef)}))
            else:
                out.append((name, spec, {}))
        return out


@dataclass
class TaskBoard:
    """What :func:`run_leaderboard` returns: the trained agents and the bench of each seed round."""

    config: LeaderboardConfig
    trained: list[TrainedAgent]
    benches: list[BenchResult]
    wall_s: float
    command: str


def trained_or_train(
    cfg: LeaderboardConfig, name: str, spec: AgentSpec, env_extra: dict[str, Any], seed: int, lm: Any
) -> TrainedAgent:
    """With ``resume``, the agent's saved record (``agents/<name>-s<seed>.json``) when its run finished; else train it.

    The record is written after each training (failures included, so a resumed run does not retry them); it is
    written last, so a run stopped during training leaves none and the agent is trained again, unless the round
    of its seed was benchmarked with it (:func:`~agents.eval.board.benched_agent`: a fresh clone of the board).
    """
    record = record_path(cfg, name, seed)
    if cfg.resume and record.is_file():
        saved = json.loads(record.read_text(encoding="utf-8"))
        done = TrainedAgent(**{k: v for k, v in saved.items() if k != "settings"})
        fresh = saved.get("settings") == settings_digest(cfg)  # not an agent of an earlier run with other settings
        if fresh and (done.checkpoint is None or Path(done.checkpoint).is_dir()):
            return done
    elif cfg.resume and (benched := benched_agent(record.parent.parent, settings_digest(cfg), name, seed)):
        return benched  # no record (a fresh clone of the board): the agent of a round benchmarked before
    result = train_agent(cfg, name, spec, env_extra, seed, lm)
    saved = {**dataclasses.asdict(result), "settings": settings_digest(cfg)}
    atomic_write_text(record, json.dumps(saved, indent=1) + "\n")
    return result


def train_agent(
    cfg: LeaderboardConfig, name: str, spec: AgentSpec, env_extra: dict[str, Any], seed: int, lm: Any
) -> TrainedAgent:
    """Train one agent to ``cfg.decisions`` and save it under ``<out>/<task>/agents/<name>-s<seed>``; failures are kept."""
    task = get_task(cfg.task)
    folder = Path(cfg.out).expanduser() / task.name / "agents"
    module, cls_name, fn_name = BACKENDS[spec.backend]
    start = time.perf_counter()
    try:
        config_cls = getattr(importlib.import_module(module), cls_name)
        fn_module, _, fn_attr = fn_name.rpartition(":")
        train_fn = getattr(importlib.import_module(fn_module or module), fn_attr)
        env = EnvConfig(
            model=cfg.model,
            prompts=task.prompts,
            reward=task.reward,
            max_new_tokens=cfg.max_new_tokens,
            **{**spec.env, **env_extra},
        )
        settings = {"num_envs": cfg.num_envs, **spec.settings}
        if spec.backend == "tilt":
            settings["tilt_data"] = str(folder / f"tilt-positions-s{seed}.pt")
        if spec.backend == "sb3":
            settings["eval_prompts"] = task.eval_prompts
            if settings["algo"] in ON_POLICY_ROLLOUT:  # SB3's default 2,048 steps x num_envs would overrun the budget
                settings.setdefault(
                    "n_steps", max(1, min(ON_POLICY_ROLLOUT[settings["algo"]], cfg.decisions // cfg.num_envs))
                )
        config = config_cls(
            env=env,
            total_timesteps=cfg.decisions,
            seed=seed,
            save_dir=str(folder / f"{name}-s{seed}"),
            tensorboard_log=str(folder / f"{name}-s{seed}-tb"),
            **settings,
        )
        result = train_fn(config, model=lm) if spec.shares_llm else train_fn(config)
        if result.interrupted:  # the user stopped the run: stop the leaderboard too (no record: resumed, it retrains)
            raise KeyboardInterrupt(f"{name}: training stopped by {result.interrupted}")
        if result.checkpoint is None:
            raise RuntimeError(f"training stopped early ({result.interrupted}) before a checkpoint was saved")
        return TrainedAgent(name, seed, str(result.checkpoint), time.perf_counter() - start)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # a failure is a row of the leaderboard, not the end of the run
        last = traceback.extract_tb(exc.__traceback__)[-1]
        where = f" ({Path(last.filename).name}:{last.lineno})" if last else ""
        message = " ".join(f"{type(exc).__name__}: {exc}".split())[:300] + where
        return TrainedAgent(name, seed, None, time.perf_counter() - start, message)


def _bench_config(cfg: LeaderboardConfig, checkpoints: list[str], frontier: str | None, folder: Path) -> BenchConfig:
    """The bench of one round: ``checkpoints`` on the task's held-out prompts, its evaluations kept in ``folder``."""
    task = get_task(cfg.task)
    return BenchConfig(
        model=cfg.model,
        checkpoints=tuple(checkpoints),
        prompts=task.eval_prompts,
        num_prompts=cfg.num_prompts,
        n=() if frontier else cfg.n,
        frontier_from=frontier,
        bon_reference=cfg.bon_reference,
        max_new_tokens=cfg.max_new_tokens,
        reward=task.reward,
        seed=cfg.seed,
        batch_size=cfg.batch_size,
        proxy_actions=("sample",),
        out=str(Path(cfg.out).expanduser() / task.name),
        cache_dir=str(folder / EVALS),  # each agent's evaluation as it ends: --resume continues a stopped bench
        resume=cfg.resume,
    )


def _round(
    cfg: LeaderboardConfig,
    checkpoints: list[str],
    lm: Any,
    frontier: str | None,
    progress: Progress | None,
    folder: Path,
    command: str,
    benches: list[BenchResult],
    log: Any,
) -> Round:
    """One bench of ``checkpoints`` written to ``folder`` (appended to ``benches``), or, resuming, the one saved there.

    A saved round is reused only if it benchmarked every one of these checkpoints (a row names each folder).
    """
    from agents.eval.board import load_round, round_saved, save_round
    from agents.eval.report import write_outputs

    digest = settings_digest(cfg)
    if cfg.resume and round_saved(folder, digest):
        saved = load_round(folder)
        names = " ".join(str(r["agent"]) for r in saved.rows)
        if all(f"({Path(c).name})" in names for c in checkpoints):
            log(f"[{get_task(cfg.task).name}] {folder.name}: benchmarked before, read from {folder}")
            return saved
    log(
        f"[{get_task(cfg.task).name}] evaluating {len(checkpoints)} agents{'' if frontier else ' and the baselines'} ..."
    )
    from agents.eval.bench import run_bench

    benches.append(run_bench(_bench_config(cfg, checkpoints, frontier, folder), lm=lm, progress=progress))
    write_outputs(benches[-1], folder, command=command or "proxy-rlhf leaderboard")
    return save_round(benches[-1], folder, digest)


def run_leaderboard(cfg: LeaderboardConfig, *, log: Any = print, progress: Progress | None = None) -> TaskBoard:
    """Train every agent of ``cfg`` on its task, benchmark them, retrain the best with the next seed; write the board.

    Each round's results (``seed<N>/``: results.md, results.csv, per_prompt.json, figures) are written as soon as
    its bench ends, so a run stopped later loses nothing measured: ``rebuild`` writes the board from them.
    """
    from agents.eval.board import ranked, write_board
    from agents.training import resolve_lm

    cfg = cfg.resolved()
    task = get_task(cfg.task)
    out = Path(cfg.out).expanduser() / task.name
    if cfg.rebuild:
        from agents.eval.board import rebuild

        rebuild(cfg)
        return TaskBoard(cfg, [], [], 0.0, "")
    if cfg.resume:
        check_resumable(cfg, out / "leaderboard.json")
    out.mkdir(parents=True, exist_ok=True)
    (out / "leaderboard.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n", encoding="utf-8")
    command = "proxy-rlhf leaderboard " + shlex.join(sys.argv[2:]) if sys.argv[1:2] == ["leaderboard"] else ""
    with RunLedger(out, command, fresh=not cfg.resume) as ledger:  # each invocation timed, however it ends
        lm = resolve_lm(cfg.model, None)
        trained: list[TrainedAgent] = []
        for name, spec, env_extra in cfg.runs():
            log(f"[{task.name}] training {name} (seed {cfg.seed}, {cfg.decisions:,} decisions) ...")
            trained.append(trained_or_train(cfg, name, spec, env_extra, cfg.seed, lm))
            log(f"[{task.name}]   {name}: " + (trained[-1].error or f"{trained[-1].wall_s:.0f} s"))
        checkpoints = [t.checkpoint for t in trained if t.checkpoint]
        benches: list[BenchResult] = []
        rounds = [_round(cfg, checkpoints, lm, None, progress, out / f"seed{cfg.seed}", command, benches, log)]
        if cfg.top_seeds:
            best = ranked(rounds[0].rows)[: cfg.top_seeds]
            runs = {name: (spec, extra) for name, spec, extra in cfg.runs()}
            again = []
            for name in best:
                log(f"[{task.name}] training {name} again (seed {cfg.seed + 1}) ...")
                again.append(trained_or_train(cfg, name, *runs[name], cfg.seed + 1, lm))
            trained += again
            if any(t.checkpoint for t in again):
                frontier = str(out / f"seed{cfg.seed}" / "results.csv")
                checkpoints = [t.checkpoint for t in again if t.checkpoint]
                folder = out / f"seed{cfg.seed + 1}"
                rounds.append(_round(cfg, checkpoints, lm, frontier, progress, folder, command, benches, log))
        board = TaskBoard(cfg, trained, benches, ledger.total_s(), command)
        write_board(cfg, rounds, trained, board.wall_s, command, out, note=ledger.summary())
    return board
