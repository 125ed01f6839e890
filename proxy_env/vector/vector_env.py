"""The batched alignment MDP: THE implementation; the single env and the library adapters only translate.

:class:`ProxyRLHFVectorEnv` holds the settings, the reward and the Gymnasium API (``reset``, ``step``); the
batched state (:class:`~proxy_env.vector.state.EnvState`) and the moves that depend on the observation
mode are its decoder's: :class:`~proxy_env.vector.candidate.CandidateDecoder` or
:class:`~proxy_env.vector.prefix.PrefixDecoder`. Reading one ``step`` means reading this file and the
decoder of the mode in use.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv

from proxy_env import guards
from proxy_env.config import (
    Action,
    EnvConfig,
    check_actions,
    check_autoreset_mode_arg,
    check_info_text,
    check_render_mode,
    settings_table,
)
from proxy_env.engine.lm import FrozenLM
from proxy_env.engine.models import as_frozen_lm
from proxy_env.engine.row_cache import CHECKS
from proxy_env.errors import ActionError, ConfigError, ConfigTypeError, RewardError, StateError, did_you_mean
from proxy_env.prompts import load_prompts
from proxy_env.rewards import ReferenceBaseline, RewardFn, resolve_reward, score
from proxy_env.rewards.shaping import PotentialShaping
from proxy_env.tasks import task_table
from proxy_env.vector import infos, seeding, sub_envs
from proxy_env.vector.candidate import CandidateDecoder
from proxy_env.vector.infos import np_copy
from proxy_env.vector.prefix import AcceptFn, KLCharge, PoolView, PrefixDecoder

__all__ = ["AcceptFn", "KLCharge", "PoolView", "ProxyRLHFVectorEnv"]

RESET_OPTIONS = ("reset_mask", "prompt_index")  # what reset(options=...) takes; any other key is refused
# the constructor's arguments that are not settings of the MDP (EnvConfig): how this instance runs
RUNTIME_HELP = {
    "num_envs": "episodes run in parallel (rows of the batched LLM)",
    "device": "device of the LLM (None: CUDA when available)",
    "dtype": "dtype of the LLM (None: float32 on CPU)",
    "autoreset_mode": "``SAME_STEP``, ``NEXT_STEP`` or ``DISABLED`` (an ``AutoresetMode`` or its name)",
    "render_mode": '``"ansi"``: prompt and response with rejected tokens as ``~~tok~~``; another mode is ignored with a warning',
    "info_text": "add the text fields to ``info`` (``token``; at episode end ``prompt``, ``response``, ``response_ids``)",
}


class ProxyRLHFVectorEnv(VectorEnv):
    """Proxy-RLHF: a proxy accepts or rejects each token a frozen LLM proposes; ``num_envs`` at once.

    ## Description

    One episode is one prompt and the response built for it. At each response position the frozen
    LLM's next-token distribution is truncated to the pool ``top-k ∩ top-p`` (the support of Hugging
    Face's sampler with the same settings) and the pool is offered one candidate at a time, in the order
    of sampling without replacement, so always-accept reproduces the LLM's own sampler. A rejected
    candidate is never offered again at that position. All ``num_envs`` episodes run through one
    batched LLM with a per-row KV cache.

    ## Action Space

    ``Discrete(2)`` per env: ``Action.REJECT = 0``, ``Action.ACCEPT = 1``.

    ## Observation Space

    ``Box(-inf, inf, (d,), float32)``. ``observation="candidate"``: the hidden state of layer
    ``hidden_layer`` at the candidate (appended to prompt and response), ``d = hidden_size``; one LLM
    forward per decision. ``"candidate_stats"`` appends the candidate's log-probability under the
    tempered LLM, under the pool, and its offer index / ``top_k``: ``d = hidden_size + 3``.
    ``"prefix"``: ``[h, e, ē, log p, log q]``, with ``h`` the hidden state of the last committed token,
    ``e`` the candidate's input embedding, ``ē`` the pool's mean embedding under ``q`` and the
    candidate's log-probabilities: ``d = 3 * hidden_size + 2``. A rejection then needs no forward, and
    :meth:`pool_observations` gives every pool candidate's observation at once.

    ## Rewards

    Terminal: ``RM(prompt, response) - b(prompt)`` where ``b`` is 0 (``reward_baseline=None``) or
    ``"reference"``: the reward of the LLM's own greedy response to the same prompt, computed once per
    prompt and cached (ChatGLM-RLHF's baseline: it needs the frozen LLM the env holds). With
    ``reward_shaping`` each step that commits tokens pays the change of the reward of the response so
    far, and the last step the rest, so the return is the same. If the reward source fails (raises, or
    returns NaN), ``step`` raises :class:`~proxy_env.errors.RewardError` and the env works again after
    ``reset()``. With ``kl_coef = β > 0`` (``"prefix"`` only) each committed token pays
    ``β · (log π_t(y_t) - log q_t(y_t))``, ``π_t`` the steered distribution of the position under the
    accept probabilities of :meth:`set_accept_fn`, ``q_t`` the pool: summed over a response, the
    sequence log-ratio, whose mean is the exact KL from the unsteered sampler. ``info["kl"]`` holds
    the log-ratio paid, ``info["kl_exact"]`` the position's exact ``KL(π_t || q_t)``; at episode end
    ``kl_paid`` and ``kl_exact_paid`` hold their sums. Shaping and the KL charge stay in the env because
    they need its internal state (the response so far, the whole pool). Transforms that need only
    ``(reward, info)`` are wrappers: a cost per rejection is :class:`proxy_env.wrappers.RejectCost`;
    normalisation is Gymnasium's ``NormalizeReward`` or SB3's ``VecNormalize``.

    ## Starting State

    A prompt drawn uniformly (per env, from its seed) from ``prompts``; the first candidate of
    response position 0 is on offer.

    ## Episode End

    ``terminated`` when the committed token is an EOS token or the response holds ``max_new_tokens``
    tokens: the budget is part of the task (the reward model scores the response as it is and nothing
    follows), so no library bootstraps a value there. ``truncated`` is always False. A candidate is committed without asking when it is the last one of its
    pool or after ``max_rejections`` rejections at that position. With ``forced_steps=True`` such a
    candidate is offered as a step of its own whose action is ignored (``info["forced"]``; not counted
    in ``decisions``), so every env step is exactly one batched LLM forward.

    ## Tasks

    Each task is a registered id with its own prompts and reward; everything else is the same MDP:

    {tasks}

    ## Arguments

    {arguments}

    ## Vectorized environment

    This class is the vector env (``gym.make_vec(..., vectorization_mode="vector_entry_point")``).
    ``info`` holds numeric ``(num_envs,)`` arrays only. ``rejected``: this step's action rejected the
    candidate (what a rejection cost needs: :class:`proxy_env.wrappers.RejectCost`). The rest describes
    the candidate now on offer: ``token_id``, ``logprob`` (log p), ``logq`` (log q, under the pool),
    ``rejections`` (at this position: the offer index), ``position``, ``forced``; at episode end (masked
    by ``_key`` arrays): ``decisions``, ``num_rejections``, ``forced_commits``, ``response_length``
    (tokens), ``reward_raw``, ``reward_baseline``.
    ``info_text=True`` adds ``token`` per step and ``prompt``, ``response``,
    ``response_ids`` (object arrays) at episode end. With SAME_STEP autoreset a finished env returns its
    next episode's first observation and puts the last one in ``info["final_obs"]`` and its info in
    ``info["final_info"]``. ``call``/``get_attr`` return the batched env's value once per env
    (``render``: its frame per env); ``set_attr`` takes one value for all.

    >>> import gymnasium as gym, numpy as np, proxy_env
    >>> from proxy_env.engine.tiny import tiny_lm
    >>> venv = gym.make_vec("proxy_env/ProxyRLHF-v1", num_envs=4, vectorization_mode="vector_entry_point",
    ...                     model=tiny_lm(), prompts=["Hello!", "How are you?"], max_new_tokens=8)
    >>> obs, info = venv.reset(seed=0)
    >>> obs.shape, obs.dtype
    ((4, 64), dtype('float32'))
    >>> obs, reward, terminated, truncated, info = venv.step(np.ones(4, dtype=np.int64))
    >>> sorted(int(p) for p in info["position"]) == [1, 1, 1, 1] or bool((terminated | truncated).any())
    True

    ## Version History

    * v1 (0.2.0): the end of the response budget is ``terminated``, not ``truncated`` (v0 reported
      ``truncated``, so libraries bootstrapped a value after a response the reward model had already
      scored); the ``"prefix"`` observation is ``[h, e, ē, log p, log q]`` (``d = 3H + 2``; v0 began as
      ``2H + 2``, without ``ē``); reward transforms left the env: ``reward_normalize`` (use Gymnasium's
      ``NormalizeReward`` or SB3's ``VecNormalize``), ``reject_cost`` (:class:`proxy_env.wrappers.RejectCost`),
      a constant ``reward_baseline``; ``info["rank"]`` (= ``rejections``) is gone and
      ``logprob_truncated`` is ``logq``. v0 is no longer registered.
    * v0: initial version. Later additions kept the default dynamics: ``observation="prefix"``,
      ``forced_steps``, ``kl_coef``; the pool follows HF's top-k ties and top-p boundary exactly.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4, "autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(
        self,
        num_envs: int = 1,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        autoreset_mode: AutoresetMode | str = AutoresetMode.SAME_STEP,
        render_mode: str | None = None,
        info_text: bool = False,
        **settings: Any,
    ) -> None:
        # validate everything before loading anything heavy
        if not isinstance(num_envs, int) or isinstance(num_envs, bool) or num_envs < 1:
            raise ConfigError(f"num_envs={num_envs!r} must be an int >= 1.")
        self.config = config = EnvConfig.from_kwargs(**settings)
        self.autoreset_mode = check_autoreset_mode_arg(autoreset_mode)
        self.render_mode = check_render_mode(render_mode)
        self.info_text = check_info_text(info_text)
        self.prompts = load_prompts(config.prompts)
        if isinstance(config.model, FrozenLM):
            guards.check_shared_lm(config.model, device=device, dtype=dtype)
        self.lm = lm = as_frozen_lm(config.model, device=device, dtype=dtype)  # "tiny" by name too
        guards.check_budget(lm, self.prompts, max_new_tokens=config.max_new_tokens, num_envs=num_envs)
        if not -lm.num_layers - 1 <= config.hidden_layer <= lm.num_layers:
            raise ConfigError(f"hidden_layer={config.hidden_layer} is out of range for a {lm.num_layers}-layer model.")
        self.reward_fn: RewardFn
        if config.reward_workers:
            from proxy_env.rewards.parallel import ProcessPoolReward

            self.reward_fn = ProcessPoolReward(config.reward, config.reward_workers)
        else:
            self.reward_fn = resolve_reward(config.reward, device=lm.device, lm=lm, config=config)
        self.metadata = {**self.metadata, "autoreset_mode": self.autoreset_mode}

        self.num_envs = num_envs
        decoder_cls = PrefixDecoder if config.observation == "prefix" else CandidateDecoder
        self.decoder = decoder_cls(lm, config, self.prompts, num_envs, render=self.render_mode == "ansi")
        self.state = self.decoder.state
        dim = self.decoder.observation_size
        self.single_observation_space = spaces.Box(-np.inf, np.inf, (dim,), np.float32)
        self.single_action_space = spaces.Discrete(2)
        self.observation_space = spaces.Box(-np.inf, np.inf, (num_envs, dim), np.float32)
        self.action_space = spaces.MultiDiscrete(np.full(num_envs, 2))

        self.kl_coef = float(config.kl_coef)  # mutable: an adaptive controller sets it (set_attr("kl_coef", beta))
        self.accept_fn: AcceptFn | None = None
        self.shaping = PotentialShaping(num_envs) if config.reward_shaping else None
        self.baseline = ReferenceBaseline(lm, self.reward_fn, config) if config.reward_baseline == "reference" else None
        self._seeded = False
        self._failed: tuple[str, torch.Tensor] | None = None  # (why, rows) after a step that failed midway
        self._resets_due = True  # whether some env may wait for a reset: step() reads state.needs_reset only then

    # ------------------------------------------------------------------ Gymnasium's API
    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start new episodes in every env, or in ``options["reset_mask"]`` (B,) bool only.

        ``seed``: None, a non-negative int (env ``i`` gets ``seed + i``), or one per env (None entries
        keep that env's seed), as Gymnasium takes them (:mod:`proxy_env.vector.seeding`).
        ``options["prompt_index"]``: one prompt index per env instead of the seeded draw.
        """
        if self.closed:
            raise StateError("reset() after close(): the env released its LLM cache; make a new env.")
        seeds = seeding.env_seeds(seed, self.num_envs)
        for key in options or {}:
            if key not in RESET_OPTIONS:
                raise ConfigError(
                    f"options[{key!r}] is not a reset option of this env; it takes {list(RESET_OPTIONS)}."
                    + did_you_mean(str(key), RESET_OPTIONS)
                )
        super().reset(seed=seeding.first_seed(seed))
        state, device = self.state, self.lm.device
        rows = torch.ones(self.num_envs, dtype=torch.bool, device=device)
        if options and "reset_mask" in options:
            rows = self._reset_mask(options["reset_mask"])
            if not bool(rows.any()):  # Gymnasium's meaning: reset nothing; the envs go on as they are
                if not self._seeded:
                    raise StateError(
                        "reset(options={'reset_mask': ...}) selects no env and no episode has started yet; "
                        "call reset() for every env first."
                    )
                obs, info, _ = self._outputs()
                return obs, info
        if not self._seeded:
            entropy = np.random.SeedSequence().generate_state(self.num_envs, np.uint64).astype(np.int64)
            state.seed = torch.tensor(entropy, device=device)
        if seeds is not None:
            given = rows & torch.tensor([s is not None for s in seeds], device=device)
            values = torch.tensor([0 if s is None else s for s in seeds], dtype=torch.long, device=device)
            state.seed = torch.where(given, values, state.seed)
            state.episode[given] = 0
        index = self._prompt_index(options["prompt_index"]) if options and "prompt_index" in options else None
        self._seeded = True
        if bool(rows.all()):  # a fresh cache makes a seeded reset reproduce bit for bit
            self.decoder.cache = self.lm.new_cache(self.num_envs, self.config.hidden_layer)
        self.decoder.start(rows, index)
        if self.shaping is not None:
            self.shaping.forget(np_copy(rows))
        self._resets_due = bool(state.needs_reset.any())  # a reset_mask may have left envs waiting
        self._failed = None
        obs, info, _ = self._outputs()
        return obs, info

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        return self._step(self._validate(actions), tensors=False)

    def step_tensors(
        self, actions: Any
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        """:meth:`step` for torch-native consumers: observation, reward, terminated and truncated stay torch tensors on
        the env's device (float32, float32, bool, bool), with no copy to the host.

        The one device-to-host read left per step is the (B,) ``terminated`` mask, which decides whether an
        episode must be scored (the reward source reads text); steps where episodes end also read what scoring
        and the new prompts need. ``info`` holds ``rejected`` (and with ``kl_coef``, ``kl``/``kl_exact``) as
        tensors; with SAME_STEP autoreset ``final_obs`` is a (B, d) tensor (zeros where no episode ended) and
        ``final_info`` the numpy episode summaries, each with its ``_``-mask, as in :meth:`step`.
        ``actions``: a (B,) tensor (any device) or array of 0/1.
        """
        return self._step(self._validate(actions, tensor=isinstance(actions, torch.Tensor)), tensors=True)

    def reset_tensors(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """:meth:`reset` returning the observation as a (B, d) float32 tensor on the env's device (the same info)."""
        _, info = self.reset(seed=seed, options=options)
        return self.decoder.observation().clone(), info

    def _step(self, act: torch.Tensor, *, tensors: bool) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        state, decoder, cfg = self.state, self.decoder, self.config
        reset_now = torch.zeros_like(state.needs_reset)
        resetting = self._resets_due and bool(state.needs_reset.any())  # read only when some env may wait
        self._resets_due = resetting
        if resetting:
            if self.autoreset_mode != AutoresetMode.NEXT_STEP:
                never = (state.needs_reset & (state.episode == 0)).nonzero().squeeze(1).tolist()
                finished = (state.needs_reset & (state.episode > 0)).nonzero().squeeze(1).tolist()
                what = "; ".join(
                    [f"envs {finished} finished"] * bool(finished)
                    + [f"envs {never} have not started an episode (a reset_mask left them out)"] * bool(never)
                )
                raise StateError(
                    f"{what}, and autoreset_mode is {self.autoreset_mode.name}: call "
                    "reset(options={'reset_mask': mask}) for them before step()."
                )
            reset_now = state.needs_reset.clone()
        acting = ~reset_now
        # with forced_steps the candidate on offer may be committed whatever the action: not a decision
        forced_now = acting & decoder.forced_at(state.offer) if cfg.forced_steps else torch.zeros_like(acting)
        accept = acting & ((act == Action.ACCEPT) | forced_now)
        reject = acting & ~accept
        state.terminated[:] = False
        state.decisions += (acting & ~forced_now).long()
        state.forced += forced_now.long()
        kl = self._kl_charge(accept, reject) if self.kl_coef > 0 else None
        position_before = state.position.clone()

        decoder.transition(accept, reject)
        if resetting:
            decoder.start(reset_now, feed=not cfg.forced_steps)
            self._resets_due = False
        decoder.feed_after_actions(acting & ~state.terminated)

        reward = torch.zeros(self.num_envs, dtype=torch.float64, device=self.lm.device)
        if kl is not None:
            reward -= self.kl_coef * kl.logratio
            state.kl_paid += kl.logratio
            state.kl_exact_paid += kl.exact
        ended = state.terminated.clone()  # a copy: starting new episodes clears state.terminated
        (ended_np,) = infos.host_copy(ended)
        truncated = np.zeros(self.num_envs, dtype=np.bool_)  # nothing outside the task cuts an episode short
        if self.shaping is not None:
            moved = np_copy(acting & (state.position != position_before))
            reward += torch.as_tensor(self.shaping.step(moved, ended_np, self._potential), device=reward.device)
        info: dict[str, Any] = {}
        if ended_np.any():
            end_info = self._scored(ended)
            if kl is not None:
                paid = {"kl_paid": np_copy(state.kl_paid), "kl_exact_paid": np_copy(state.kl_exact_paid)}
                end_info.update(paid, **{f"_{key}": ended_np.copy() for key in paid})
            terminal = end_info["reward_raw"] - end_info["reward_baseline"]
            if self.shaping is not None:  # the return stays the terminal reward: pay what shaping has not
                terminal = self.shaping.settle(ended_np, terminal)
            reward[ended] += torch.as_tensor(terminal, device=reward.device)[ended]
            if self.autoreset_mode == AutoresetMode.SAME_STEP and tensors:
                final_tensor = torch.where(ended[:, None], decoder.observation(), 0.0)
                info.update(final_obs=final_tensor, _final_obs=ended_np.copy())
                info.update(final_info=end_info, _final_info=ended_np.copy())
                decoder.start(ended, feed=not cfg.forced_steps)
            elif self.autoreset_mode == AutoresetMode.SAME_STEP:
                final, final_step_info, _ = self._outputs()
                info.update(final_obs=infos.final_obs(final, ended_np), _final_obs=ended_np.copy())
                info.update(final_info={**end_info, **final_step_info}, _final_info=ended_np.copy())
                decoder.start(ended, feed=not cfg.forced_steps)
            else:
                state.needs_reset |= ended
                self._resets_due = True
                info.update(end_info)
        decoder.feed_at_step_end()
        if tensors:
            info.update(rejected=reject)
            if kl is not None:
                info.update(kl=kl.logratio, kl_exact=kl.exact)
            obs_t = decoder.observation().clone()  # the decoder's next step writes its buffers in place
            return obs_t, reward.float(), ended, torch.zeros_like(ended), info
        extra = {"reward": reward, "rejected": reject}
        if kl is not None:
            extra.update(kl=kl.logratio, kl_exact=kl.exact)
        obs, step_info, out = self._outputs(**extra)
        info.update(step_info, rejected=out["rejected"])
        if kl is not None:
            info.update(kl=out["kl"], kl_exact=out["kl_exact"], kl_coef=np.full(self.num_envs, self.kl_coef))
        return obs, out["reward"], ended_np.copy(), truncated, info

    def render(self) -> tuple[str, ...] | None:  # type: ignore[override]  # ansi frames are str; RenderFrame is unbound
        """With ``render_mode="ansi"``: per env, the prompt and the response so far, rejected tokens as ``~~tok~~``."""
        if self.render_mode != "ansi":
            return None
        return tuple(
            f"PROMPT: {self.prompts[int(self.state.prompt_index[i])]}\nRESPONSE: {''.join(self.state.render_log[i])}"
            for i in range(self.num_envs)
        )

    def call(self, name: str, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        """Call method ``name`` (or read attribute ``name``); the result once per env (``render``: its frames)."""
        return sub_envs.call(self, self.num_envs, name, *args, **kwargs)

    def get_attr(self, name: str) -> tuple[Any, ...]:
        """Attribute ``name``, once per env."""
        return sub_envs.call(self, self.num_envs, name)

    def set_attr(self, name: str, values: list[Any] | tuple[Any, ...] | Any) -> None:
        """Set attribute ``name``: one value, or a list/tuple of ``num_envs`` equal values (the envs share it)."""
        sub_envs.set_attr(self, self.num_envs, name, values)

    def close_extras(self, **kwargs: Any) -> None:
        if "decoder" in vars(self):  # a constructor that raised before building it still gets closed by __del__
            self.decoder.cache.release()
        close = getattr(vars(self).get("reward_fn"), "close", None)
        config = vars(self).get("config")
        if close is not None and config is not None and config.reward_workers:  # the worker processes it started
            close()

    # ------------------------------------------------------------------ for steering and analysis
    def prefixes(self) -> tuple[list[str], list[list[int]]]:
        """Each env's prompt and the token ids of its response so far (the state the candidate on offer extends)."""
        return self.state.prefixes(self.prompts)

    def pool_observations(self) -> PoolView:
        """Every candidate of every env's current pool as the proxy would observe it (``observation="prefix"``).

        One proxy call over ``obs`` gives the accept probability of the whole pool, with no LLM forward.
        """
        if not isinstance(self.decoder, PrefixDecoder):
            raise ConfigError(
                f"pool_observations() needs observation='prefix', got {self.config.observation!r}: with 'candidate' "
                "each candidate's observation costs an LLM forward."
            )
        return self.decoder.pool_observations()

    def set_accept_fn(self, accept_fn: AcceptFn | None) -> None:
        """The proxy's P(accept) over observations, ``(N, d) float32 -> (N,)``, used to charge ``kl_coef``."""
        if accept_fn is not None and not callable(accept_fn):
            raise ConfigTypeError(
                f"accept_fn must be a callable (observations (N, d) -> P(accept) (N,)), got {type(accept_fn).__name__}."
            )
        self.accept_fn = accept_fn

    # ------------------------------------------------------------------ inside a step
    def _validate(self, actions: Any, *, tensor: bool = False) -> torch.Tensor:
        """The actions as a (B,) int64 tensor on the env's device, after the state checks.

        ``tensor``: a torch tensor's shape and dtype are checked, but its values only with ``PROXY_ENV_CHECKS=1``
        (reading them would synchronise with the GPU); any value but 1 (ACCEPT) then rejects.
        """
        if self.closed:
            raise StateError("step() after close(): the env released its LLM cache; make a new env.")
        if not self._seeded:
            raise StateError("step() called before reset(); call reset() first.")
        if self._failed is not None:
            raise StateError(f"the last step() failed ({self._failed[0]}); call reset() before step().")
        if not tensor or CHECKS or actions.device.type == "meta":
            return torch.as_tensor(check_actions(actions, self.num_envs), device=self.lm.device)
        act = actions[:, 0] if actions.shape == (self.num_envs, 1) else actions
        if act.shape != (self.num_envs,):
            raise ActionError(f"actions must have shape ({self.num_envs},), got {tuple(actions.shape)}.")
        if act.dtype.is_floating_point or act.dtype.is_complex:
            raise ActionError(f"actions must be integers (REJECT=0, ACCEPT=1), got dtype {act.dtype}.")
        return act.to(device=self.lm.device, dtype=torch.long)

    def _reset_mask(self, value: Any) -> torch.Tensor:
        mask = np.asarray(value)
        if mask.shape != (self.num_envs,) or mask.dtype != np.bool_:
            raise ConfigError(
                f"options['reset_mask'] must be a bool array of shape ({self.num_envs},), got {mask.dtype} {mask.shape}."
            )
        rows = torch.as_tensor(mask, device=self.lm.device)
        if self._failed is not None and bool((self._failed[1] & ~rows).any()):
            raise StateError(
                f"envs {self._failed[1].nonzero().squeeze(1).tolist()} failed in the last step(); reset them too "
                "(reset() without reset_mask resets every env)."
            )
        return rows

    def _prompt_index(self, value: Any) -> torch.Tensor:
        array = np.asarray(value)
        if not np.issubdtype(array.dtype, np.integer):  # 0.7 would be truncated to prompt 0 without a word
            raise ConfigError(
                f"options['prompt_index'] must be {self.num_envs} ints in [0, {len(self.prompts)}), got {value!r} "
                f"(dtype {array.dtype})."
            )
        index = torch.as_tensor(array, dtype=torch.long, device=self.lm.device)
        if index.shape != (self.num_envs,) or bool(((index < 0) | (index >= len(self.prompts))).any()):
            raise ConfigError(
                f"options['prompt_index'] must be {self.num_envs} ints in [0, {len(self.prompts)}), got {value!r}."
            )
        return index

    def _kl_charge(self, accept: torch.Tensor, reject: torch.Tensor) -> KLCharge:
        if self.accept_fn is None:
            raise StateError(
                f"kl_coef={self.kl_coef} needs the proxy's accept probabilities: call venv.set_accept_fn(fn) "
                "(agents.kl_control.KLPenaltyCallback does it; `proxy-rlhf train` installs it), or pass kl_coef=0."
            )
        assert isinstance(self.decoder, PrefixDecoder)  # EnvConfig refuses kl_coef > 0 without "prefix"
        return self.decoder.kl_charge(accept, reject, self.accept_fn)

    def _outputs(self, **extra: torch.Tensor) -> tuple[np.ndarray, dict[str, Any], dict[str, np.ndarray]]:
        """The observation, the per-step info and the ``extra`` (B,) tensors, in one device-to-host copy."""
        state = self.state
        forced = (
            self.decoder.forced_at(state.offer) if self.config.forced_steps else torch.zeros_like(state.needs_reset)
        )
        step = infos.step_tensors(state.pool, state.offer, state.position, forced)
        names = ["obs", *step, *extra]
        arrays = dict(zip(names, infos.host_copy(self.decoder.observation(), *step.values(), *extra.values())))
        info = infos.step_info(arrays, self.lm.tokenizer if self.info_text else None)
        return arrays["obs"], info, {key: arrays[key] for key in extra}

    def _potential(self, rows: np.ndarray) -> np.ndarray:
        """The reward of ``rows``' (indices) responses so far: reward shaping's potential."""
        prompts, ids = self.state.prefixes(self.prompts, rows.tolist())
        return np.asarray(score(self.reward_fn, prompts, [self.lm.decode(x) for x in ids]), dtype=np.float64)

    def _scored(self, ended: torch.Tensor) -> dict[str, Any]:
        """:meth:`_end_info`; if scoring fails, the env is marked for reset and the error says so."""
        try:
            return self._end_info(ended)
        except BaseException as exc:
            rows = ended.nonzero().squeeze(1).tolist()
            self._failed = (f"{type(exc).__name__} while scoring the episodes of envs {rows}", ended.clone())
            if not isinstance(exc, Exception):
                raise
            fix = (
                f" The episodes of envs {rows} ended but could not be scored, so they are dropped; the env is "
                "usable again after reset() (every env, or a reset_mask covering those)."
            )
            raise RewardError(f"{exc}{fix}") from exc

    def _end_info(self, ended: torch.Tensor) -> dict[str, Any]:
        """Episode summaries of ``ended`` rows, scored by the reward source in one batched call."""
        state = self.state
        index = ended.nonzero().squeeze(1).tolist()
        prompts, ids = state.prefixes(self.prompts, index)
        texts = [self.lm.decode(x) for x in ids]
        raw = np.zeros(self.num_envs)
        raw[index] = score(self.reward_fn, prompts, texts)
        baseline = np.zeros(self.num_envs)
        if self.baseline is not None:
            all_prompt_index = state.prompt_index.tolist()
            baseline[index] = self.baseline([all_prompt_index[i] for i in index], prompts)
        numeric = {
            "decisions": np_copy(state.decisions),
            "num_rejections": np_copy(state.rejections),
            "forced_commits": np_copy(state.forced),
            "response_length": np_copy(state.position),
            "reward_raw": raw,
            "reward_baseline": baseline,
        }
        text: dict[str, list[Any]] | None = (
            {"prompt": prompts, "response": texts, "response_ids": ids} if self.info_text else None
        )
        return infos.end_info(np_copy(ended), numeric, text)


def _signature() -> inspect.Signature:
    """The constructor's signature with every setting of :class:`EnvConfig` as a keyword (``help()``, IDEs)."""
    own = inspect.signature(ProxyRLHFVectorEnv.__init__)
    params = [p for p in own.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    settings = [
        inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=f.type)
        for f in dataclasses.fields(EnvConfig)
    ]
    return own.replace(parameters=params + settings)


ProxyRLHFVectorEnv.__init__.__signature__ = _signature()  # type: ignore[attr-defined]
ProxyRLHFVectorEnv.__doc__ = (
    (ProxyRLHFVectorEnv.__doc__ or "")
    .replace("{tasks}", task_table(indent="    "))
    .replace("{arguments}", settings_table(inspect.signature(ProxyRLHFVectorEnv.__init__), RUNTIME_HELP, indent="    "))
)
