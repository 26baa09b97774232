"""One config for every decoder family (GPT-2, Llama, OLMo-1, OLMo-2, Qwen2, Gemma 3), and its mapping to HF
configs.

:data:`FAMILY_SPEC` is the one place that defines a family: the architecture choices a fresh model of that family
gets by default, and the ones its Hugging Face config cannot express otherwise (``fixed``: a config that
contradicts them is an error, so every valid config round-trips through ``config.json``).
"""
from __future__ import annotations

import dataclasses
from typing import Any

# Gemma's architecture switches, off in every other family (their HF configs cannot state them).
_NOT_GEMMA = dict(qk_norm_per_head=False, embed_scale=False, query_pre_attn_scalar=None, rope_local_theta=None)
# Field values a family fixes (its HF config has no switch for them) and its defaults for the free ones.
FAMILY_SPEC: dict[str, dict[str, dict[str, Any]]] = {
    "gpt2": {"fixed": dict(norm="layernorm", norm_position="pre", mlp="gelu", position="learned", qkv_bias=True,
                           out_bias=True, mlp_bias=True, qk_norm=False, clip_qkv=None, rope_scaling=None, **_NOT_GEMMA),
             "defaults": dict(activation="gelu_tanh", norm_eps=1e-5, tie_embeddings=True)},
    "llama": {"fixed": dict(norm="rmsnorm", norm_position="pre", mlp="swiglu", activation="silu", position="rope",
                            qk_norm=False, clip_qkv=None, **_NOT_GEMMA),
              "defaults": dict(norm_eps=1e-5, tie_embeddings=False)},
    "olmo": {"fixed": dict(norm="layernorm_noparam", norm_eps=1e-5, norm_position="pre", mlp="swiglu",
                           activation="silu", position="rope", qk_norm=False, mlp_bias=False, **_NOT_GEMMA),
             "defaults": dict(tie_embeddings=False)},
    "olmo2": {"fixed": dict(norm="rmsnorm", norm_position="post", mlp="swiglu", activation="silu", position="rope",
                            qk_norm=True, clip_qkv=None, mlp_bias=False, **_NOT_GEMMA),
              "defaults": dict(norm_eps=1e-6, tie_embeddings=False)},
    "qwen2": {"fixed": dict(norm="rmsnorm", norm_position="pre", mlp="swiglu", activation="silu", position="rope",
                            qkv_bias=True, out_bias=False, qk_norm=False, clip_qkv=None, mlp_bias=False,
                            **_NOT_GEMMA),
              "defaults": dict(norm_eps=1e-6, tie_embeddings=False)},
    # Gemma 3 (text): GeGLU (tanh GELU), RMSNorm with (1 + w), norms before and after attention and MLP, per-head
    # QK-norm, embedding x sqrt(d_model), logits scaled by query_pre_attn_scalar^-1/2, local (sliding-window) and
    # global layers with their own RoPE bases; every sixth layer global unless layer_types says otherwise.
    "gemma3": {"fixed": dict(norm="rmsnorm_plus_one", norm_position="sandwich", mlp="swiglu", activation="gelu_tanh",
                             position="rope", qk_norm=True, qk_norm_per_head=True, clip_qkv=None, mlp_bias=False,
                             embed_scale=True, rope_scaling=None),
               "defaults": dict(norm_eps=1e-6, tie_embeddings=True, rope_theta=1_000_000.0, rope_local_theta=10_000.0,
                                sliding_window=512, qkv_bias=False, out_bias=False)},
}
# Gemma 3's default layer pattern: every sixth layer is global (full attention), the others local.
GEMMA3_SLIDING_PATTERN = 6
LAYER_TYPES = ("full_attention", "sliding_attention")
DTYPES = ("float32", "bfloat16")  # the compute dtype (parameters stay float32)
REMAT = ("none", "full", "dots")  # decoder.py: each layer under jax.checkpoint, saving nothing or the matmul outputs
FAMILIES = tuple(FAMILY_SPEC)
# Families whose HF config has one "attention_bias" switch for q, k, v and o together.
_SHARED_ATTENTION_BIAS = ("llama", "olmo", "olmo2", "gemma3")
# Families whose Hugging Face config can state a sliding window (the others attend over every causal key).
_SLIDING_FAMILIES = ("qwen2", "gemma3")
_GLOBAL_DEFAULTS = dict(norm_eps=1e-5, rope_theta=10000.0, rope_scaling=None, qkv_bias=False, out_bias=False,
                        mlp_bias=False, qk_norm=False, qk_norm_per_head=False, clip_qkv=None, tie_embeddings=False,
                        embed_scale=False, dtype="float32", remat="none")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture of a decoder. Fields left ``None`` take the family's value (:data:`FAMILY_SPEC`), so
    ``ModelConfig("olmo2", vocab_size=..., d_model=..., n_layers=..., n_heads=..., d_ff=..., max_position=...)``
    is a correct OLMo-2; ``n_kv_heads`` defaults to ``n_heads`` and ``head_dim`` to ``d_model // n_heads``.

    Sliding-window attention: ``sliding_window`` W (a key j is visible to query i iff ``j <= i`` and
    ``i - j < W``) applies to the layers whose ``layer_types`` entry is ``"sliding_attention"`` (the others are
    ``"full_attention"``); ``layer_types`` defaults to every layer sliding when W is set (Gemma 3: every sixth
    layer global), and the sliding layers use ``rope_local_theta`` (default ``rope_theta``)."""

    family: str
    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int | None = None
    head_dim: int | None = None
    d_ff: int | None = None
    max_position: int = 2048
    norm: str | None = None            # "layernorm" (scale+bias), "layernorm_noparam" (OLMo-1), "rmsnorm",
                                       # "rmsnorm_plus_one" (Gemma: x / rms(x) * (1 + w), in float32)
    norm_eps: float | None = None
    norm_position: str | None = None   # "pre" (x + f(norm(x))), "post" (OLMo-2: x + norm(f(x))) or
                                       # "sandwich" (Gemma: x + norm2(f(norm1(x))))
    mlp: str | None = None             # "swiglu" (gated: act(gate) * up -> down; GeGLU with a GELU) or "gelu" (fc/proj)
    activation: str | None = None      # "silu", "gelu_tanh" (GPT-2's gelu_new), "gelu" (exact, nanoGPT)
    position: str | None = None        # "rope" or "learned"
    rope_theta: float | None = None
    rope_scaling: tuple[tuple[str, Any], ...] | None = None  # llama3: factor, low/high_freq_factor, original_max
    qkv_bias: bool | None = None
    out_bias: bool | None = None
    mlp_bias: bool | None = None
    qk_norm: bool | None = None        # OLMo-2: RMSNorm over the full q and k projections
    qk_norm_per_head: bool | None = None  # Gemma 3: the q / k norm is over each head's head_dim
    clip_qkv: float | None = None      # OLMo-1 option
    tie_embeddings: bool | None = None
    embed_scale: bool | None = None    # Gemma: the token embedding times sqrt(d_model)
    query_pre_attn_scalar: float | None = None  # Gemma: logits q.k / sqrt(this) (None: head_dim)
    sliding_window: int | None = None  # local layers see the last sliding_window keys (see layer_types)
    layer_types: tuple[str, ...] | None = None  # per layer "full_attention" | "sliding_attention"
    rope_local_theta: float | None = None  # RoPE base of the sliding layers (None: rope_theta)
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
        if self.family == "gemma3" and self.query_pre_attn_scalar is None:
            object.__setattr__(self, "query_pre_attn_scalar", float(self.head_dim))
        if self.d_ff is None:
            object.__setattr__(self, "d_ff", 4 * self.d_model)
        if self.layer_types is not None:
            object.__setattr__(self, "layer_types", tuple(self.layer_types))
        elif self.sliding_window is not None:
            pattern = GEMMA3_SLIDING_PATTERN if self.family == "gemma3" else 0
            object.__setattr__(self, "layer_types", tuple(
                "full_attention" if pattern and (i + 1) % pattern == 0 else "sliding_attention"
                for i in range(self.n_layers)))
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
        if self.sliding_window is not None and self.family not in _SLIDING_FAMILIES:
            raise ValueError(f"{self.family} has no sliding-window attention (its Hugging Face config cannot state "
                             f"one); drop sliding_window= or use one of {_SLIDING_FAMILIES}")
        if self.sliding_window is not None and (isinstance(self.sliding_window, bool) or self.sliding_window < 1):
            raise ValueError(f"sliding_window must be a positive int, got {self.sliding_window!r}")
        if self.layer_types is not None:
            if len(self.layer_types) != self.n_layers or set(self.layer_types) - set(LAYER_TYPES):
                raise ValueError(f"layer_types must name one of {LAYER_TYPES} for each of the {self.n_layers} "
                                 f"layers, got {self.layer_types}")
            if "sliding_attention" in self.layer_types and self.sliding_window is None:
                raise ValueError("layer_types has sliding_attention layers but sliding_window is not set: give "
                                 "sliding_window= (the window) or make every layer full_attention")
        if self.qk_norm_per_head and not self.qk_norm:
            raise ValueError("qk_norm_per_head=True needs qk_norm=True")
        for name, value, allowed in (("norm", self.norm, ("layernorm", "layernorm_noparam", "rmsnorm",
                                                          "rmsnorm_plus_one")),
                                     ("norm_position", self.norm_position, ("pre", "post", "sandwich")),
                                     ("mlp", self.mlp, ("swiglu", "gelu")),
                                     ("activation", self.activation, ("silu", "gelu_tanh", "gelu")),
                                     ("position", self.position, ("rope", "learned")),
                                     ("dtype", self.dtype, DTYPES),
                                     ("remat", self.remat, REMAT)):
            if value not in allowed:
                raise ValueError(f"config.{name}={value!r} is not one of {allowed}")

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    def layer_windows(self) -> tuple[int | None, ...]:
        """The sliding window of each layer (``None``: full causal attention)."""
        types = self.layer_types or ("full_attention",) * self.n_layers
        return tuple(self.sliding_window if kind == "sliding_attention" else None for kind in types)


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


def _gemma3_from_hf(hf: dict) -> ModelConfig:
    for key in ("final_logit_softcapping", "attn_logit_softcapping"):
        if hf.get(key) is not None:
            raise ValueError(f"{key}={hf[key]} in config.json: logit soft-capping (Gemma 2) is not supported; Gemma 3 "
                             "sets it to null")
    if hf.get("use_bidirectional_attention"):
        raise ValueError("use_bidirectional_attention=true (an encoder) is not supported: sparsejax runs causal LMs")
    if hf.get("hidden_activation", "gelu_pytorch_tanh") not in ("gelu_pytorch_tanh", "gelu_tanh"):
        raise ValueError(f"hidden_activation {hf.get('hidden_activation')!r} is not supported for gemma3 (only "
                         "gelu_pytorch_tanh)")
    n_layers = hf["num_hidden_layers"]
    params = hf.get("rope_parameters") or {}
    if params and not set(params) <= set(LAYER_TYPES):  # one rope_parameters dict for every layer type
        params = {kind: params for kind in LAYER_TYPES}
    rope = {}
    for kind, old_key, default in (("full_attention", "rope_theta", 1_000_000.0),
                                   ("sliding_attention", "rope_local_base_freq", 10_000.0)):
        p = dict(params.get(kind) or {})
        if kind == "full_attention" and hf.get("rope_scaling"):
            p.update(hf["rope_scaling"])
        if p.get("rope_type", p.get("type", "default")) not in (None, "default"):
            raise ValueError(f"RoPE scaling {p.get('rope_type', p.get('type'))!r} on the {kind} layers is not "
                             "supported for gemma3 (supported: default)")
        rope[kind] = float(p.get("rope_theta", hf.get(old_key, default)))
    layer_types = hf.get("layer_types") or [
        "sliding_attention" if (i + 1) % hf.get("sliding_window_pattern", GEMMA3_SLIDING_PATTERN) else "full_attention"
        for i in range(n_layers)]
    d, h = hf["hidden_size"], hf["num_attention_heads"]
    return ModelConfig(
        family="gemma3", vocab_size=hf["vocab_size"], d_model=d, n_layers=n_layers, n_heads=h,
        n_kv_heads=hf.get("num_key_value_heads") or h, head_dim=hf.get("head_dim") or d // h,
        d_ff=hf["intermediate_size"], max_position=hf["max_position_embeddings"],
        norm_eps=hf.get("rms_norm_eps", 1e-6), rope_theta=rope["full_attention"],
        rope_local_theta=rope["sliding_attention"], qkv_bias=bool(hf.get("attention_bias", False)),
        out_bias=bool(hf.get("attention_bias", False)), tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
        query_pre_attn_scalar=float(hf.get("query_pre_attn_scalar", 256)),
        sliding_window=hf.get("sliding_window", 4096), layer_types=tuple(layer_types))


def _qwen2_window(hf: dict) -> dict:
    """Qwen2's ``use_sliding_window`` / ``sliding_window`` / ``max_window_layers`` (layers from
    ``max_window_layers`` on are local) or its ``layer_types``, as transformers reads them."""
    if not hf.get("use_sliding_window") or hf.get("sliding_window", 4096) is None:  # 4096: Qwen2Config's default
        return {}
    types = hf.get("layer_types") or ["sliding_attention" if i >= hf.get("max_window_layers", 28) else "full_attention"
                                      for i in range(hf["num_hidden_layers"])]
    if "sliding_attention" not in types:
        return {}
    return dict(sliding_window=int(hf.get("sliding_window", 4096)), layer_types=tuple(types))


def config_from_hf(hf: dict) -> ModelConfig:
    """A :class:`ModelConfig` from a Hugging Face ``config.json`` dict."""
    kind = hf.get("model_type")
    if kind == "gemma3_text":
        return _gemma3_from_hf(hf)
    if kind == "gemma3":
        raise ValueError("model_type 'gemma3' is the multimodal Gemma 3 (vision tower + text_config); sparsejax runs "
                         "the text model: load a Gemma3ForCausalLM checkpoint (model_type 'gemma3_text')")
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
        raise ValueError(f"unsupported model_type {kind!r} in config.json; supported: gpt2, llama, olmo, olmo2, qwen2, "
                         "gemma3_text")
    if hf.get("hidden_act", "silu") != "silu":
        raise ValueError(f"hidden_act {hf.get('hidden_act')!r} is not supported for {kind} (only silu)")
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
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)), **(_qwen2_window(hf) if kind == "qwen2" else {}))


def config_to_hf(cfg: ModelConfig) -> dict:
    """The inverse of :func:`config_from_hf` (a ``config.json`` that ``transformers`` loads)."""
    if cfg.family == "gpt2":  # ModelConfig has already checked the family's fixed fields
        return dict(model_type="gpt2", architectures=["GPT2LMHeadModel"], vocab_size=cfg.vocab_size,
                    n_embd=cfg.d_model, n_layer=cfg.n_layers, n_head=cfg.n_heads, n_inner=cfg.d_ff,
                    n_positions=cfg.max_position, layer_norm_epsilon=cfg.norm_eps,
                    activation_function={"gelu_tanh": "gelu_new", "gelu": "gelu"}[cfg.activation],
                    tie_word_embeddings=cfg.tie_embeddings, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                    **special_token_ids(cfg))
    if cfg.family == "gemma3":
        types = list(cfg.layer_types or ("full_attention",) * cfg.n_layers)
        qpas = cfg.query_pre_attn_scalar
        return dict(model_type="gemma3_text", architectures=["Gemma3ForCausalLM"], vocab_size=cfg.vocab_size,
                    hidden_size=cfg.d_model, num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
                    num_key_value_heads=cfg.n_kv_heads, head_dim=cfg.head_dim, intermediate_size=cfg.d_ff,
                    max_position_embeddings=cfg.max_position, rms_norm_eps=cfg.norm_eps,
                    hidden_activation="gelu_pytorch_tanh", attention_bias=cfg.qkv_bias,
                    query_pre_attn_scalar=int(qpas) if float(qpas).is_integer() else qpas,
                    sliding_window=cfg.sliding_window, layer_types=types,
                    rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": cfg.rope_theta},
                                     "sliding_attention": {"rope_type": "default",
                                                           "rope_theta": cfg.rope_local_theta or cfg.rope_theta}},
                    final_logit_softcapping=None, attn_logit_softcapping=None, tie_word_embeddings=cfg.tie_embeddings,
                    attention_dropout=0.0, **special_token_ids(cfg))
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
    if cfg.family == "qwen2":
        types = list(cfg.layer_types or ("full_attention",) * cfg.n_layers)
        out.update(use_sliding_window=cfg.sliding_window is not None, sliding_window=cfg.sliding_window,
                   max_window_layers=types.index("sliding_attention") if "sliding_attention" in types else cfg.n_layers,
                   layer_types=types)
    return {**out, **special_token_ids(cfg)}


# Each family's special tokens as its tokenizer numbers them: (bos, eos, pad); a fresh model whose vocabulary is
# too small for them gets none (a config must not name ids outside the vocabulary).
SPECIAL_TOKEN_IDS = {"gpt2": (50256, 50256, None), "gemma3": (2, 1, 0)}


def special_token_ids(cfg: ModelConfig) -> dict:
    """``bos_token_id`` / ``eos_token_id`` / ``pad_token_id`` for ``config.json``: the family's ids where the
    model's vocabulary holds them, else ``None`` (transformers would otherwise take the family's defaults, e.g.
    GPT-2's 50256, outside a small vocabulary)."""
    if cfg.family not in SPECIAL_TOKEN_IDS:  # no family default to contradict
        return {}
    ids = SPECIAL_TOKEN_IDS[cfg.family]
    return {name: (i if i is not None and i < cfg.vocab_size else None)
            for name, i in zip(("bos_token_id", "eos_token_id", "pad_token_id"), ids)}
