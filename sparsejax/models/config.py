"""One config for every decoder family (GPT-2, Llama, OLMo-1, OLMo-2, Qwen2), and its mapping to HF configs.

:data:`FAMILY_SPEC` is the one place that defines a family: the architecture choices a fresh model of that family
gets by default, and the ones its Hugging Face config cannot express otherwise (``fixed``: a config that
contradicts them is an error, so every valid config round-trips through ``config.json``).
"""
from __future__ import annotations

import dataclasses
from typing import Any

# Field values a family fixes (its HF config has no switch for them) and its defaults for the free ones.
FAMILY_SPEC: dict[str, dict[str, dict[str, Any]]] = {
    "gpt2": {"fixed": dict(norm="layernorm", norm_position="pre", mlp="gelu", position="learned", qkv_bias=True,
                           out_bias=True, mlp_bias=True, qk_norm=False, clip_qkv=None, rope_scaling=None),
             "defaults": dict(activation="gelu_tanh", norm_eps=1e-5, tie_embeddings=True)},
    "llama": {"fixed": dict(norm="rmsnorm", norm_position="pre", mlp="swiglu", activation="silu", position="rope",
                            qk_norm=False, clip_qkv=None),
              "defaults": dict(norm_eps=1e-5, tie_embeddings=False)},
    "olmo": {"fixed": dict(norm="layernorm_noparam", norm_eps=1e-5, norm_position="pre", mlp="swiglu",
                           activation="silu", position="rope", qk_norm=False, mlp_bias=False),
             "defaults": dict(tie_embeddings=False)},
    "olmo2": {"fixed": dict(norm="rmsnorm", norm_position="post", mlp="swiglu", activation="silu", position="rope",
                            qk_norm=True, clip_qkv=None, mlp_bias=False),
              "defaults": dict(norm_eps=1e-6, tie_embeddings=False)},
    "qwen2": {"fixed": dict(norm="rmsnorm", norm_position="pre", mlp="swiglu", activation="silu", position="rope",
                            qkv_bias=True, out_bias=False, qk_norm=False, clip_qkv=None, mlp_bias=False),
              "defaults": dict(norm_eps=1e-6, tie_embeddings=False)},
}
FAMILIES = tuple(FAMILY_SPEC)
# Families whose HF config has one "attention_bias" switch for q, k, v and o together.
_SHARED_ATTENTION_BIAS = ("llama", "olmo", "olmo2")
_GLOBAL_DEFAULTS = dict(norm_eps=1e-5, rope_theta=10000.0, rope_scaling=None, qkv_bias=False, out_bias=False,
                        mlp_bias=False, qk_norm=False, clip_qkv=None, tie_embeddings=False, dtype="float32",
                        remat="none")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture of a decoder. Fields left ``None`` take the family's value (:data:`FAMILY_SPEC`), so
    ``ModelConfig("olmo2", vocab_size=..., d_model=..., n_layers=..., n_heads=..., d_ff=..., max_position=...)``
    is a correct OLMo-2; ``n_kv_heads`` defaults to ``n_heads`` and ``head_dim`` to ``d_model // n_heads``."""

    family: str
    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int | None = None
    head_dim: int | None = None
    d_ff: int | None = None
    max_position: int = 2048
    norm: str | None = None            # "layernorm" (scale+bias), "layernorm_noparam" (OLMo-1), "rmsnorm"
    norm_eps: float | None = None
    norm_position: str | None = None   # "pre" (x + f(norm(x))) or "post" (OLMo-2: x + norm(f(x)))
    mlp: str | None = None             # "swiglu" (gate/up/down) or "gelu" (fc/proj)
    activation: str | None = None      # "silu", "gelu_tanh" (GPT-2's gelu_new), "gelu" (exact, nanoGPT)
    position: str | None = None        # "rope" or "learned"
    rope_theta: float | None = None
    rope_scaling: tuple[tuple[str, Any], ...] | None = None  # llama3: factor, low/high_freq_factor, original_max
    qkv_bias: bool | None = None
    out_bias: bool | None = None
    mlp_bias: bool | None = None
    qk_norm: bool | None = None        # OLMo-2: RMSNorm over the full q and k projections
    clip_qkv: float | None = None      # OLMo-1 option
    tie_embeddings: bool | None = None
    dtype: str | None = None           # compute dtype; parameters stay float32
    remat: str | None = None           # "none", "full", "dots" (save matmul outputs)

    def __post_init__(self):
        if self.family not in FAMILY_SPEC:
            raise ValueError(f"unknown model family {self.family!r}; choose one of {FAMILIES}")
        spec = FAMILY_SPEC[self.family]
        fill = {**_GLOBAL_DEFAULTS, **spec["defaults"], **spec["fixed"]}
        for name, value in fill.items():
            if getattr(self, name) is None and value is not None:
                object.__setattr__(self, name, value)
        if self.n_kv_heads is None:
            object.__setattr__(self, "n_kv_heads", self.n_heads)
        if self.head_dim is None:
            object.__setattr__(self, "head_dim", self.d_model // self.n_heads)
        if self.d_ff is None:
            object.__setattr__(self, "d_ff", 4 * self.d_model)
        for name, value in spec["fixed"].items():
            if getattr(self, name) != value:
                raise ValueError(f"a {self.family} model has {name}={value!r} (its Hugging Face config cannot "
                                 f"express {getattr(self, name)!r}); drop {name}= or choose another family")
        if self.family in _SHARED_ATTENTION_BIAS and self.qkv_bias != self.out_bias:
            raise ValueError(f"{self.family} has one attention_bias for q, k, v and o: qkv_bias ({self.qkv_bias}) "
                             f"and out_bias ({self.out_bias}) must agree")
        if self.family == "gpt2" and (self.n_kv_heads != self.n_heads or self.head_dim * self.n_heads != self.d_model):
            raise ValueError("gpt2 has no grouped-query attention and head_dim = d_model / n_heads")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads})")
        for name, value, allowed in (("norm", self.norm, ("layernorm", "layernorm_noparam", "rmsnorm")),
                                     ("norm_position", self.norm_position, ("pre", "post")),
                                     ("mlp", self.mlp, ("swiglu", "gelu")),
                                     ("activation", self.activation, ("silu", "gelu_tanh", "gelu")),
                                     ("position", self.position, ("rope", "learned")),
                                     ("dtype", self.dtype, ("float32", "bfloat16")),
                                     ("remat", self.remat, ("none", "full", "dots"))):
            if value not in allowed:
                raise ValueError(f"config.{name}={value!r} is not one of {allowed}")

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)


def _rope_from_hf(hf: dict) -> tuple[float, tuple | None]:
    params = dict(hf.get("rope_parameters") or {})
    theta = float(params.get("rope_theta", hf.get("rope_theta", 10000.0)))
    scaling = hf.get("rope_scaling") or params
    kind = scaling.get("rope_type", scaling.get("type", "default")) if scaling else "default"
    if kind in (None, "default"):
        return theta, None
    if kind != "llama3":
        raise ValueError(f"RoPE scaling {kind!r} is not supported (supported: default, llama3)")
    keys = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
    return theta, tuple((k, float(scaling[k])) for k in keys)


def config_from_hf(hf: dict) -> ModelConfig:
    """A :class:`ModelConfig` from a Hugging Face ``config.json`` dict."""
    kind = hf.get("model_type")
    if kind == "gpt2":
        d = hf["n_embd"]
        return ModelConfig(
            family="gpt2", vocab_size=hf["vocab_size"], d_model=d, n_layers=hf["n_layer"], n_heads=hf["n_head"],
            n_kv_heads=hf["n_head"], head_dim=d // hf["n_head"], d_ff=hf.get("n_inner") or 4 * d,
            max_position=hf["n_positions"], norm="layernorm", norm_eps=hf.get("layer_norm_epsilon", 1e-5),
            mlp="gelu", activation={"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}[
                hf.get("activation_function", "gelu_new")],
            position="learned", qkv_bias=True, out_bias=True, mlp_bias=True,
            tie_embeddings=hf.get("tie_word_embeddings", True))
    if kind not in ("llama", "olmo", "olmo2", "qwen2"):
        raise ValueError(f"unsupported model_type {kind!r} in config.json; supported: gpt2, llama, olmo, olmo2, qwen2")
    if hf.get("hidden_act", "silu") != "silu":
        raise ValueError(f"hidden_act {hf.get('hidden_act')!r} is not supported for {kind} (only silu)")
    if kind == "qwen2" and hf.get("use_sliding_window"):
        raise ValueError("Qwen2 sliding-window attention is not supported; set use_sliding_window=false")
    d, h = hf["hidden_size"], hf["num_attention_heads"]
    theta, scaling = _rope_from_hf(hf)
    return ModelConfig(
        family=kind, vocab_size=hf["vocab_size"], d_model=d, n_layers=hf["num_hidden_layers"], n_heads=h,
        n_kv_heads=hf.get("num_key_value_heads") or h, head_dim=hf.get("head_dim") or d // h,
        d_ff=hf["intermediate_size"], max_position=hf["max_position_embeddings"],
        norm_eps=None if kind == "olmo" else hf.get("rms_norm_eps", 1e-6), rope_theta=theta, rope_scaling=scaling,
        qkv_bias=None if kind == "qwen2" else bool(hf.get("attention_bias", False)),
        out_bias=None if kind == "qwen2" else bool(hf.get("attention_bias", False)),
        mlp_bias=bool(hf.get("mlp_bias", False)) if kind == "llama" else None,
        clip_qkv=hf.get("clip_qkv") if kind == "olmo" else None,
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)))


def config_to_hf(cfg: ModelConfig) -> dict:
    """The inverse of :func:`config_from_hf` (a ``config.json`` that ``transformers`` loads)."""
    if cfg.family == "gpt2":  # ModelConfig has already checked the family's fixed fields
        return dict(model_type="gpt2", architectures=["GPT2LMHeadModel"], vocab_size=cfg.vocab_size,
                    n_embd=cfg.d_model, n_layer=cfg.n_layers, n_head=cfg.n_heads, n_inner=cfg.d_ff,
                    n_positions=cfg.max_position, layer_norm_epsilon=cfg.norm_eps,
                    activation_function={"gelu_tanh": "gelu_new", "gelu": "gelu"}[cfg.activation],
                    tie_word_embeddings=cfg.tie_embeddings, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    arch = {"llama": "LlamaForCausalLM", "olmo": "OlmoForCausalLM", "olmo2": "Olmo2ForCausalLM",
            "qwen2": "Qwen2ForCausalLM"}[cfg.family]
    rope = {"rope_type": "default", "rope_theta": cfg.rope_theta}
    if cfg.rope_scaling:
        rope = {"rope_type": "llama3", "rope_theta": cfg.rope_theta, **dict(cfg.rope_scaling)}
        rope["original_max_position_embeddings"] = int(rope["original_max_position_embeddings"])
    out = dict(model_type=cfg.family, architectures=[arch], vocab_size=cfg.vocab_size, hidden_size=cfg.d_model,
               num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
               num_key_value_heads=cfg.n_kv_heads, head_dim=cfg.head_dim, intermediate_size=cfg.d_ff,
               max_position_embeddings=cfg.max_position, rms_norm_eps=cfg.norm_eps, hidden_act="silu",
               rope_parameters=rope, tie_word_embeddings=cfg.tie_embeddings, attention_dropout=0.0)
    if cfg.family in ("llama", "olmo", "olmo2"):
        out["attention_bias"] = cfg.qkv_bias
    if cfg.family == "llama":
        out["mlp_bias"] = cfg.mlp_bias
    if cfg.family == "olmo":
        out["clip_qkv"] = cfg.clip_qkv
    return out
