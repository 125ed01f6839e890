"""The batched alignment MDP: THE implementation; the single env and the SB3 adapter only translate.

One class, :class:`ProxyRLHFVectorEnv`: its constructor, state, ``reset`` and ``step`` are here; the rest of
its methods are grouped by concern in mixins beside it (:mod:`~proxy_env.vector.decoding`: episode starts,
offers and commits; :mod:`~proxy_env.vector.observe`: observations and per-step infos;
:mod:`~proxy_env.vector.episode_end`: the KL charge and the reward at episode end;
:mod:`~proxy_env.vector.render`). They share the env's batched state tensors, so they are parts of one
class rather than objects of their own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv

from proxy_env import guards
from proxy_env.config import (
    NUM_STATS,
    Action,
    EnvConfig,
    check_actions,
    check_autoreset_mode_arg,
    check_info_text,
    check_render_mode,
    prefix_dim,
)
from proxy_env.engine import candidates as skam
from proxy_env.engine.lm import FrozenLM
from proxy_env.engine.models import as_frozen_lm
from proxy_env.errors import ConfigError, StateError
from proxy_env.prompts import load_prompts
from proxy_env.rewards import ReferenceBaseline, RunningMeanStd, resolve_reward
from proxy_env.rewards.shaping import PotentialShaping
from proxy_env.vector import infos, seeding, sub_envs
from proxy_env.vector.decoding import Decoding
from proxy_env.vector.episode_end import AcceptFn, EpisodeEnd, KLCharge
from proxy_env.vector.infos import np_copy as _np
from proxy_env.vector.observe import Observing, PoolView
from proxy_env.vector.render import Rendering

__all__ = ["AcceptFn", "KLCharge", "PoolView", "ProxyRLHFVectorEnv"]


class ProxyRLHFVectorEnv(Decoding, Observing, EpisodeEnd, Rendering, VectorEnv):
    """Proxy-RLHF: a proxy accepts or rejects each token a frozen LLM proposes; ``num_envs`` at once.

    ## Description

    One episode is one prompt and the response built for it. At each response position the frozen
    LLM's next-token distribution is truncated to the pool ``top-k ∩ top-p`` (SKAM) and the pool is
    offered one candidate at a time; the agent accepts or rejects each. All ``num_envs`` episodes run
    through one batched LLM with a per-row KV cache: every decision feeds exactly the candidate on
    offer through the LLM, once (plus one forward per forced commit).

    ## Action Space

    ``Discrete(2)`` per env: ``Action.REJECT = 0``, ``Action.ACCEPT = 1``.

    ## Observation Space

    ``Box(-inf, inf, (d,), float32)``. ``observation="candidate"``: the hidden state of layer
    ``hidden_layer`` at the candidate's position (the candidate appended to prompt and response),
    ``d = hidden_size``. ``"candidate_stats"`` appends the candidate's log-probability under the
    tempered LLM, under the truncated pool, and its rank in the offer order divided by ``top_k``
    (= rejections so far at this position / ``top_k``): ``d = hidden_size + 3``.
    ``"prefix"``: built from what the LLM already computed at the position, ``[h, e, ē, log p, log q]``
    with ``h`` the layer-``hidden_layer`` hidden state of the last committed token (the prompt's last
    token at position 0), ``e`` the candidate's input embedding, ``ē`` the input embedding averaged
    over the whole pool under its probabilities ``q`` (the same for every candidate of the position,
    whatever was rejected: the alternatives a rejection trades for), and the candidate's
    log-probabilities under the tempered LLM and the pool: ``d = 3 * hidden_size + 2``. A rejection then needs no LLM forward
    (only committed tokens are fed), and the observation of every pool candidate is known at once
    (:meth:`pool_observations`), so one small proxy call gives the accept probabilities of the whole
    pool: what the exact KL penalty (``kl_coef``) and steered generation need.

    ## Rewards

    Terminal: ``RM(prompt, response) - b(prompt)`` where ``b`` is 0 (``reward_baseline=None``), a
    constant, or ``"reference"``: the reward of the LLM's own greedy response to the same prompt,
    computed once per prompt and cached. Each rejection costs ``reject_cost`` at that step.
    With ``reward_normalize=True`` the terminal reward ``RM - b`` is standardised by a running
    (Welford) mean and standard deviation of every terminal reward seen so far, updated with each
    step's finished episodes before they are normalised (the rejection cost is not normalised); it is
    overflow-free, winsorises a reward beyond 10 standard deviations and clips the normalised one to
    ±10, so extreme rewards (±1e308) give neither NaN nor a collapse (:class:`~proxy_env.rewards.RunningMeanStd`).
    If the reward source fails (raises, or returns NaN), ``step`` raises :class:`~proxy_env.errors.RewardError`
    and the env works again after ``reset()``.
    ``reward="pairwise"``: 1 / 0.5 / 0 as the LLM itself, judging, prefers the steered response to
    its own greedy one, is undecided, or prefers its own (see :mod:`proxy_env.rewards.pairwise`).
    With ``kl_coef = β > 0`` (``observation="prefix"`` only) each committed token pays
    ``β · (log π_t(y_t) - log q_t(y_t))`` at the step it is committed, where ``π_t`` is the steered
    distribution of the position (:func:`proxy_env.engine.steering.steered_probs`) under the accept
    probabilities of :meth:`set_accept_fn` (the proxy's current policy) and ``q_t`` the pool; summed
    over a response this is the sequence log-ratio, whose mean is the exact KL from the unsteered
    sampler. ``info["kl"]`` holds the log-ratio paid, ``info["kl_exact"]`` the position's exact
    ``KL(π_t || q_t)``; at episode end ``kl_paid`` and ``kl_exact_paid`` hold their sums.

    ## Starting State

    A prompt drawn uniformly (per env, from its seed) from ``prompts``; the first candidate of
    response position 0 is on offer.

    ## Episode End

    ``terminated`` when the committed token is an EOS token; ``truncated`` when the response holds
    ``max_new_tokens`` tokens. A candidate is committed without asking when it is the last one of
    its pool or after ``max_rejections`` rejections at that position. With ``forced_steps=True`` such
    a candidate is offered as a step of its own whose action is ignored (``info["forced"]`` is True,
    and it is not counted in ``decisions``): the committed tokens and the steered distribution are
    the same, but every env step is exactly one batched LLM forward (no chains of forced commits
    inside a step), which is the faster bookkeeping when many rows run at once.

    ## Arguments

    | argument | default | meaning |
    |---|---|---|
    | ``num_envs`` | 1 | episodes run in parallel (rows of the batched LLM) |
    | ``model`` | ``"default"`` | ``"default"`` (SmolLM2-135M-Instruct), hub id, path or a ``FrozenLM`` |
    | ``reward`` | ``"default"`` | ``"default"`` (VADER positivity), ``"pairwise"`` (LLM judge vs the unsteered response), a callable ``(prompts, responses) -> floats``, a ``proxy-rlhf rm train`` folder or a reward-model id/path |
    | ``prompts`` | ``"default"`` | ``"default"``, ``"default-eval"``, a list of strings, or a .txt/.jsonl/datasets path |
    | ``max_new_tokens`` | 48 | response budget in tokens |
    | ``top_k``, ``top_p``, ``temperature`` | 50, 0.95, 1.0 | the SKAM pool |
    | ``max_rejections`` | None | rejections allowed per position (None: pool size - 1) |
    | ``order`` | ``"sample"`` | ``"sample"`` (Gumbel-top-k) or ``"greedy"`` (descending probability) |
    | ``observation`` | ``"candidate"`` | ``"candidate"``, ``"candidate_stats"`` or ``"prefix"`` |
    | ``hidden_layer`` | -1 | which hidden state (index into ``hidden_states``; -1 is the last) |
    | ``reward_baseline`` | None | None, a float, or ``"reference"`` |
    | ``reject_cost`` | 0.0 | reward subtracted per rejection |
    | ``reward_normalize`` | False | standardise terminal rewards by their running mean and std |
    | ``forced_steps`` | False | offer a forced candidate as a step whose action is ignored (one forward per step) |
    | ``reward_shaping`` | False | pay the reward of the response so far as it changes (potential-based: same return) |
    | ``kl_coef`` | 0.0 | β of the per-token KL penalty (``"prefix"`` only; needs :meth:`set_accept_fn`) |
    | ``device``, ``dtype`` | None | CUDA when available; float32 on CPU |
    | ``autoreset_mode`` | SAME_STEP | ``AutoresetMode.SAME_STEP``, ``NEXT_STEP`` or ``DISABLED`` |
    | ``render_mode`` | None | ``"ansi"``: prompt and response with rejected tokens as ``~~tok~~``; any other mode is ignored with a warning |
    | ``info_text`` | False | add the text fields to ``info`` (``token``; at episode end ``prompt``, ``response``, ``response_ids``) |

    ## Vectorized environment

    This class is the vector env (``gym.make_vec(..., vectorization_mode="vector_entry_point")``).
    ``info`` holds numeric ``(num_envs,)`` arrays only, so array libraries (TorchRL, Gymnasium's
    ``NumpyToTorch``) can convert it. Per step it describes the candidate now on offer: ``token_id``,
    ``logprob``, ``logprob_truncated``, ``rank``, ``rejections``, ``position``; at episode end
    (masked by ``_key`` arrays): ``decisions``, ``num_rejections``, ``forced_commits``,
    ``response_length`` (tokens), ``reward_raw``, ``reward_baseline``, ``reject_cost`` and, with
    ``reward_normalize``, ``reward_normalized`` (the terminal reward after normalisation).
    ``info_text=True`` adds ``token`` (the candidate, decoded) per step and ``prompt``, ``response``,
    ``response_ids`` (object arrays) at episode end; only then is anything decoded per step. With
    SAME_STEP autoreset a finished env returns its next episode's first observation and puts the last
    one in ``info["final_obs"]`` (an ``(num_envs,)`` object array of ``(d,)`` float32 arrays, None
    for envs that did not end) and its info in ``info["final_info"]``.

    ``call``, ``get_attr`` and ``set_attr`` follow Gymnasium's ``VectorEnv``; the ``num_envs`` envs
    are rows of one batched env, so ``call``/``get_attr`` return its value once per env (``render``:
    its frame per env) and ``set_attr`` takes one value for all.

    >>> import gymnasium as gym, numpy as np, proxy_env
    >>> from proxy_env.engine.tiny import tiny_lm
    >>> venv = gym.make_vec("proxy_env/ProxyRLHF-v0", num_envs=4, vectorization_mode="vector_entry_point",
    ...                     model=tiny_lm(), prompts=["Hello!", "How are you?"], max_new_tokens=8)
    >>> obs, info = venv.reset(seed=0)
    >>> obs.shape, obs.dtype
    ((4, 64), dtype('float32'))
    >>> obs, reward, terminated, truncated, info = venv.step(np.ones(4, dtype=np.int64))
    >>> sorted(int(p) for p in info["position"]) == [1, 1, 1, 1] or bool((terminated | truncated).any())
    True

    ## Version History

    * v0: initial version. Later additions keep the default dynamics: ``observation="prefix"``,
      ``forced_steps``, ``kl_coef``; the pool follows HF's top-k ties and top-p boundary exactly; the
      ``"prefix"`` observation gained the pool's mean embedding ``ē`` (``d`` from ``2H + 2`` to ``3H + 2``).
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4, "autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(
        self,
        num_envs: int = 1,
        *,
        model: str | Path | FrozenLM = "default",
        reward: Any = "default",
        prompts: Any = "default",
        max_new_tokens: int = 48,
        top_k: int = 50,
        top_p: float = 0.95,
        temperature: float = 1.0,
        max_rejections: int | None = None,
        order: str = "sample",
        observation: str = "candidate",
        hidden_layer: int = -1,
        reward_baseline: float | str | None = None,
        reject_cost: float = 0.0,
        reward_normalize: bool = False,
        forced_steps: bool = False,
        kl_coef: float = 0.0,
        reward_shaping: bool = False,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        autoreset_mode: AutoresetMode | str = AutoresetMode.SAME_STEP,
        render_mode: str | None = None,
        info_text: bool = False,
    ) -> None:
        # validate everything before loading anything heavy
        if not isinstance(num_envs, int) or isinstance(num_envs, bool) or num_envs < 1:
            raise ConfigError(f"num_envs={num_envs!r} must be an int >= 1.")
        self.config = EnvConfig(
            max_new_tokens,
            top_k,
            top_p,
            temperature,
            max_rejections,
            order,
            observation,
            hidden_layer,
            reward_baseline,
            reject_cost,
            reward_normalize,
            forced_steps,
            kl_coef,
            reward_shaping,
        )
        self.autoreset_mode = check_autoreset_mode_arg(autoreset_mode)
        self.render_mode = check_render_mode(render_mode)
        self.info_text = check_info_text(info_text)
        self.prompts = load_prompts(prompts)
        if isinstance(model, FrozenLM):
            guards.check_shared_lm(model, device=device, dtype=dtype)
        self.lm = as_frozen_lm(model, device=device, dtype=dtype)  # "tiny" by name too: subprocess envs build it
        guards.check_budget(self.lm, self.prompts, max_new_tokens=max_new_tokens, num_envs=num_envs)
        if not -self.lm.num_layers - 1 <= hidden_layer <= self.lm.num_layers:
            raise ConfigError(f"hidden_layer={hidden_layer} is out of range for a {self.lm.num_layers}-layer model.")
        self.reward_fn = resolve_reward(reward, device=self.lm.device, lm=self.lm, config=self.config)
        self.reward_stats = RunningMeanStd()  # of terminal rewards, used when reward_normalize
        self.metadata = {**self.metadata, "autoreset_mode": self.autoreset_mode}

        self.num_envs = num_envs
        dim = {
            "candidate": self.lm.hidden_size,
            "candidate_stats": self.lm.hidden_size + NUM_STATS,
            "prefix": prefix_dim(self.lm.hidden_size),
        }[observation]
        self.kl_coef = float(kl_coef)  # mutable: an adaptive controller sets it (set_attr("kl_coef", beta))
        self._shaping = PotentialShaping(num_envs) if reward_shaping else None
        self.accept_fn: AcceptFn | None = None
        self.single_observation_space = spaces.Box(-np.inf, np.inf, (dim,), np.float32)
        self.single_action_space = spaces.Discrete(2)
        self.observation_space = spaces.Box(-np.inf, np.inf, (num_envs, dim), np.float32)
        self.action_space = spaces.MultiDiscrete(np.full(num_envs, 2))

        self._eos = torch.tensor(self.lm.eos_token_ids, device=self.lm.device)
        self._prompt_ids: dict[int, list[int]] = {}
        self._baseline = (
            ReferenceBaseline(self.lm, self.reward_fn, self.config) if reward_baseline == "reference" else None
        )
        self._allocate()
        self._failed: tuple[str, torch.Tensor] | None = None  # (why, rows) after a step that failed midway

    # ------------------------------------------------------------------ state
    def _allocate(self) -> None:
        """All per-env state as (num_envs, ...) tensors, allocated once."""
        b, k, dev = self.num_envs, min(self.config.top_k + skam.TIE_MARGIN, self.lm.vocab_size), self.lm.device
        zeros = lambda *shape, dtype=torch.long: torch.zeros(*shape, dtype=dtype, device=dev)  # noqa: E731
        self.cache = self.lm.new_cache(b, self.config.hidden_layer)
        self.seed = zeros(b)
        self.episode = zeros(b)
        self.prompt_index = zeros(b)
        self.position = zeros(b)  # response tokens committed
        self.offer = zeros(b)  # index of the candidate on offer = rejections at this position
        empty_pool = skam.Pool(
            zeros(b, k), zeros(b, k, dtype=torch.float32), zeros(b, k, dtype=torch.float32), zeros(b) + 1
        )
        self.pool = empty_pool
        self.next_pool = empty_pool  # "candidate": pool of position + 1 if the candidate on offer is accepted
        # (B, H): "candidate": at the candidate on offer; "prefix": at the last committed token (prompt's last at first)
        self.hidden = zeros(b, self.lm.hidden_size, dtype=torch.float32)
        self.response = zeros(b, self.config.max_new_tokens)
        self.decisions, self.rejections, self.forced = zeros(b), zeros(b), zeros(b)
        self.kl_paid = zeros(b, dtype=torch.float64)  # Σ over the episode's committed tokens of log π - log q
        self.kl_exact_paid = zeros(b, dtype=torch.float64)  # Σ over its positions of KL(π_t || q_t)
        self.terminated = zeros(b, dtype=torch.bool)
        self.truncated = zeros(b, dtype=torch.bool)
        self.needs_reset = torch.ones(b, dtype=torch.bool, device=dev)
        self._seeded = False
        self._render_log: list[list[str]] = [[] for _ in range(b)]

    # ------------------------------------------------------------------ gymnasium API
    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start new episodes in every env, or in ``options["reset_mask"]`` (B,) bool only.

        ``seed``: None, a non-negative int (env ``i`` gets ``seed + i``), or one per env (None entries
        keep that env's seed), as Gymnasium takes them (:mod:`proxy_env.vector.seeding`).
        """
        seeds = seeding.env_seeds(seed, self.num_envs)
        super().reset(seed=seeding.first_seed(seed))
        rows = torch.ones(self.num_envs, dtype=torch.bool, device=self.lm.device)
        if options and "reset_mask" in options:
            mask = np.asarray(options["reset_mask"])
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
        if not self._seeded:
            self.seed = torch.tensor(
                np.random.SeedSequence().generate_state(self.num_envs, np.uint64).astype(np.int64),
                device=self.lm.device,
            )
        if seeds is not None:
            given = rows & torch.tensor([s is not None for s in seeds], device=self.lm.device)
            values = torch.tensor([0 if s is None else s for s in seeds], dtype=torch.long, device=self.lm.device)
            self.seed = torch.where(given, values, self.seed)
            self.episode[given] = 0
        index = None
        if options and "prompt_index" in options:
            index = torch.as_tensor(np.asarray(options["prompt_index"]), dtype=torch.long, device=self.lm.device)
            if index.shape != (self.num_envs,) or bool(((index < 0) | (index >= len(self.prompts))).any()):
                raise ConfigError(
                    f"options['prompt_index'] must be {self.num_envs} ints in [0, {len(self.prompts)}), got {options['prompt_index']!r}."
                )
        self._seeded = True
        if bool(rows.all()):  # a fresh cache makes a seeded reset reproduce bit for bit
            self.cache = self.lm.new_cache(self.num_envs, self.config.hidden_layer)
        self._start(rows, index)
        if self._shaping is not None:
            self._shaping.forget(_np(rows))
        self._failed = None
        obs, info, _ = self._outputs()
        return obs, info

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        act = self._validate(actions)
        reset_now = torch.zeros_like(self.needs_reset)
        if self.needs_reset.any():
            if self.autoreset_mode != AutoresetMode.NEXT_STEP:
                bad = self.needs_reset.nonzero().squeeze(1).tolist()
                raise StateError(
                    f"envs {bad} finished and autoreset_mode is DISABLED: call "
                    "reset(options={'reset_mask': mask}) for them before step()."
                )
            reset_now = self.needs_reset.clone()
        acting = ~reset_now
        steps_forced = self.config.forced_steps
        forced_now = (
            acting & self._forced_at(self.offer) if steps_forced else torch.zeros_like(acting)
        )  # action ignored
        accept = acting & ((act == Action.ACCEPT) | forced_now)
        reject = acting & ~accept
        self.terminated[:] = False
        self.truncated[:] = False
        self.decisions += (acting & ~forced_now).long()
        self.forced += forced_now.long()
        kl = self._kl_charge(accept, reject) if self.kl_coef > 0 else None
        position_before = self.position.clone()
        self._transition(accept, reject)
        if reset_now.any():
            self._start(reset_now, advance=not steps_forced)
        if not self._prefix and not steps_forced:  # feed the next candidates now: forced chains may end episodes
            self._advance(acting & ~(self.terminated | self.truncated))

        reward = torch.where(reject, -self.config.reject_cost, 0.0).double()
        if kl is not None:
            reward -= self.kl_coef * kl.logratio
            self.kl_paid += kl.logratio
            self.kl_exact_paid += kl.exact
        ended = self.terminated | self.truncated
        terminated, truncated = infos.host_copy(self.terminated, self.truncated)
        ended_np = terminated | truncated
        if self._shaping is not None:
            moved = _np(acting & (self.position != position_before))
            reward += torch.as_tensor(self._shaping.step(self, moved, ended_np), device=reward.device)
        info: dict[str, Any] = {}
        if ended_np.any():
            end_info = self._scored(ended)
            if kl is not None:
                end_info.update(
                    kl_paid=_np(self.kl_paid),
                    kl_exact_paid=_np(self.kl_exact_paid),
                    _kl_paid=ended_np.copy(),
                    _kl_exact_paid=ended_np.copy(),
                )
            terminal = end_info["reward_raw"] - end_info["reward_baseline"]
            if self.config.reward_normalize:
                terminal = self._normalize(terminal, ended_np)
                end_info.update(reward_normalized=terminal, _reward_normalized=ended_np.copy())
            if self._shaping is not None:  # the return stays the terminal reward: pay what shaping has not
                terminal = self._shaping.settle(ended_np, terminal)
            reward[ended] += torch.as_tensor(terminal, device=reward.device)[ended]
            if self.autoreset_mode == AutoresetMode.SAME_STEP:
                final, final_step_info, _ = self._outputs()
                info["final_obs"] = infos.final_obs(final, ended_np)
                info["_final_obs"] = ended_np.copy()
                info["final_info"] = {**end_info, **final_step_info}
                info["_final_info"] = ended_np.copy()
                self._start(ended, advance=not steps_forced)
            else:
                self.needs_reset |= ended
                info.update(end_info)
        if steps_forced and not self._prefix:  # one batched forward: every row's next candidate, new episodes' too
            self._advance((self.cache.pending < 0) & ~self.needs_reset)
        extra = {"reward": reward} if kl is None else {"reward": reward, "kl": kl.logratio, "kl_exact": kl.exact}
        obs, step_info, out = self._outputs(**extra)
        info.update(step_info)
        if kl is not None:
            info.update(kl=out["kl"], kl_exact=out["kl_exact"], kl_coef=np.full(self.num_envs, self.kl_coef))
        return obs, out["reward"], terminated, truncated, info

    def _validate(self, actions: Any) -> torch.Tensor:
        if not self._seeded:
            raise StateError("step() called before reset(); call reset() first.")
        if self._failed is not None:
            raise StateError(f"the last step() failed ({self._failed[0]}); call reset() before step().")
        return torch.as_tensor(check_actions(actions, self.num_envs), device=self.lm.device)

    # ------------------------------------------------------------------ Gymnasium's sub-env access
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
        self.cache = None  # type: ignore[assignment]
