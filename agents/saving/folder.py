"""A trained proxy for inference, read from its folder without stable-baselines3 and without unpickling.

The folder is the checkpoint format of :mod:`agents.saving.format` (``model.safetensors`` +
``proxy_config.json``, plus the ``README.md`` model card :func:`agents.saving.export.export` writes). This
module rebuilds only the part of the SB3 policy that answers "accept?" as plain ``torch.nn``
layers, from the tensor names and ``policy_kwargs``, so a user's generation stack needs torch,
safetensors and this package, never ``stable_baselines3``:

============== ================================================================ ======================
algorithm      layers read                                                      P(accept)
============== ================================================================ ======================
PPO, A2C, TRPO ``[pi_]features_extractor``, ``mlp_extractor.policy_net``,       softmax of the logits
               ``action_net``
DQN            ``q_net.features_extractor``, ``q_net.q_net``                    greedy (ε-greedy when
QR-DQN         ``quantile_net.features_extractor``, ``quantile_net.quantile_net``  sampling), mean quantile
============== ================================================================ ======================

Recurrent PPO is refused: its answer depends on its memory, so no exact steered distribution exists.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from proxy_env.config import EnvConfig
from proxy_env.errors import DataError

CONFIG_FILE = "proxy_config.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "README.md"
FORMAT = "proxy-rlhf-proxy"
_ACTOR_CRITIC = ("ppo", "a2c", "trpo")
_ACTIVATIONS = {
    cls.__name__: cls for cls in (nn.Tanh, nn.ReLU, nn.ELU, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Identity)
}
# where each algorithm keeps (features extractor candidates, MLP, head or None: the MLP's last layer is the head)
_LAYOUT: dict[str, tuple[tuple[str, ...], str, str | None]] = {
    **{
        name: (("pi_features_extractor", "features_extractor"), "mlp_extractor.policy_net", "action_net")
        for name in _ACTOR_CRITIC
    },
    "dqn": (("q_net.features_extractor",), "q_net.q_net", None),
    "qrdqn": (("quantile_net.features_extractor",), "quantile_net.quantile_net", None),
}
# env defaults, for folders written before the summary fields existed
# the env settings that define the pool (the folder's "skam" record); their defaults are EnvConfig's
POOL_SETTINGS = ("top_k", "top_p", "temperature", "max_rejections", "order")


class ProxyFolderError(DataError):
    """A proxy folder is missing, damaged, or does not fit the LLM it is used with (a ``ValueError``)."""


class AcceptNet(nn.Module):
    """The proxy's accept probability ``(N, d) -> (N,)``, rebuilt from an SB3 policy's tensors.

    Args:
        extractor: LayerNorm, Linear and activation over the observation (``HiddenStateExtractor``), or None (flatten).
        body: the MLP of the head, activations included.
        head: the last Linear (actor-critic: logits of REJECT/ACCEPT); None when ``body`` ends in it.
        kind: ``"categorical"`` (actor-critic), ``"q"`` (DQN) or ``"quantile"`` (QR-DQN).
        exploration_rate: ε of a value-based proxy's ε-greedy sampling.
    """

    def __init__(
        self,
        extractor: nn.Module | None,
        body: nn.Sequential,
        head: nn.Linear | None,
        *,
        kind: str,
        exploration_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.extractor = extractor if extractor is not None else nn.Identity()
        self.body = body
        self.head = head if head is not None else nn.Identity()
        self.kind = kind
        self.exploration_rate = float(exploration_rate)

    @torch.no_grad()
    def forward(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """P(accept) (N,) float32 of observations ``obs`` (N, d); ``deterministic``: the argmax action (0 or 1)."""
        out = self.head(self.body(self.extractor(obs.float())))  # (N, 2), or (N, quantiles * 2)
        if self.kind == "quantile":
            out = out.reshape(out.shape[0], -1, 2).mean(1)  # (N, 2) mean over quantiles, as QR-DQN's predict
        greedy = (out.argmax(-1) == 1).float()  # ties -> REJECT, as argmax
        if self.kind == "categorical":
            return greedy if deterministic else out.softmax(-1)[:, 1]
        eps = 0.0 if deterministic else self.exploration_rate
        return eps / 2 + (1 - eps) * greedy


@dataclass
class ProxyFolder:
    """A proxy folder loaded for inference: the accept network and what it was trained with."""

    path: Path
    net: AcceptNet
    config: dict[str, Any]
    observation: str
    hidden_layer: int
    skam: dict[str, Any]  # top_k, top_p, temperature, max_rejections, order
    llm: dict[str, Any] = field(default_factory=dict)  # name and fingerprint

    @property
    def obs_dim(self) -> int:
        return int(self.config["observation_space"]["shape"][0])


def summary(env_kwargs: dict[str, Any]) -> dict[str, Any]:
    """The settings a user of the proxy needs, as recorded in ``proxy_config.json``: observation, layer, SKAM pool."""
    return {
        "observation": str(env_kwargs.get("observation", "candidate")),
        "hidden_layer": int(env_kwargs.get("hidden_layer", -1)),
        "skam": {key: env_kwargs.get(key, getattr(EnvConfig(), key)) for key in POOL_SETTINGS},
    }


def load_proxy(path: str | Path, *, device: str | torch.device = "cpu") -> ProxyFolder:
    """Read the proxy folder ``path`` (no stable-baselines3 import, nothing unpickled).

    Raises:
        ProxyFolderError: no such folder, a missing or damaged file, or a policy this loader cannot
            rebuild (a recurrent one, or an SB3 ``proxy.zip`` folder: convert it with ``proxy-rlhf export``).
    """
    path = Path(path).expanduser()
    where = f"proxy folder {str(path)!r}"
    config = _read_config(path, where)
    algo = str(config.get("algo", ""))
    if algo not in _LAYOUT:
        why = (
            "its accept probability depends on its memory"
            if algo == "recurrentppo"
            else "this loader knows " + ", ".join(_LAYOUT)
        )
        raise ProxyFolderError(
            f"{where}: algo={algo!r} cannot steer a sampler ({why}); use agents.generate.ProxyGenerator instead."
        )
    tensors = _tensors(path / WEIGHTS_FILE, where, config)
    net = _build(algo, config, tensors, where).to(device).eval().requires_grad_(False)
    info: dict[str, Any] = {
        **summary(config.get("env_kwargs") or {}),
        **{k: config[k] for k in ("observation", "hidden_layer", "skam") if k in config},
    }
    return ProxyFolder(
        path,
        net,
        config,
        info["observation"],
        int(info["hidden_layer"]),
        dict(info["skam"]),
        dict(config.get("llm") or {}),
    )


def _read_config(path: Path, where: str) -> dict[str, Any]:
    if not path.is_dir():
        raise ProxyFolderError(
            f"{where} is not a folder; pass a folder written by `proxy-rlhf export` or `proxy-rlhf train --save-dir`."
        )
    file = path / CONFIG_FILE
    if not file.is_file():
        hint = (
            " It holds an SB3 proxy.zip (format 1): convert it with `proxy-rlhf export --trust-checkpoint`."
            if (path / "proxy.zip").is_file()
            else ""
        )
        raise ProxyFolderError(f"{where} has no {CONFIG_FILE}: it is not a proxy folder.{hint}")
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProxyFolderError(f"{where}: {CONFIG_FILE} is not valid JSON ({exc}); export the proxy again.") from exc
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        got = config.get("format") if isinstance(config, dict) else type(config).__name__
        raise ProxyFolderError(
            f"{where}: {CONFIG_FILE} has format={got!r}, expected {FORMAT!r}; export the proxy again."
        )
    if not (path / WEIGHTS_FILE).is_file():
        raise ProxyFolderError(f"{where} has no {WEIGHTS_FILE}: it is incomplete; export the proxy again.")
    return config


def file_digest(file: Path) -> str:
    """The sha256 of ``file``'s bytes (what ``proxy_config.json``'s ``files`` records for each tensor file)."""
    sha = hashlib.sha256()
    with open(file, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def verify_digest(file: Path, config: dict[str, Any], where: str, error: type[Exception]) -> None:
    """Refuse ``file`` when its sha256 differs from the one ``config["files"]`` recorded at save time.

    Folders saved before digests were recorded have no ``files`` entry and are not checked.
    """
    recorded = (config.get("files") or {}).get(file.name)
    if recorded is not None and file_digest(file) != recorded:
        raise error(
            f"{where}: {file.name} is damaged or truncated: its sha256 is not the one {CONFIG_FILE} recorded when "
            "it was saved (the file changed since: a bad copy, a full disk or an edit). Re-save or re-export the "
            "proxy, or pass another folder."
        )


def _tensors(file: Path, where: str, config: dict[str, Any]) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    verify_digest(file, config, where, ProxyFolderError)
    try:
        return load_file(str(file), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise ProxyFolderError(
            f"{where}: {file.name} is damaged or truncated ({exc}); export the proxy again."
        ) from exc


def _activation(spec: Any, default: type[nn.Module], where: str) -> nn.Module:
    if spec is None:
        return default()
    name = spec.get("class") if isinstance(spec, dict) else spec
    if name not in _ACTIVATIONS:
        raise ProxyFolderError(
            f"{where}: activation {name!r} is not one this loader rebuilds ({', '.join(_ACTIVATIONS)})."
        )
    return _ACTIVATIONS[name]()


def _linears(tensors: dict[str, torch.Tensor], prefix: str) -> list[int]:
    """Indices ``i`` of the Linear layers ``{prefix}.{i}.weight`` (2-D), in order."""
    found = [
        key[len(prefix) + 1 :].split(".")[0]
        for key in tensors
        if key.startswith(prefix + ".") and key.endswith(".weight")
    ]
    return sorted({int(i) for i in found if i.isdigit() and tensors[f"{prefix}.{i}.weight"].dim() == 2})


def _linear(tensors: dict[str, torch.Tensor], name: str) -> nn.Linear:
    weight, bias = tensors[f"{name}.weight"], tensors.get(f"{name}.bias")
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    layer.load_state_dict({"weight": weight, **({"bias": bias} if bias is not None else {})})
    return layer


def _build(algo: str, config: dict[str, Any], tensors: dict[str, torch.Tensor], where: str) -> AcceptNet:
    candidates, mlp, head_name = _LAYOUT[algo]
    policy_kwargs = config.get("policy_kwargs") or {}
    try:
        extractor = _extractor(tensors, candidates, policy_kwargs, where)
        act_default = nn.Tanh if algo in _ACTOR_CRITIC else nn.ReLU
        layers: list[nn.Module] = []
        indices = _linears(tensors, mlp)
        for n, i in enumerate(indices):
            layers.append(_linear(tensors, f"{mlp}.{i}"))
            if head_name is not None or n < len(indices) - 1:  # SB3's MlpExtractor: activation after every layer
                layers.append(_activation(policy_kwargs.get("activation_fn"), act_default, where))
        head = _linear(tensors, head_name) if head_name is not None else None
    except (KeyError, RuntimeError, IndexError) as exc:
        raise ProxyFolderError(
            f"{where}: {WEIGHTS_FILE} does not hold the {algo} policy {CONFIG_FILE} describes ({type(exc).__name__}: {exc})."
        ) from exc
    if head is None and not indices:
        raise ProxyFolderError(f"{where}: {WEIGHTS_FILE} holds no {mlp} layers; export the proxy again.")
    kind = "categorical" if algo in _ACTOR_CRITIC else ("quantile" if algo == "qrdqn" else "q")
    eps = float((config.get("state") or {}).get("exploration_rate", 0.0) or 0.0)
    return AcceptNet(extractor, nn.Sequential(*layers), head, kind=kind, exploration_rate=eps)


def _extractor(
    tensors: dict[str, torch.Tensor], candidates: tuple[str, ...], policy_kwargs: dict[str, Any], where: str
) -> nn.Module | None:
    for prefix in candidates:  # a shared extractor is stored once, under one of its names
        if f"{prefix}.net.1.weight" in tensors:
            norm_w = tensors[f"{prefix}.net.0.weight"]
            norm = nn.LayerNorm(norm_w.shape[0])
            norm.load_state_dict({"weight": norm_w, "bias": tensors[f"{prefix}.net.0.bias"]})
            kwargs = policy_kwargs.get("features_extractor_kwargs") or {}
            act = nn.ReLU() if kwargs.get("activation", "tanh") == "relu" else nn.Tanh()
            return nn.Sequential(norm, _linear(tensors, f"{prefix}.net.1"), act)
    cls = (policy_kwargs.get("features_extractor_class") or {}).get("class", "FlattenExtractor")
    if cls != "FlattenExtractor":
        raise ProxyFolderError(
            f"{where}: features extractor {cls!r} has no tensors under {list(candidates)}; export the proxy again."
        )
    return None


# ---------------------------------------------------------------------------- the LLM it reads
def fingerprint(model: Any, tokenizer: Any) -> dict[str, Any]:
    """The LLM fingerprint of a Hugging Face ``model`` and ``tokenizer`` (sizes, vocabulary, their sha256 ``config_hash``).

    Only fields that mean the same across transformers versions are hashed, so an upgrade does not
    orphan a proxy. ``weights_hash`` tells two models of one architecture with different weights apart: a
    sha256 of a few rows of the input embeddings and of the last parameter, rounded to bfloat16 first so that
    the same weights loaded in float32 or bfloat16, on any device, give the same hash.
    """
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    fields = {
        "model_type": str(getattr(cfg, "model_type", "")),
        "vocab_size": int(model.get_output_embeddings().weight.shape[0]),
        "hidden_size": int(cfg.hidden_size),
        "num_layers": int(cfg.num_hidden_layers),
        "num_attention_heads": int(getattr(cfg, "num_attention_heads", 0) or 0),
        "max_position_embeddings": int(getattr(cfg, "max_position_embeddings", 0) or 0),
        "tokenizer_size": len(tokenizer),
    }
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]
    return {**fields, "config_hash": digest, "weights_hash": _weights_hash(model)}


@torch.no_grad()
def _weights_hash(model: Any) -> str:
    embeddings = model.get_input_embeddings().weight
    last = list(model.parameters())[-1]
    sample = [embeddings[:4], embeddings[-4:], last.reshape(-1)[:256]]
    sha = hashlib.sha256()
    for tensor in sample:
        sha.update(tensor.detach().to("cpu", torch.bfloat16).float().numpy().tobytes())
    return sha.hexdigest()[:16]


def check_llm(saved: dict[str, Any], model: Any, tokenizer: Any, *, where: str, name: str | None = None) -> None:
    """Refuse an LLM whose fingerprint differs from ``saved`` (``{"name", "fingerprint"}``), naming both.

    A record without a fingerprint (a proxy trained on a model object that had none) is not checked.
    """
    expected = (saved or {}).get("fingerprint")
    if not expected:
        return
    now = fingerprint(model, tokenizer)
    same_weights = expected.get("weights_hash") in (None, now["weights_hash"])  # older records have none
    if now["config_hash"] == expected.get("config_hash") and same_weights:
        return
    keys = [k for k in now if k != "config_hash" and k in expected and now.get(k) != expected.get(k)]
    diff = ", ".join(f"{k} {expected.get(k)!r} vs {now.get(k)!r}" for k in keys) or "config hash"
    given = name or getattr(model.config, "_name_or_path", "") or type(model).__name__
    raise ProxyFolderError(
        f"{where} was trained on the LLM {saved.get('name')!r} (fingerprint {expected.get('config_hash')}), but model={given!r} "
        f"has fingerprint {now['config_hash']} ({diff}): the proxy reads that LLM's hidden states. "
        f"Pass the LLM it was trained with ({saved.get('name')!r}; CLI: --model {saved.get('name')!r})."
    )
