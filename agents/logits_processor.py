"""A trained proxy inside Hugging Face's ``generate``: a logits processor whose softmax is the steered distribution π.

The proxy-steered sampler (offer the pool in Gumbel-top-k order, commit the first accepted
candidate, the last one forced) has a closed-form next-token distribution π over the pool
(:func:`proxy_env.engine.steering.steered_probs`, derived in :mod:`agents.eval.kl`). Sampling one token from π
is therefore the same as running the accept/reject loop, so ``generate(do_sample=True)`` with this
processor draws the proxy-steered text without rejections or extra LLM calls per rejection.

>>> from proxy_env.engine.tiny import tiny_lm
>>> lm = tiny_lm()
>>> proxy = constant_proxy(1.0, hidden_size=lm.hidden_size, top_k=5, top_p=1.0)
>>> processor = ProxyLogitsProcessor(proxy, lm.model, lm.tokenizer)
>>> ids, mask = lm.left_pad([lm.encode_prompt("Hi!"), lm.encode_prompt("How are you today?")])
>>> out = lm.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=3, pad_token_id=2,
...                         **processor.generate_kwargs())
>>> tuple(out.shape) == (2, ids.shape[1] + 3)
True
>>> processor.remove()
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn
from transformers import LogitsProcessor

from agents.saving.folder import AcceptNet, ProxyFolder, ProxyFolderError, check_llm, load_proxy
from proxy_env.config import prefix_dim
from proxy_env.engine import candidates
from proxy_env.engine.steering import prefix_observation, steered_probs
from proxy_env.errors import ConfigError, ConfigTypeError, StateError

if TYPE_CHECKING:
    from transformers import PreTrainedConfig

OBSERVATIONS = ("prefix", "candidate")
# what generate must leave off: its warpers run *after* user processors (transformers 5.x) and would distort π
NEUTRAL_SAMPLING = {"do_sample": True, "top_k": 0, "top_p": 1.0, "temperature": 1.0}


class ProxyLogitsProcessor(LogitsProcessor):
    """Turns the LLM's next-token scores into ``log π``: the proxy-steered distribution over the SKAM pool.

    Use it as ``model.generate(..., logits_processor=[processor], **NEUTRAL_SAMPLING)``, i.e.
    ``do_sample=True, top_k=0, top_p=1.0, temperature=1.0`` (:meth:`generate_kwargs` returns them).

    **Truncation.** The processor applies ``temperature``, ``top_k`` and ``top_p`` itself, with the
    settings the proxy was trained with (its folder's ``skam``), exactly as the env does
    (:func:`proxy_env.engine.candidates.truncate`, HF's own warper semantics, ties included). ``generate``
    must apply none of them: in transformers 5.x its warpers (``TemperatureLogitsWarper``,
    ``TopKLogitsWarper``, ``TopPLogitsWarper``) are appended *after* the user's processors, so a
    temperature ≠ 1 would rescale ``log π`` and a top-p < 1 would cut π's tail. Pass ``top_k=0``
    explicitly: ``top_k=None`` falls back to HF's default of 50. Processors that ``generate`` runs
    before this one (repetition penalty, ``min_new_tokens``, bad words) change the scores the pool
    is built from, as they would the env's LLM.

    **Returned scores.** ``log π`` on the pool's tokens and ``-inf`` elsewhere (and on pool tokens
    whose π is 0); a row whose every accept probability is 1 gets the tempered scores on the pool,
    the same numbers HF's warpers produce, so an always-accept proxy reproduces HF's sampler token
    for token under the same seed.

    **Hidden state.** A forward hook on ``model`` (registered here, removed by :meth:`remove` or
    on leaving a ``with`` block) turns on ``output_hidden_states`` and keeps
    ``hidden_states[hidden_layer][:, -1]`` of each forward that ``generate`` runs: with the KV
    cache, the last position of each step is the token just committed, which is what the env
    observes. Batches and left padding work as ``generate``'s own: the last column is every row's
    last real token, and positions follow its attention mask.

    **Observation modes and their cost.** ``"prefix"``: every pool candidate's observation is built
    from that hidden state and the candidate's embedding and log-probabilities, so the whole pool
    costs one small batched proxy call (B·K rows) and no LLM forward. ``"candidate"``: each
    candidate's observation is its own hidden state, so every step runs one extra LLM forward over
    the B·K pool tokens (K = pool width ≤ top_k + 8), each attending to its row's cached prefix and
    itself only (a 4-D mask over ``generate``'s ``DynamicCache``, whose layers are restored after):
    about the cost of a K-token prefill per row per step. ``"candidate_stats"`` depends on the offer
    rank, where π has no closed form, and is refused (use :class:`agents.generate.ProxyGenerator`).

    Args:
        proxy: a proxy folder (path) or a loaded :class:`~agents.saving.folder.ProxyFolder`.
        model: the frozen LLM (a transformers ``PreTrainedModel``) or a :class:`~proxy_env.engine.lm.FrozenLM`.
        tokenizer: its tokenizer (taken from a ``FrozenLM``); used for the fingerprint check.
        deterministic: use the proxy's argmax action (accept probabilities 0/1) instead of its policy.
        check_fingerprint: refuse an LLM whose fingerprint differs from the one the proxy was trained on.
    """

    def __init__(
        self,
        proxy: ProxyFolder | str | Path,
        model: Any,
        tokenizer: Any = None,
        *,
        deterministic: bool = False,
        check_fingerprint: bool = True,
    ) -> None:
        if hasattr(model, "tokenizer") and hasattr(model, "model") and not isinstance(model, nn.Module):  # a FrozenLM
            tokenizer = tokenizer if tokenizer is not None else model.tokenizer
            model = model.model
        if not isinstance(model, nn.Module) or not hasattr(model, "generate"):
            raise ConfigTypeError(
                f"model must be a transformers PreTrainedModel or a FrozenLM, got {type(model).__name__}."
            )
        self.proxy = proxy if isinstance(proxy, ProxyFolder) else load_proxy(proxy, device=_device(model))
        if self.proxy.observation not in OBSERVATIONS:
            raise ConfigError(
                f"the proxy at {str(self.proxy.path)!r} uses observation={self.proxy.observation!r}, whose accept probability "
                f"depends on the offer rank: π has no closed form. Supported: {list(OBSERVATIONS)}; use ProxyGenerator for it."
            )
        if check_fingerprint:
            if tokenizer is None:
                raise ConfigError(
                    "tokenizer= is required to check the LLM's fingerprint (or pass check_fingerprint=False)."
                )
            check_llm(self.proxy.llm, model, tokenizer, where=f"proxy folder {str(self.proxy.path)!r}")
        self.model, self.deterministic = model, bool(deterministic)
        self._view = SimpleNamespace(model=model)  # what prefix_observation reads (the input embeddings)
        self._check_dims()
        self._step: dict[str, Any] = {}
        self._inner = False  # True while the processor runs its own candidate forward
        self._hooks = [
            model.register_forward_pre_hook(self._before, with_kwargs=True),
            model.register_forward_hook(self._after, with_kwargs=True),
        ]

    # ----------------------------------------------------------------- use
    def generate_kwargs(self) -> dict[str, Any]:
        """``generate`` keyword arguments that steer with this processor: sampling on, HF's own truncation off."""
        return {**NEUTRAL_SAMPLING, "logits_processor": [self]}

    def remove(self) -> None:
        """Take the hooks off the model (the processor cannot be used after this)."""
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    def __enter__(self) -> ProxyLogitsProcessor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()

    # ----------------------------------------------------------------- hooks
    def _before(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        if self._inner:
            return None
        return args, {**kwargs, "output_hidden_states": True}

    def _after(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
        if self._inner:
            return
        hidden = out.hidden_states[self.proxy.hidden_layer][:, -1].float()  # (B, H) at each row's last token
        self._step = {
            "hidden": hidden,
            "cache": kwargs.get("cache", kwargs.get("past_key_values")),
            "mask": kwargs.get("attention_mask"),
            "positions": kwargs.get("position_ids"),
        }

    # ----------------------------------------------------------------- the step
    @torch.no_grad()
    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """``scores`` (B, V) -> ``log π`` (B, V): ``-inf`` outside the pool."""
        if not self._hooks:
            raise StateError(
                "this ProxyLogitsProcessor was removed (remove() or a closed with-block); build a new one."
            )
        step, self._step = self._step, {}
        if not step or step["hidden"].shape[0] != scores.shape[0]:
            raise StateError(
                "ProxyLogitsProcessor saw no forward of its model for this step: pass it to the generate() of the model it "
                "was built with (a processor is tied to one model), and do not share it between concurrent generate calls."
            )
        skam_cfg = self.proxy.skam
        pool = candidates.truncate(
            scores, int(skam_cfg["top_k"]), float(skam_cfg["top_p"]), float(skam_cfg["temperature"])
        )
        _b, k = pool.tokens.shape
        valid = torch.arange(k, device=scores.device)[None, :] < pool.size[:, None]  # (B, K)
        q = pool.logq.double().exp()
        q = q / q.sum(-1, keepdim=True)
        accept = self._accept(pool, step).masked_fill(~valid, 0.0)  # (B, K)
        pi = steered_probs(q, accept, skam_cfg.get("max_rejections"), order=str(skam_cfg.get("order", "sample")))
        log_pi = pi.clamp_min(1e-300).log().masked_fill((pi <= 0) | ~valid, float("-inf")).to(scores.dtype)  # (B, K)
        tempered = (scores.gather(1, pool.tokens) / float(skam_cfg["temperature"])).masked_fill(~valid, float("-inf"))
        always = ((accept >= 1.0) | ~valid).all(-1, keepdim=True)  # (B, 1): π = q (Gumbel order), give HF's own numbers
        always &= skam_cfg.get("order", "sample") == "sample"
        out = torch.full_like(scores, float("-inf"))
        # FloatTensor: the legacy alias transformers' LogitsProcessor signature uses; the values are scores' dtype
        return cast(torch.FloatTensor, out.scatter_(1, pool.tokens, torch.where(always, tempered, log_pi)))

    def _accept(self, pool: candidates.Pool, step: dict[str, Any]) -> torch.Tensor:
        """P(accept) (B, K) float64 of every pool candidate."""
        b, k = pool.tokens.shape
        if self.proxy.observation == "prefix":
            obs = prefix_observation(self._view, step["hidden"], pool.tokens, pool.logprob, pool.logq)  # (B, K, 3H + 2)
        else:
            obs = self._candidate_hidden(pool.tokens, step)  # (B, K, H)
        net: AcceptNet = self.proxy.net
        p = net(obs.reshape(b * k, -1).to(next(net.parameters()).device), deterministic=self.deterministic)
        return p.double().reshape(b, k).to(pool.tokens.device)

    def _candidate_hidden(self, tokens: torch.Tensor, step: dict[str, Any]) -> torch.Tensor:
        """Hidden states (B, K, H) of each pool candidate appended to its row's prefix, in one forward over the cache."""
        cache, mask = step["cache"], step["mask"]
        layers = getattr(cache, "layers", None)
        if cache is None or layers is None or not all(hasattr(layer, "keys") for layer in layers):
            raise StateError(
                "observation='candidate' needs generate's DynamicCache: call generate with use_cache=True (the default) "
                "and no static or sliding-window cache."
            )
        b, k = tokens.shape
        if mask is None:  # generate drops an all-ones mask (a batch without padding)
            mask = torch.ones(b, cache.get_seq_length(), dtype=torch.long, device=tokens.device)
        past = mask.shape[1]  # (B, L) covers the cache, the token just fed included
        if cache.get_seq_length() != past:
            raise StateError(
                f"the cache holds {cache.get_seq_length()} positions but the attention mask {past}: not a plain generate step."
            )
        dtype = next(self.model.parameters()).dtype
        visible = torch.cat(
            [
                mask.bool()[:, None, :].expand(b, k, past),
                torch.eye(k, dtype=torch.bool, device=mask.device)[None].expand(b, k, k),
            ],
            dim=-1,
        )  # (B, K, L + K)
        attn = torch.zeros(b, 1, k, past + k, dtype=dtype, device=mask.device).masked_fill(
            ~visible[:, None], torch.finfo(dtype).min
        )
        last = step["positions"][:, -1] if step["positions"] is not None else mask.sum(-1) - 1  # (B,)
        saved = [(layer.keys, layer.values) for layer in layers]
        kwargs = _forward_kwargs(self.model, cache)
        self._inner = True
        try:
            out = self.model(
                input_ids=tokens,
                attention_mask=attn,
                position_ids=(last + 1)[:, None].expand(b, k),
                output_hidden_states=True,
                use_cache=True,
                **kwargs,
            )
        finally:
            self._inner = False
            for layer, (keys, values) in zip(layers, saved):  # the candidates leave generate's cache as it was
                layer.keys, layer.values = keys, values
        return out.hidden_states[self.proxy.hidden_layer].float()  # (B, K, H)

    def _check_dims(self) -> None:
        config = cast("PreTrainedConfig", self.model.config)  # nn.Module.__getattr__ is typed Tensor | Module
        hidden = int(config.get_text_config().hidden_size)
        want = {"prefix": prefix_dim(hidden), "candidate": hidden}[self.proxy.observation]
        if self.proxy.obs_dim != want:
            raise ProxyFolderError(
                f"proxy folder {str(self.proxy.path)!r} expects observations of size {self.proxy.obs_dim}, but observation="
                f"{self.proxy.observation!r} on this model (hidden size {hidden}) gives {want}: pass the LLM it was trained with."
            )


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _forward_kwargs(model: nn.Module, cache: Any) -> dict[str, Any]:
    """The cache under this transformers version's name, and no LM head over the B·K candidates where the model allows."""
    import inspect

    params = inspect.signature(model.forward).parameters
    kwargs: dict[str, Any] = {"cache" if "cache" in params else "past_key_values": cache}
    if "logits_to_keep" in params:
        kwargs["logits_to_keep"] = 1  # only hidden states are read
    return kwargs


def constant_proxy(
    accept: float, *, hidden_size: int, observation: str = "prefix", hidden_layer: int = -1, **skam_settings: Any
) -> ProxyFolder:
    """A proxy that accepts every candidate with probability ``accept`` (no fingerprint): for tests and examples.

    ``skam_settings`` override the pool settings (``top_k``, ``top_p``, ``temperature``, ``max_rejections``, ``order``).
    """
    from agents.saving.folder import summary

    if not 0.0 <= accept <= 1.0:
        raise ConfigError(f"accept={accept!r} must be in [0, 1].")
    dim = {"prefix": prefix_dim(hidden_size), "candidate": hidden_size}[observation]
    head = nn.Linear(dim, 2)
    with torch.no_grad():
        head.weight.zero_()
        logit = 80.0 if accept >= 1.0 else (-80.0 if accept <= 0.0 else float(torch.logit(torch.tensor(accept))))
        head.bias.copy_(torch.tensor([0.0, logit]))
    net = AcceptNet(None, nn.Sequential(), head, kind="categorical").eval().requires_grad_(False)
    info = summary({"observation": observation, "hidden_layer": hidden_layer, **skam_settings})
    config = {"observation_space": {"type": "Box", "shape": [dim], "dtype": "float32"}, **info}
    return ProxyFolder(Path(f"<constant {accept}>"), net, config, observation, hidden_layer, info["skam"], {})
