"""``proxy-rlhf train --backend tilt``: :class:`TiltConfig` and :func:`train_tilt` (the method: :mod:`agents.tilt`)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from agents.interrupt import GracefulStop
from agents.policies import param_report
from agents.saving.checkpoint import save_or_rescue
from agents.tilt.collect import collect
from agents.tilt.data import DATA_VERSION, load_positions, save_positions
from agents.tilt.fit import balance_norm, fit
from agents.train import SB3Config, build_agent, make_sb3_env
from agents.training import (
    TrainConfig,
    TrainResult,
    check_int,
    checkpoint_saver,
    config_dict,
    env_kwargs,
    help_text,
    resolve_lm,
    run_training,
)
from proxy_env.errors import ConfigError, check_choice
from proxy_env.folders import check_not_a_file

FUTURE_FORMS = ("mean", "soft")  # what --tilt-future adds: the ridge mean, or the learned soft value
ACTORS = ("ppo", "a2c", "trpo")  # SB3 algorithms whose actor gives P(accept): what the fit trains and saves


@dataclass(kw_only=True)
class TiltConfig(TrainConfig):
    """``proxy-rlhf train --backend tilt``: the shared settings plus the fit's; each field is a flag.

    ``learning_rate`` and ``batch_size`` default to 3e-3 and 256 here; ``env`` needs ``observation="prefix"``
    and ``kl_coef`` = β > 0 (the tilt's temperature).
    """

    algo: str = field(default="ppo", metadata=help_text(f"the SB3 actor the fit trains and saves: {', '.join(ACTORS)}"))
    tilt_epochs: int = field(
        default=6, metadata=help_text("passes of the exact objective over the collected positions")
    )
    tilt_warmup_epochs: int = field(
        default=1,
        metadata=help_text(
            "passes fitting P(accept) to exp(min(0, (Δ − max Δ)/β)) first: the exact objective stalls from always-accept"
        ),
    )
    tilt_data: str | None = field(
        default=None,
        metadata=help_text(
            "file caching the collected pools and reward changes: reused when its settings match, written otherwise"
        ),
    )
    tilt_future: bool = field(
        default=False,
        metadata=help_text(
            "add to each candidate's reward change a ridge estimate of the change still to come after it, "
            "E_q[R - Phi(s+y)], fitted on the collected responses"
        ),
    )
    tilt_future_form: str = field(
        default="mean",
        metadata=help_text(
            "what --tilt-future adds: 'mean', the ridge estimate of E_q[R - Phi(s+y)]; 'soft', the soft value "
            "beta*log E_q[exp((R - Phi(s+y))/beta)] from a learned histogram of the change still to come (the exact "
            "KL-optimal tilt's missing part; agents/tilt/soft_future.py)"
        ),
    )
    tilt_value: str | None = field(
        default=None,
        metadata=help_text(
            "a distributional value head (`proxy-rlhf value`): fit the proxy to q·E[u^(N-1) | s+y] (best-of-N's "
            "token-level rule, N = --tilt-value-n) instead of the myopic tilt q·exp(Δ/β)"
        ),
    )
    tilt_value_n: int = field(default=4, metadata=help_text("the N of --tilt-value: the best-of-N it reproduces"))

    def validate(self) -> None:
        """The shared checks, then the tilt's, naming the flag and the fix."""
        super().validate()
        if not self.env.kl_coef > 0:
            raise ConfigError(
                f"--kl-coef={self.env.kl_coef!r}: --backend tilt needs β > 0 (the tilt's temperature; 0.2 is a start)."
            )
        if self.env.observation != "prefix":
            raise ConfigError(
                f"--observation={self.env.observation!r}: --backend tilt needs --observation prefix "
                "(every candidate's observation at once)."
            )
        if self.algo.lower() not in ACTORS:
            raise ConfigError(
                f"--algo={self.algo!r}: --backend tilt fits an actor's accept probability: use "
                f"{', '.join(ACTORS[:-1])} or {ACTORS[-1]}."
            )
        if self.tilt_data is not None:  # checked now: a bad path used to fail after the whole collection
            data = Path(self.tilt_data).expanduser()
            if data.is_dir():
                raise ConfigError(f"--tilt-data={self.tilt_data!r} is a folder; pass the path of a file to cache into.")
            check_not_a_file(data.parent, arg="--tilt-data's folder")
        check_int("tilt_epochs", self.tilt_epochs, minimum=1)
        check_int("tilt_value_n", self.tilt_value_n, minimum=2, hint="best-of-N with N >= 2")
        check_choice("tilt_future_form", self.tilt_future_form, FUTURE_FORMS)
        if self.tilt_future_form != "mean" and not self.tilt_future:
            raise ConfigError(
                f"--tilt-future-form={self.tilt_future_form!r} says what --tilt-future adds; pass --tilt-future too."
            )
        if self.tilt_value is not None and self.tilt_future:
            raise ConfigError(
                "--tilt-value replaces the reward change by the value of the prefix, which already counts the reward "
                "still to come: drop --tilt-future."
            )
        if self.tilt_value is not None:
            from agents.value.head import CONFIG_FILE

            if not (Path(self.tilt_value).expanduser() / CONFIG_FILE).is_file():
                raise ConfigError(
                    f"--tilt-value={self.tilt_value!r} holds no {CONFIG_FILE}; pass a folder written by "
                    "`proxy-rlhf value`."
                )
        check_int("tilt_warmup_epochs", self.tilt_warmup_epochs, minimum=0)

    def actor_config(self) -> SB3Config:
        """The SB3 config that builds the actor (:func:`agents.train.build_agent`) from these settings."""
        shared = {f.name: getattr(self, f.name) for f in fields(TrainConfig)}
        return SB3Config(**shared, algo=self.algo)


def train_tilt(cfg: TiltConfig, *, model: Any = None, reward: Any = None) -> TrainResult:
    """Collect ``cfg.total_timesteps`` decisions of the LLM's sampler, then fit the proxy to the tilt of β = ``cfg.env.kl_coef``.

    Runs in :func:`agents.training.run_training` (validated first, save folder locked, graceful stop).

    Args:
        cfg: the configuration.
        model: an already loaded :class:`~proxy_env.engine.lm.FrozenLM` instead of ``cfg.env.model``.
        reward: a reward callable instead of ``cfg.env.reward``.

    Returns:
        :class:`~agents.training.TrainResult`; its ``kl_history`` holds each fitting epoch's mean KL per position.
    """
    return run_training(cfg, lambda stop: _run(cfg, model, reward, stop))


def _run(cfg: TiltConfig, model: Any, reward: Any, stop: GracefulStop) -> TrainResult:
    lm = resolve_lm(model if model is not None else cfg.env.model, cfg.llm_device)
    kwargs = {**env_kwargs(cfg), "model": lm, "reward": reward if reward is not None else cfg.env.reward}
    env = make_sb3_env(kwargs, cfg.num_envs, seed=cfg.seed)
    try:
        agent = build_agent(cfg.actor_config(), env)
        logger = _tensorboard(agent, cfg)
        key = _data_key(cfg, lm, kwargs["reward"])
        data = load_positions(cfg.tilt_data, key) if cfg.tilt_data else None
        if data is None:
            data = collect(
                env.unwrapped, cfg.total_timesteps, seed=cfg.seed, progress=cfg.progress_bar, stop=stop, logger=logger
            )
            if cfg.tilt_data and stop.received is None:
                save_positions(cfg.tilt_data, key, data)
        if stop.received is not None:  # stopped while collecting: nothing was fitted, so there is nothing to save
            agent.num_timesteps = 0
            return TrainResult(agent, None, param_report(agent, lm.num_parameters), [], [], stop.received)
        if cfg.tilt_future:
            if cfg.tilt_future_form == "soft":
                from agents.tilt.soft_future import soft_future_values

                future, report = soft_future_values(lm, data, cfg.env.kl_coef, seed=cfg.seed, log=print)
            else:
                from agents.tilt.future import future_values

                future, report = future_values(lm, data, seed=cfg.seed)
            data = data.replace(delta=data.delta + future)
            print("tilt future: " + ", ".join(f"{k} {v:.4g}" for k, v in report.items()), flush=True)
            if logger is not None:
                for name, value in report.items():
                    logger.record(f"tilt/future_{name}", value)
                logger.dump(0)
        if cfg.tilt_value is not None:
            from agents.value.guide import value_deltas
            from agents.value.head import load_value_head

            head = load_value_head(cfg.tilt_value, lm, hidden_layer=cfg.env.hidden_layer)
            data = data.replace(delta=value_deltas(head, lm, data, n=cfg.tilt_value_n, beta=cfg.env.kl_coef))
        balance_norm(agent, lm, data)
        history = fit(
            agent,
            lm,
            data,
            beta=cfg.env.kl_coef,
            epochs=cfg.tilt_epochs,
            warmup_epochs=cfg.tilt_warmup_epochs,
            lr=cfg.learning_rate or 3e-3,
            batch_size=cfg.batch_size or 256,
            seed=cfg.seed,
            max_rejections=cfg.env.max_rejections,
            order=cfg.env.order,
            progress=cfg.progress_bar,
            stop=stop,
            logger=logger,
        )
        agent.num_timesteps = -(-cfg.total_timesteps // cfg.num_envs) * cfg.num_envs  # whole steps, as SB3 counts
        # a stop during the fit saves what was fitted; the config says how many epochs that was
        config = {**config_dict(cfg), "backend": "tilt", "tilt_fitted_epochs": len(history)}
        save = checkpoint_saver(cfg, model, reward, lm, config)
        path = save_or_rescue(save, agent, cfg.save_dir) if save is not None and cfg.save_dir else None
    finally:
        env.close()
    return TrainResult(agent, path, param_report(agent, lm.num_parameters), [], history, stop.received)


def _tensorboard(agent: Any, cfg: TiltConfig) -> Any:
    if not cfg.tensorboard_log:
        return None
    from stable_baselines3.common.logger import configure

    logger = configure(str(Path(cfg.tensorboard_log) / "tilt_1"), ["tensorboard"])
    agent.set_logger(logger)
    return logger


def _data_key(cfg: TiltConfig, lm: Any, reward: Any) -> dict[str, Any]:
    """What the collected positions depend on: a cache made under other settings is not reused."""
    reward_name = reward if isinstance(reward, str) else repr(reward)
    return {
        "version": DATA_VERSION,
        "model": getattr(lm, "name", cfg.env.model),
        "reward": reward_name,
        "prompts": cfg.env.prompts,
        "decisions": cfg.total_timesteps,
        "num_envs": cfg.num_envs,
        "seed": cfg.seed,
        **{k: getattr(cfg.env, k) for k in ("max_new_tokens", "top_k", "top_p", "temperature", "hidden_layer")},
    }
