"""A pure-functional decoder for every family: ``forward(config, params, tokens, gate) -> (logits, aux)``.

Parameters are a nested dict whose per-layer leaves are stacked on a leading ``[n_layers]`` axis; the layers
run under ``lax.scan``. Attention goes through :func:`sparsejax.sparse_attention`; ``gate=None`` is exactly
the dense model. Captured activations use TransformerLens hook names (``blocks.{l}.attn.hook_pattern``, ...).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..attention import attention_pattern, sparse_attention
from ..gates import Gate, as_gate, layer_seed
from .config import ModelConfig
from ..sharding import constrain
from .hooks import LAYER_HOOKS, MODEL_HOOKS, Hooks
from .hooks import hook_names as _hook_names

# ---------------------------------------------------------------------------------------------- init
# The logical axes of every parameter a family can have, by its path below the params root: declared here, beside
# the code that creates the parameters. ``init_params`` refuses to create a parameter missing from this table (or of
# another rank), and ``sharding`` refuses to place one it does not find here (nothing is silently replicated); the
# rule table in sharding.py maps these names to the mesh axes.
PARAM_AXES: dict[str, tuple[str, ...]] = {
    "embed/tokens": ("vocab", "embed"),
    "embed/positions": ("position", "embed"),
    "layers/attn_norm/scale": ("layers", "norm"), "layers/attn_norm/bias": ("layers", "norm"),
    "layers/attn/q/kernel": ("layers", "embed", "heads"), "layers/attn/q/bias": ("layers", "heads"),
    "layers/attn/k/kernel": ("layers", "embed", "kv_heads"), "layers/attn/k/bias": ("layers", "kv_heads"),
    "layers/attn/v/kernel": ("layers", "embed", "kv_heads"), "layers/attn/v/bias": ("layers", "kv_heads"),
    "layers/attn/o/kernel": ("layers", "heads", "embed"), "layers/attn/o/bias": ("layers", "bias"),
    "layers/attn/q_norm/scale": ("layers", "norm"), "layers/attn/k_norm/scale": ("layers", "norm"),
    "layers/attn/q_norm/bias": ("layers", "norm"), "layers/attn/k_norm/bias": ("layers", "norm"),
    "layers/attn_post_norm/scale": ("layers", "norm"), "layers/attn_post_norm/bias": ("layers", "norm"),  # sandwich
    "layers/mlp_norm/scale": ("layers", "norm"), "layers/mlp_norm/bias": ("layers", "norm"),
    "layers/mlp/gate/kernel": ("layers", "embed", "mlp"), "layers/mlp/gate/bias": ("layers", "mlp"),
    "layers/mlp/up/kernel": ("layers", "embed", "mlp"), "layers/mlp/up/bias": ("layers", "mlp"),
    "layers/mlp/fc/kernel": ("layers", "embed", "mlp"), "layers/mlp/fc/bias": ("layers", "mlp"),
    "layers/mlp/down/kernel": ("layers", "mlp", "embed"), "layers/mlp/down/bias": ("layers", "bias"),
    "layers/mlp/proj/kernel": ("layers", "mlp", "embed"), "layers/mlp/proj/bias": ("layers", "bias"),
    "layers/mlp_post_norm/scale": ("layers", "norm"), "layers/mlp_post_norm/bias": ("layers", "norm"),
    "final_norm/scale": ("norm",), "final_norm/bias": ("norm",),
    "lm_head/kernel": ("embed", "vocab"),
}


def param_path(path) -> str:
    """A pytree key path (``tree_flatten_with_path``) as the ``/``-joined string :data:`PARAM_AXES` is keyed by."""
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def logical_axes(params) -> dict:
    """The logical axes of each leaf of a parameter tree (same structure); an undeclared parameter is an error."""
    def axes(path, leaf):
        name = param_path(path)
        found = PARAM_AXES.get(name)
        if found is None or len(found) != len(leaf.shape):
            raise ValueError(f"parameter {name!r} (shape {tuple(leaf.shape)}) has no logical axes of its rank in "
                             f"models/decoder.py PARAM_AXES (got {found}); declare them there beside its creation")
        return found
    return jax.tree_util.tree_map_with_path(axes, params)


def init_params(config: ModelConfig, key: jax.Array, *, std: float = 0.02) -> dict:
    """Random float32 parameters (normal(std) weights, residual projections scaled by 1/sqrt(2 L)); each one has
    its logical axes in :data:`PARAM_AXES` (checked)."""
    params = _init_params(config, key, std)
    logical_axes(params)  # a parameter created without declared axes fails here, not later on a mesh
    return params


def _init_params(config: ModelConfig, key: jax.Array, std: float) -> dict:
    c = config
    L, d, hd = c.n_layers, c.d_model, c.head_dim
    keys = iter(jax.random.split(key, 16))
    normal = lambda shape, s=std: s * jax.random.normal(next(keys), shape, jnp.float32)
    out_std = std / math.sqrt(2 * L)

    def dense(shape, bias: bool, s=std):
        p = {"kernel": normal((L, *shape), s)}
        if bias:
            p["bias"] = jnp.zeros((L, shape[-1]), jnp.float32)
        return p

    attn = {"q": dense((d, c.n_heads * hd), c.qkv_bias), "k": dense((d, c.n_kv_heads * hd), c.qkv_bias),
            "v": dense((d, c.n_kv_heads * hd), c.qkv_bias), "o": dense((c.n_heads * hd, d), c.out_bias, out_std)}
    if c.qk_norm:  # over the full projection (OLMo-2) or over each head (Gemma 3)
        attn["q_norm"] = _norm_init(c, (L, hd if c.qk_norm_per_head else c.n_heads * hd))
        attn["k_norm"] = _norm_init(c, (L, hd if c.qk_norm_per_head else c.n_kv_heads * hd))
    if c.mlp == "swiglu":
        mlp = {"gate": dense((d, c.d_ff), c.mlp_bias), "up": dense((d, c.d_ff), c.mlp_bias),
               "down": dense((c.d_ff, d), c.mlp_bias, out_std)}
    else:
        mlp = {"fc": dense((d, c.d_ff), c.mlp_bias), "proj": dense((c.d_ff, d), c.mlp_bias, out_std)}
    params = {"embed": {"tokens": normal((c.vocab_size, d))},
              "layers": {"attn_norm": _norm_init(c, (L, d)), "attn": attn, "mlp_norm": _norm_init(c, (L, d)),
                         "mlp": mlp},
              "final_norm": _norm_init(c, (d,))}
    if c.norm_position == "sandwich":  # Gemma: a second norm after each sublayer, before the residual add
        params["layers"]["attn_post_norm"] = _norm_init(c, (L, d))
        params["layers"]["mlp_post_norm"] = _norm_init(c, (L, d))
    if c.position == "learned":
        params["embed"]["positions"] = normal((c.max_position, d), 0.01)
    if not c.tie_embeddings:
        params["lm_head"] = {"kernel": normal((d, c.vocab_size))}
    return params


def _norm_init(c: ModelConfig, shape) -> dict:
    if c.norm == "layernorm_noparam":
        return {}
    if c.norm == "rmsnorm_plus_one":  # the scale is 1 + w: w = 0 is the identity scale
        return {"scale": jnp.zeros(shape, jnp.float32)}
    p = {"scale": jnp.ones(shape, jnp.float32)}
    if c.norm == "layernorm":
        p["bias"] = jnp.zeros(shape, jnp.float32)
    return p


# ---------------------------------------------------------------------------------------------- pieces
def norm(c: ModelConfig, p: dict, x):
    """LayerNorm / parameter-free LayerNorm / RMSNorm / Gemma's RMSNorm (scale ``1 + w``, applied in float32
    before the cast, as transformers' ``Gemma3RMSNorm``), computed in float32, returned in x's dtype."""
    xf = x.astype(jnp.float32)
    if c.norm == "rmsnorm_plus_one":
        y = xf * jax.lax.rsqrt(jnp.mean(xf * xf, -1, keepdims=True) + c.norm_eps)
        return (y * (1.0 + p["scale"].astype(jnp.float32))).astype(x.dtype)
    if c.norm == "rmsnorm":
        y = (xf * jax.lax.rsqrt(jnp.mean(xf * xf, -1, keepdims=True) + c.norm_eps)).astype(x.dtype)
        return y * p["scale"].astype(x.dtype)
    mean = jnp.mean(xf, -1, keepdims=True)
    y = (xf - mean) * jax.lax.rsqrt(jnp.mean(jnp.square(xf - mean), -1, keepdims=True) + c.norm_eps)
    if c.norm == "layernorm":
        y = y * p["scale"] + p["bias"]
    return y.astype(x.dtype)


def _linear(p: dict, x):
    """``x W`` (+ bias), plus the low-rank branch ``(x A) B`` of LoRA adapters attached beside ``W``
    (:func:`sparsejax.lora.attach`: training then never forms the frozen ``W``'s gradient)."""
    y = x @ p["kernel"]
    if "lora_a" in p:
        y = y + (x @ p["lora_a"]) @ p["lora_b"]
    return y + p["bias"] if "bias" in p else y


def _kernel(p: dict):
    """A linear layer's kernel with attached LoRA adapters folded in, for the per-head paths (capture, patching)."""
    return p["kernel"] + p["lora_a"] @ p["lora_b"] if "lora_a" in p else p["kernel"]


def rope_frequencies(head_dim: int, theta: float, scaling: tuple | None = None) -> np.ndarray:
    """Inverse frequencies ``[head_dim / 2]`` (with Llama-3 scaling when given), as in transformers."""
    inv = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    if scaling:
        s = dict(scaling)
        factor, lo, hi, old = s["factor"], s["low_freq_factor"], s["high_freq_factor"], s["original_max_position_embeddings"]
        wavelen = 2 * np.pi / inv
        scaled = np.where(wavelen > old / lo, inv / factor, inv)
        smooth = (old / wavelen - lo) / (hi - lo)
        medium = (wavelen >= old / hi) & (wavelen <= old / lo)
        inv = np.where(medium, (1 - smooth) * scaled / factor + smooth * scaled, scaled)
    return inv.astype(np.float32)


def rope_tables(t: int, head_dim: int, theta: float, scaling: tuple | None = None, dtype=jnp.float32):
    """``(cos, sin)``, each ``[t, head_dim]``, for positions ``0 .. t-1``."""
    angles = np.arange(t, dtype=np.float32)[:, None] * rope_frequencies(head_dim, theta, scaling)[None, :]
    angles = np.concatenate([angles, angles], -1)
    return jnp.asarray(np.cos(angles), dtype), jnp.asarray(np.sin(angles), dtype)


def apply_rope(x, cos, sin):
    """HF's rotate-half RoPE on ``[B, T, heads, hd]`` with ``cos, sin`` of shape ``[T, hd]`` or ``[B, T, hd]``."""
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    cos, sin = (c if c.ndim == 3 else c[None] for c in (cos, sin))
    return (x * cos[:, :, None, :] + rotated * sin[:, :, None, :]).astype(x.dtype)


def _activation(c: ModelConfig, x):
    if c.activation == "silu":
        return jax.nn.silu(x)
    return jax.nn.gelu(x, approximate=c.activation == "gelu_tanh")


def mlp(c: ModelConfig, p: dict, x):
    if c.mlp == "swiglu":
        return _linear(p["down"], constrain(_activation(c, _linear(p["gate"], x)) * _linear(p["up"], x), "mlp"))
    return _linear(p["proj"], constrain(_activation(c, _linear(p["fc"], x)), "mlp"))


# ---------------------------------------------------------------------------------------------- forward
def model_gate(gate: Any, config: ModelConfig) -> Gate | None:
    """Broadcast a model-level gate (bias ``()``, ``[L]``, ``[H]`` or ``[L, H]``) to a per-layer ``[L, H]`` bias."""
    gate = as_gate(gate)
    if gate is None:
        return None
    L, H = config.n_layers, config.n_heads
    b = jnp.asarray(gate.bias, jnp.float32)
    if b.shape == (L,) and L != H:
        b = b[:, None]
    elif b.shape not in ((), (H,), (L, 1), (L, H)):
        raise ValueError(f"gate bias shape {b.shape} does not fit the model: use (), ({L},) layers, ({H},) heads "
                         f"or ({L}, {H})")
    return dataclasses.replace(gate, bias=jnp.broadcast_to(b, (L, H)))


def hook_names(config: ModelConfig) -> list[str]:
    """Every capturable name of this model."""
    return _hook_names(config.n_layers)


def _project(c: ModelConfig, p: dict, h, heads: int):
    """``h @ W`` (+ bias) reshaped to ``[B, T, heads, hd]``; ``h`` is ``[B, T, d]`` or per head ``[B, T, heads, d]``."""
    if h.ndim == 3:
        y = _linear(p, h)
        return y.reshape(*y.shape[:2], heads, c.head_dim)
    y = jnp.einsum("bthd,dhe->bthe", h, _kernel(p).reshape(h.shape[-1], heads, c.head_dim))
    return y + p["bias"].reshape(heads, c.head_dim) if "bias" in p else y


def _sublayer_norm(c: ModelConfig, p: dict, name: str, h, *, after: bool):
    """The norm around a sublayer (``name``: ``"attn"`` or ``"mlp"``): pre-norm families normalise its input
    (``after=False``); OLMo-2 (post) normalises its output with its only norm; Gemma (sandwich) does both."""
    if not after:
        return h if c.norm_position == "post" else norm(c, p.get(f"{name}_norm", {}), h)
    if c.norm_position == "pre":
        return h
    return norm(c, p[f"{name}_post_norm" if c.norm_position == "sandwich" else f"{name}_norm"], h)


def qkv(c: ModelConfig, p: dict, x, hk, split: bool):
    """A layer's queries ``[B, T, H, hd]``, keys and values ``[B, T, K, hd]`` (before RoPE), from the residual
    stream ``x``; ``split``: each head reads its own (patchable) copy of ``x`` (hooks ``attn.hook_{q,k,v}_input``)."""
    a, (b, t) = p["attn"], x.shape[:2]
    pre = lambda h: _sublayer_norm(c, p, "attn", h, after=False)
    if split:
        per_head = lambda name, n: pre(hk(name, jnp.broadcast_to(x[:, :, None, :], (b, t, n, c.d_model))))
        q = _project(c, a["q"], per_head("attn.hook_q_input", c.n_heads), c.n_heads)
        k = _project(c, a["k"], per_head("attn.hook_k_input", c.n_kv_heads), c.n_kv_heads)
        v = _project(c, a["v"], per_head("attn.hook_v_input", c.n_kv_heads), c.n_kv_heads)
    else:
        h = pre(x)
        q, k, v = (_project(c, a[n], h, heads) for n, heads in (("q", c.n_heads), ("k", c.n_kv_heads),
                                                                 ("v", c.n_kv_heads)))
    if c.clip_qkv is not None:
        q, k, v = (jnp.clip(y, -c.clip_qkv, c.clip_qkv) for y in (q, k, v))
    if c.qk_norm and c.qk_norm_per_head:  # over each head's head_dim, as Gemma 3
        q, k = norm(c, a["q_norm"], q), norm(c, a["k_norm"], k)
    elif c.qk_norm:  # over the full projection (all heads), as OLMo-2
        q = norm(c, a["q_norm"], q.reshape(b, t, -1)).reshape(q.shape)
        k = norm(c, a["k_norm"], k.reshape(b, t, -1)).reshape(k.shape)
    q, k, v = hk("attn.hook_q", q), hk("attn.hook_k", k), hk("attn.hook_v", v)
    return constrain(q, "q"), constrain(k, "kv"), constrain(v, "kv")


def output_projection(c: ModelConfig, p: dict, z, hk, per_head: bool):
    """The heads' outputs ``z [B, T, H, hd]`` through ``W_O`` (and the sublayer's output norm), ``[B, T, d]``;
    ``per_head``: also each head's own share ``[B, T, H, d]`` (hook ``attn.hook_result``, capture only)."""
    o, (b, t) = p["attn"]["o"], z.shape[:2]
    if per_head:
        hk("attn.hook_result", jnp.einsum("bthe,hed->bthd", z, _kernel(o).reshape(c.n_heads, c.head_dim, c.d_model)))
    return _sublayer_norm(c, p, "attn", _linear(o, z.reshape(b, t, c.n_heads * c.head_dim)), after=True)


def mlp_block(c: ModelConfig, p: dict, x):
    """The MLP sublayer's output ``[B, T, d]`` (before the residual add) from its input ``x``."""
    return _sublayer_norm(c, p, "mlp", mlp(c, p["mlp"], _sublayer_norm(c, p, "mlp", x, after=False)), after=True)


def forward(config: ModelConfig, params: dict, tokens, gate: Any = None, *, mode: str = "eval", seed=None,
            capture: str | Sequence[str] | None = None, interventions: dict | None = None,
            implementation: str = "auto", attention_mask=None, positions=None, carried=None):
    """Logits ``[B, T, vocab]`` (float32) and ``aux``.

    Args:
      gate: ``None`` (dense model), a float bias, or a :class:`sparsejax.Gate` whose bias is ``()``, ``[L]``,
        ``[H]`` or ``[L, H]``.
      mode: ``"train"`` (sampled gates, needs ``seed``; layer l uses ``layer_seed(seed, l)``) or ``"eval"``.
      capture: hook names or ``fnmatch`` patterns (e.g. ``"blocks.*.attn.hook_pattern"``, ``"hook_z"``); only
        what matches is computed and returned.
      interventions: ``{hook name: array | "zero" | "mean" | function}`` applied before the rest of the model
        reads the activation (see :mod:`sparsejax.models.hooks`).
      attention_mask: ``[B, T]`` padding mask (1 = real token, 0 = padding; left or right), as Hugging Face's
        ``attention_mask``: no attention to or from padding (see :func:`sparsejax.sparse_attention`).
      positions: ``[B, T]`` position ids (Hugging Face's ``position_ids``; default ``0 .. T-1``). With left
        padding, ``positions = cumsum(mask) - 1`` (clipped at 0) gives the real tokens the positions they have
        unpadded.
      carried: a :class:`sparsejax.models.hooks.Carried` intervention, whose state travels through the layer scan
        (what a layer reads may depend on what earlier layers of the same run wrote).

    Returns:
      ``(logits, aux)`` with ``aux["density"]`` ``[L, B, H]`` expected density per layer (ones when dense),
      ``aux["edge_density"]`` ``[L, B, H]`` the deterministic (eval-gate) share of causal pairs kept, and
      ``aux["captures"]`` a dict of the captured arrays.
    """
    c = config
    tokens = jnp.asarray(tokens)
    if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise ValueError(f"tokens must be an integer array [batch, seq], got {tokens.dtype} {tokens.shape}")
    b, t = tokens.shape
    if t == 0 or b == 0:
        raise ValueError(f"tokens has shape {tokens.shape}: give at least one sequence of at least one token")
    if not isinstance(tokens, jax.core.Tracer):  # concrete ids are checked; under jit, take() clamps (see README)
        ids = np.asarray(tokens)  # on the host: also right when concrete ids are closed over inside jit
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= c.vocab_size:
            raise ValueError(f"token ids must lie in [0, {c.vocab_size}) (the model's vocabulary), got ids in "
                             f"[{lo}, {hi}]; is the tokenizer the model's own?")
    if t > c.max_position:
        raise ValueError(f"sequence length {t} exceeds the model's max_position {c.max_position}; use shorter "
                         "contexts (or a config with a larger max_position)")
    if attention_mask is not None and jnp.shape(attention_mask) != (b, t):
        raise ValueError(f"attention_mask must have the tokens' shape {(b, t)}, got {jnp.shape(attention_mask)}")
    if positions is not None:
        positions = jnp.asarray(positions)
        if positions.shape != (b, t) or not jnp.issubdtype(positions.dtype, jnp.integer):
            raise ValueError(f"positions must be integer ids of the tokens' shape {(b, t)}, got {positions.dtype} "
                             f"{positions.shape}")
        if not isinstance(positions, jax.core.Tracer):  # on the host, as the token ids above
            lo, hi = int(np.asarray(positions).min()), int(np.asarray(positions).max())
            if not 0 <= lo <= hi < c.max_position:
                raise ValueError(f"positions must lie in [0, {c.max_position}) (the model's max_position), got "
                                 f"[{lo}, {hi}]")
    gate = model_gate(gate, c)
    if gate is not None and mode == "train" and seed is None:
        raise ValueError("mode='train' samples gates and needs seed=; pass mode='eval' for deterministic gates")
    hooks = Hooks(c.n_layers, capture, interventions, carried)
    dtype = jnp.dtype(c.dtype)
    cast = lambda tree: jax.tree.map(lambda x: x.astype(dtype), tree)

    x = jnp.take(params["embed"]["tokens"], tokens, axis=0)
    if c.embed_scale:  # Gemma: the embedding times sqrt(d_model), in the parameters' float32
        x = x * np.float32(math.sqrt(c.d_model))
    x = x.astype(dtype)
    captures = {}
    if c.position == "learned":
        table = params["embed"]["positions"]
        x = x + (table[:t] if positions is None else jnp.take(table, positions, axis=0)).astype(dtype)
    x = constrain(hooks.model_point("hook_embed", x, captures), "resid")
    windows = c.layer_windows()
    local_rope = c.position == "rope" and c.rope_local_theta not in (None, c.rope_theta) and any(windows)
    if c.position == "rope":
        def tables(theta):
            cos, sin = rope_tables(t if positions is None else c.max_position, c.head_dim, theta, c.rope_scaling,
                                   dtype)
            if positions is not None:
                cos, sin = jnp.take(cos, positions, axis=0), jnp.take(sin, positions, axis=0)
            return cos, sin
        cos_global, sin_global = tables(c.rope_theta)
        cos_local, sin_local = tables(c.rope_local_theta) if local_rope else (cos_global, sin_global)
    # Sliding-window layers: each distinct window is one static branch of the attention (lax.switch per layer).
    distinct = sorted(set(windows), key=lambda w: -1 if w is None else w)
    window_index = jnp.asarray([distinct.index(w) for w in windows], jnp.int32)

    def per_window(fn, index, *args):
        if len(distinct) == 1:
            return fn(distinct[0], *args)
        return jax.lax.switch(index, [lambda *a, w=w: fn(w, *a) for w in distinct], *args)

    # Gemma: logits q.k / sqrt(query_pre_attn_scalar); the attention divides by sqrt(head_dim), so q is rescaled.
    q_scale = None if c.query_pre_attn_scalar in (None, c.head_dim) else math.sqrt(c.head_dim / c.query_pre_attn_scalar)
    seed_arr = jnp.asarray(0 if seed is None else seed).astype(jnp.uint32)

    def attention(p, x, bias, index, w_index, hk):
        """The attention sublayer's output ``[B, T, d]`` (before the residual add) and the attention statistics."""
        q, k, v = qkv(c, p, x, hk, hooks.split_inputs)
        if c.position == "rope":
            cos, sin = cos_global, sin_global
            if local_rope:  # the sliding layers' own RoPE base
                local = w_index != distinct.index(None) if None in distinct else True
                cos, sin = jnp.where(local, cos_local, cos_global), jnp.where(local, sin_local, sin_global)
            q, k = hk("attn.hook_rot_q", apply_rope(q, cos, sin)), hk("attn.hook_rot_k", apply_rope(k, cos, sin))
        if q_scale is not None:
            q = (q * np.float32(q_scale)).astype(q.dtype)
        g = None if gate is None else dataclasses.replace(gate, bias=bias)
        lseed = layer_seed(seed_arr, index) if g is not None else None
        z, stats = per_window(lambda w, q, k, v: sparse_attention(
            q, k, v, g, mode=mode, seed=lseed, implementation=implementation, attention_mask=attention_mask,
            window=w), w_index, q, k, v)
        if hooks.need_pattern:
            pw, gw = per_window(lambda w, q, k: attention_pattern(
                q, k, g, mode=mode, seed=lseed, attention_mask=attention_mask, window=w), w_index, q, k)
            gw = hk("attn.hook_gate", gw)
            pattern = hk("attn.hook_pattern", pw * gw)
            hk("attn.hook_adjacency", gw > 0)
            if hooks.materialise_pattern:  # the head outputs from the (patched) pattern
                vh = jnp.repeat(v.astype(jnp.float32), c.n_heads // c.n_kv_heads, axis=2)
                z = jnp.einsum("bhts,bshd->bthd", pattern, vh).astype(v.dtype)
        return output_projection(c, p, hk("attn.hook_z", z), hk, hooks.wants("attn.hook_result")), stats

    def layer(carry, inputs):
        x, state = carry
        p, bias, index, w_index, carried_xs = inputs
        p = cast(p)
        captured, state = {}, [state]  # the carried intervention's state, updated as the layer's hooks are traced
        hk = lambda name, value: hooks.layer_point(index, name, value, captured, state, carried_xs)
        x = hk("hook_resid_pre", x)
        attn_out, stats = attention(p, x, bias, index, w_index, hk)
        x = hk("hook_resid_mid", x + hk("hook_attn_out", attn_out))
        m = hk("hook_mlp_out", mlp_block(c, p, hk("hook_mlp_in", x)))
        x = constrain(hk("hook_resid_post", x + m), "resid")
        return (x, state[0]), (stats.expected_density, stats.edge_density, captured)

    if c.remat != "none":
        policy = None if c.remat == "full" else jax.checkpoint_policies.checkpoint_dots
        layer = jax.checkpoint(layer, policy=policy)
    biases = gate.bias if gate is not None else jnp.zeros((c.n_layers, c.n_heads), jnp.float32)
    state = carried.init() if carried is not None else ()
    xs = carried.xs() if carried is not None else None
    (x, state), (density, edge_density, stacked) = jax.lax.scan(
        layer, (x, state), (params["layers"], biases, jnp.arange(c.n_layers), window_index, xs))
    if carried is not None:
        x = carried.final(state, x)

    x = norm(c, params.get("final_norm", {}), x)
    x = hooks.model_point("ln_final.hook_normalized", x, captures)
    head = params["embed"]["tokens"].T if c.tie_embeddings else params["lm_head"]["kernel"]
    logits = constrain(jnp.einsum("btd,dv->btv", x, head.astype(dtype), preferred_element_type=jnp.float32), "logits")
    hooks.collect(stacked, captures)
    return logits, {"density": density, "edge_density": edge_density, "captures": captures}
