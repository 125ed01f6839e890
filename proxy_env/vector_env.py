"""The batched alignment MDP: THE implementation; the single env and the SB3 adapter only translate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv

from proxy_env import candidates as skam
from proxy_env import infos, sub_envs
from proxy_env.config import NUM_STATS, Action, EnvConfig, check_info_text, check_render_mode
from proxy_env.errors import ActionError, ConfigError, StateError
from proxy_env.lm import FrozenLM
from proxy_env.prompts import load_prompts
from proxy_env.rewards import ReferenceBaseline, RunningMeanStd, resolve_reward, score

_PROMPT_SALT = 0x7072  # separates the prompt draw from the Gumbel draws of the same episode
_MAX_SKIPPED_EPISODES = 100


class ProxyRLHFVectorEnv(VectorEnv):
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

    ## Rewards

    Terminal: ``RM(prompt, response) - b(prompt)`` where ``b`` is 0 (``reward_baseline=None``), a
    constant, or ``"reference"``: the reward of the LLM's own greedy response to the same prompt,
    computed once per prompt and cached. Each rejection costs ``reject_cost`` at that step.
    With ``reward_normalize=True`` the terminal reward ``RM - b`` is standardised by a running
    (Welford) mean and standard deviation of every terminal reward seen so far, updated with each
    step's finished episodes before they are normalised (the rejection cost is not normalised).
    ``reward="pairwise"``: 1 / 0.5 / 0 as the LLM itself, judging, prefers the steered response to
    its own greedy one, is undecided, or prefers its own (see :mod:`proxy_env.feedback.pairwise`).

    ## Starting State

    A prompt drawn uniformly (per env, from its seed) from ``prompts``; the first candidate of
    response position 0 is on offer.

    ## Episode End

    ``terminated`` when the committed token is an EOS token; ``truncated`` when the response holds
    ``max_new_tokens`` tokens. A candidate is committed without asking when it is the last one of
    its pool or after ``max_rejections`` rejections at that position.

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
    | ``observation`` | ``"candidate"`` | ``"candidate"`` or ``"candidate_stats"`` |
    | ``hidden_layer`` | -1 | which hidden state (index into ``hidden_states``; -1 is the last) |
    | ``reward_baseline`` | None | None, a float, or ``"reference"`` |
    | ``reject_cost`` | 0.0 | reward subtracted per rejection |
    | ``reward_normalize`` | False | standardise terminal rewards by their running mean and std |
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
    >>> from proxy_env.tiny import tiny_lm
    >>> venv = gym.make_vec("proxy_env/ProxyRLHF-v0", num_envs=4, vectorization_mode="vector_entry_point",
    ...                     model=tiny_lm(), prompts=["Hello!", "How are you?"], max_new_tokens=8)
    >>> obs, info = venv.reset(seed=0)
    >>> obs.shape, obs.dtype
    ((4, 64), dtype('float32'))
    >>> obs, reward, terminated, truncated, info = venv.step(np.ones(4, dtype=np.int64))
    >>> sorted(int(p) for p in info["position"]) == [1, 1, 1, 1] or bool((terminated | truncated).any())
    True

    ## Version History

    * v0: initial version.
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
            max_new_tokens, top_k, top_p, temperature, max_rejections, order, observation, hidden_layer,
            reward_baseline, reject_cost, reward_normalize,
        )
        self.autoreset_mode = _autoreset_mode(autoreset_mode)
        self.render_mode = check_render_mode(render_mode)
        self.info_text = check_info_text(info_text)
        self.prompts = load_prompts(prompts)
        self.lm = model if isinstance(model, FrozenLM) else FrozenLM(model, device=device, dtype=dtype)
        if not -self.lm.num_layers - 1 <= hidden_layer <= self.lm.num_layers:
            raise ConfigError(f"hidden_layer={hidden_layer} is out of range for a {self.lm.num_layers}-layer model.")
        self.reward_fn = resolve_reward(reward, device=self.lm.device, lm=self.lm, config=self.config)
        self.reward_stats = RunningMeanStd()  # of terminal rewards, used when reward_normalize
        self.metadata = {**self.metadata, "autoreset_mode": self.autoreset_mode}

        self.num_envs = num_envs
        dim = self.lm.hidden_size + (NUM_STATS if observation == "candidate_stats" else 0)
        self.single_observation_space = spaces.Box(-np.inf, np.inf, (dim,), np.float32)
        self.single_action_space = spaces.Discrete(2)
        self.observation_space = spaces.Box(-np.inf, np.inf, (num_envs, dim), np.float32)
        self.action_space = spaces.MultiDiscrete(np.full(num_envs, 2))

        self._eos = torch.tensor(self.lm.eos_token_ids, device=self.lm.device)
        self._prompt_ids: dict[int, list[int]] = {}
        self._baseline = ReferenceBaseline(self.lm, self.reward_fn, self.config) if reward_baseline == "reference" else None
        self._allocate()

    # ------------------------------------------------------------------ state
    def _allocate(self) -> None:
        """All per-env state as (num_envs, ...) tensors, allocated once."""
        b, k, dev = self.num_envs, min(self.config.top_k, self.lm.vocab_size), self.lm.device
        zeros = lambda *shape, dtype=torch.long: torch.zeros(*shape, dtype=dtype, device=dev)  # noqa: E731
        self.cache = self.lm.new_cache(b, self.config.hidden_layer)
        self.seed = zeros(b)
        self.episode = zeros(b)
        self.prompt_index = zeros(b)
        self.position = zeros(b)  # response tokens committed
        self.offer = zeros(b)  # index of the candidate on offer = rejections at this position
        empty_pool = skam.Pool(zeros(b, k), zeros(b, k, dtype=torch.float32), zeros(b, k, dtype=torch.float32), zeros(b))
        self.pool = empty_pool
        self.next_pool = empty_pool  # pool of position + 1 if the candidate on offer is accepted
        self.hidden = zeros(b, self.lm.hidden_size, dtype=torch.float32)  # (B, H) at the candidate on offer
        self.response = zeros(b, self.config.max_new_tokens)
        self.decisions, self.rejections, self.forced = zeros(b), zeros(b), zeros(b)
        self.terminated = zeros(b, dtype=torch.bool)
        self.truncated = zeros(b, dtype=torch.bool)
        self.needs_reset = torch.ones(b, dtype=torch.bool, device=dev)
        self._seeded = False
        self._render_log: list[list[str]] = [[] for _ in range(b)]

    def _set_pool(self, rows: torch.Tensor, pool: skam.Pool, target: str) -> None:
        current = getattr(self, target)
        setattr(self, target, skam.Pool(*(torch.where(_rows(rows, c), n, c) for c, n in zip(current, pool))))

    def _ordered(self, pool: skam.Pool) -> skam.Pool:
        if self.config.order == "greedy":
            return pool
        return skam.order(pool, skam.gumbel(self.seed, self.episode, self.position, pool.tokens))

    # ------------------------------------------------------------------ episodes
    def _start(self, rows: torch.Tensor, prompt_index: torch.Tensor | None = None) -> None:
        """Begin new episodes in ``rows`` (B,) bool: draw prompts, prefill, offer the first candidate.

        ``prompt_index`` (B,) picks the prompts (``reset(options={"prompt_index": ...})``); by
        default each env draws one from its seed. An episode that ends before any decision (every
        position had a single-candidate pool) gives the agent nothing to learn from: it is skipped
        and the next prompt is drawn (a chosen prompt is kept).
        """
        for _ in range(_MAX_SKIPPED_EPISODES):
            self._start_once(rows, prompt_index)
            rows = rows & (self.terminated | self.truncated)
            if not bool(rows.any()):
                return
        raise StateError(
            f"{_MAX_SKIPPED_EPISODES} episodes in a row ended before the proxy had a choice: every pool held one "
            f"candidate (top_k={self.config.top_k}, top_p={self.config.top_p}). Raise top_k or top_p."
        )

    def _start_once(self, rows: torch.Tensor, prompt_index: torch.Tensor | None) -> None:
        self.episode[rows] += 1
        if prompt_index is None:
            draw = skam.hash_uniform(self.seed, self.episode, torch.full_like(self.seed, _PROMPT_SALT))
            prompt_index = (draw * len(self.prompts)).long().clamp(max=len(self.prompts) - 1)
        self.prompt_index = torch.where(rows, prompt_index, self.prompt_index)
        index = rows.nonzero().squeeze(1).tolist()
        out = self.cache.reset_rows(rows, [self._encoded(int(self.prompt_index[i])) for i in index])
        logits = torch.zeros(self.num_envs, out.logits.shape[-1], device=out.logits.device)
        logits[rows] = out.logits
        for name in ("position", "offer", "decisions", "rejections", "forced"):
            getattr(self, name)[rows] = 0
        self.terminated[rows] = False
        self.truncated[rows] = False
        self.needs_reset[rows] = False
        self._set_pool(rows, self._ordered(self._truncate(logits)), "pool")
        for i in index:
            self._render_log[i] = []
        self._advance(rows)

    def _encoded(self, index: int) -> list[int]:
        if index not in self._prompt_ids:
            self._prompt_ids[index] = self.lm.encode_prompt(self.prompts[index])
        return self._prompt_ids[index]

    def _truncate(self, logits: torch.Tensor) -> skam.Pool:
        return skam.truncate(logits, self.config.top_k, self.config.top_p, self.config.temperature)

    def _truncate_rows(self, logits: torch.Tensor, rows: torch.Tensor) -> skam.Pool:
        """Pools (B, K) from ``logits`` (B, V), computed for ``rows`` only (top-k over V is the costly part)."""
        if bool(rows.all()):
            return self._truncate(logits)
        index = rows.nonzero().squeeze(1)
        sub = self._truncate(logits[index])
        return skam.Pool(*(c.index_put((index,), n) for c, n in zip(self.next_pool, sub)))

    def _advance(self, pending: torch.Tensor) -> None:
        """Feed the candidate on offer of ``pending`` rows; commit forced ones and repeat for those."""
        pending = pending.clone()
        while bool(pending.any()):
            token = skam.select(self.pool.tokens, self.offer)
            out = self.cache.step(token, pending)
            self.hidden = torch.where(_rows(pending, self.hidden), out.hidden, self.hidden)
            next_pool = self._truncate_rows(out.logits, pending)
            forced = pending & skam.must_commit(self.offer, self.pool.size, self.config.max_rejections)
            self._set_pool(pending & ~forced, next_pool, "next_pool")
            if not bool(forced.any()):
                break
            self.cache.commit(forced)
            self.forced += forced.long()
            self._append(forced, token, next_pool)
            pending = forced & ~(self.terminated | self.truncated)

    def _append(self, rows: torch.Tensor, token: torch.Tensor, next_pool: skam.Pool) -> None:
        """Commit ``token`` (B,) to the responses of ``rows``; end episodes or offer the next position."""
        self._log(rows, token, rejected=False)
        index = rows.nonzero().squeeze(1)
        self.response[index, self.position[index]] = token[index]
        self.position += rows.long()
        self.terminated |= rows & torch.isin(token, self._eos)
        self.truncated |= rows & ~self.terminated & (self.position >= self.config.max_new_tokens)
        live = rows & ~(self.terminated | self.truncated)
        self.offer[live] = 0
        self._set_pool(live, self._ordered(next_pool), "pool")

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Start new episodes in every env, or in ``options["reset_mask"]`` (B,) bool only."""
        super().reset(seed=seed if isinstance(seed, int) else None)
        rows = torch.ones(self.num_envs, dtype=torch.bool, device=self.lm.device)
        if options and "reset_mask" in options:
            mask = np.asarray(options["reset_mask"])
            if mask.shape != (self.num_envs,) or mask.dtype != np.bool_:
                raise ConfigError(f"options['reset_mask'] must be a bool array of shape ({self.num_envs},), got {mask.dtype} {mask.shape}.")
            rows = torch.as_tensor(mask, device=self.lm.device)
        if seed is not None:
            seeds = [seed + i for i in range(self.num_envs)] if isinstance(seed, int) else list(seed)
            if len(seeds) != self.num_envs:
                raise ConfigError(f"seed has {len(seeds)} values for num_envs={self.num_envs}; pass an int or one per env.")
            self.seed = torch.where(rows, torch.tensor(seeds, device=self.lm.device), self.seed)
            self.episode[rows] = 0
        elif not self._seeded:
            self.seed = torch.tensor(np.random.SeedSequence().generate_state(self.num_envs, np.uint64).astype(np.int64), device=self.lm.device)
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
        return self._observe(), self._step_info()

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
        accept = acting & (act == Action.ACCEPT)
        reject = acting & (act == Action.REJECT)
        self.terminated[:] = False
        self.truncated[:] = False
        self.decisions += acting.long()
        token = skam.select(self.pool.tokens, self.offer)
        self.cache.commit(accept)
        self.cache.discard(reject)
        self._log(reject, token, rejected=True)
        self.offer += reject.long()
        self.rejections += reject.long()
        self._append(accept, token, self.next_pool)
        if reset_now.any():
            self._start(reset_now)
        self._advance(acting & ~(self.terminated | self.truncated))

        reward = torch.where(reject, -self.config.reject_cost, 0.0).double()
        ended = self.terminated | self.truncated
        terminated, truncated = _np(self.terminated), _np(self.truncated)
        info: dict[str, Any] = {}
        if ended.any():
            end_info = self._end_info(ended)
            terminal = end_info["reward_raw"] - end_info["reward_baseline"]
            if self.config.reward_normalize:
                terminal = self._normalize(terminal, _np(ended))
                end_info.update(reward_normalized=terminal, _reward_normalized=_np(ended))
            reward[ended] += torch.as_tensor(terminal, device=reward.device)[ended]
            if self.autoreset_mode == AutoresetMode.SAME_STEP:
                info["final_obs"] = infos.final_obs(self._observe(), _np(ended))
                info["_final_obs"] = _np(ended)
                info["final_info"] = {**end_info, **self._step_info()}
                info["_final_info"] = _np(ended)
                self._start(ended)
            else:
                self.needs_reset |= ended
                info.update(end_info)
        obs = self._observe()
        info.update(self._step_info())
        return obs, _np(reward), terminated, truncated, info

    def _validate(self, actions: Any) -> torch.Tensor:
        if not self._seeded:
            raise StateError("step() called before reset(); call reset() first.")
        array = np.asarray(actions.cpu() if isinstance(actions, torch.Tensor) else actions)
        if array.shape == (self.num_envs, 1):
            array = array[:, 0]
        if array.shape != (self.num_envs,):
            raise ActionError(f"actions must have shape ({self.num_envs},), got {array.shape}.")
        if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.bool_)):
            raise ActionError(f"actions must be integers (REJECT=0, ACCEPT=1), got dtype {array.dtype}.")
        if ((array != 0) & (array != 1)).any():
            raise ActionError(f"actions must be 0 (REJECT) or 1 (ACCEPT), got values {sorted(set(array.tolist()))}.")
        return torch.as_tensor(array.astype(np.int64), device=self.lm.device)

    # ------------------------------------------------------------------ observations and infos
    def _observe(self) -> np.ndarray:
        obs = self.hidden
        if self.config.observation == "candidate_stats":
            stats = torch.stack(
                [skam.select(self.pool.logprob, self.offer), skam.select(self.pool.logprob_trunc, self.offer),
                 self.offer.float() / self.config.top_k], dim=1,
            )  # (B, 3)
            obs = torch.cat([obs, stats.clamp(min=-1e4)], dim=1)
        return _np(obs.float())

    def _step_info(self) -> dict[str, Any]:
        return infos.step_info(self.pool, self.offer, self.position, self.lm.tokenizer if self.info_text else None)

    def _end_info(self, ended: torch.Tensor) -> dict[str, Any]:
        """Episode summaries of ``ended`` rows, scored by the reward source in one batched call."""
        index = ended.nonzero().squeeze(1).tolist()
        ids = [self.response[i, : int(self.position[i])].tolist() for i in index]
        prompts = [self.prompts[int(self.prompt_index[i])] for i in index]
        texts = [self.lm.decode(x) for x in ids]
        raw = np.zeros(self.num_envs)
        raw[index] = score(self.reward_fn, prompts, texts)
        baseline = np.zeros(self.num_envs)
        if self._baseline is not None:
            baseline[index] = self._baseline([int(self.prompt_index[i]) for i in index], prompts)
        elif self.config.reward_baseline is not None:
            baseline[index] = float(self.config.reward_baseline)
        numeric = {
            "decisions": _np(self.decisions), "num_rejections": _np(self.rejections), "forced_commits": _np(self.forced),
            "response_length": _np(self.position), "reward_raw": raw, "reward_baseline": baseline,
            "reject_cost": self.config.reject_cost * _np(self.rejections.double()),
        }
        text = {"prompt": prompts, "response": texts, "response_ids": ids} if self.info_text else None
        return infos.end_info(_np(ended), numeric, text)

    def _normalize(self, terminal: np.ndarray, ended: np.ndarray) -> np.ndarray:
        """Update the running statistics with the ended rows' terminal rewards, then standardise them."""
        self.reward_stats.update(terminal[ended])
        return np.where(ended, (terminal - self.reward_stats.mean) / self.reward_stats.std, 0.0)

    # ------------------------------------------------------------------ rendering
    def _log(self, rows: torch.Tensor, token: torch.Tensor, rejected: bool) -> None:
        if self.render_mode != "ansi" or not bool(rows.any()):
            return
        for i in rows.nonzero().squeeze(1).tolist():
            text = self.lm.tokenizer.decode([int(token[i])])
            self._render_log[i].append(f"~~{text}~~" if rejected else text)

    def render(self) -> tuple[str, ...] | None:
        """With ``render_mode="ansi"``: per env, the prompt and the response so far, rejected tokens as ``~~tok~~``."""
        if self.render_mode != "ansi":
            return None
        return tuple(
            f"PROMPT: {self.prompts[int(self.prompt_index[i])]}\nRESPONSE: {''.join(self._render_log[i])}"
            for i in range(self.num_envs)
        )

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


def _np(tensor: torch.Tensor) -> np.ndarray:
    """A numpy copy (never a view of the env's state, which is updated in place)."""
    return tensor.detach().cpu().numpy().copy()


def _rows(rows: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a (B,) mask to broadcast against ``like`` (B, ...)."""
    return rows.view(-1, *([1] * (like.dim() - 1)))


def _autoreset_mode(mode: AutoresetMode | str) -> AutoresetMode:
    if isinstance(mode, AutoresetMode):
        return mode
    names = {m.name.lower(): m for m in AutoresetMode} | {m.value: m for m in AutoresetMode}
    if isinstance(mode, str) and mode.lower() in names:
        return names[mode.lower()]
    from proxy_env.errors import did_you_mean

    raise ConfigError(f"autoreset_mode={mode!r} is not valid; expected one of {[m.name for m in AutoresetMode]}." + did_you_mean(mode, names))
