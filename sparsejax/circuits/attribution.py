"""Attention attribution: the direct share of every (layer, head, key) in a target logit."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from .core import _run, _tokens, padding
from .edge_level import _check_edge_model


# --------------------------------------------------------------------------------------------------------------------
# Attention attribution: the direct contribution of every (layer, head, key) to a target logit through the frozen
# eval-gated pattern. With the final norm's scale frozen at the run's value, the logit is linear in the residual
# stream: ``logit_t = u . x_final + const`` with ``u = r (s * W_U[:, t])`` (RMSNorm; LayerNorm centres u, and its
# bias adds a constant). A head's output at the query is ``sum_k (P*A)[q, k] v_k W_O``, so its direct share splits
# exactly over keys: ``(P*A)[q, k] (v_k W_O) . u``; closed gates contribute exactly 0.

def _frozen_unembed(config, params, x, target) -> jax.Array:
    """``u [B, d]``: the direction whose dot product with a residual-stream component gives its logit share."""
    head = params["embed"]["tokens"].T if config.tie_embeddings else params["lm_head"]["kernel"]
    w = head[:, target].T.astype(jnp.float32)                                  # [B, d]
    fn = params.get("final_norm", {})
    if "scale" in fn:
        w = w * fn["scale"]
    x = x.astype(jnp.float32)
    if config.norm == "rmsnorm":
        return w * jax.lax.rsqrt(jnp.mean(x * x, -1, keepdims=True) + config.norm_eps)
    xc = x - jnp.mean(x, -1, keepdims=True)
    r = jax.lax.rsqrt(jnp.mean(xc * xc, -1, keepdims=True) + config.norm_eps)
    return (w - jnp.mean(w, -1, keepdims=True)) * r


def attention_attribution(config, params, gate, tokens, target, *, position: int = -1, attention_mask=None) -> dict:
    """Direct attribution of the logit of ``target`` (``[B]`` token ids) at ``position`` to every head and key.

    Returns ``per_key [B, L, H, T]`` (key k's share through head (l, h)), ``per_head [B, L, H]`` (their sums),
    ``other [B]`` (the rest: embedding, MLPs, biases), ``logit [B]`` (the model's logit; ``per_head`` summed with
    ``other`` equals it). Eval gates (the deterministic pattern); materialises the T x T pattern: analysis sizes."""
    _check_edge_model(config)
    (tokens,) = _tokens(config, tokens)
    att = _attribution(config, params, gate, tokens, jnp.asarray(target), padding(attention_mask),
                       position % tokens.shape[1])
    return {key: np.asarray(value) for key, value in att.items()}


@functools.partial(jax.jit, static_argnames=("config", "q"))
def _attribution(config, params, gate, tokens, target, pad, q) -> dict:
    """:func:`attention_attribution` at query position ``q``, compiled once per config, shapes and position."""
    L, H = config.n_layers, config.n_heads
    logits, caps = _run(config, params, gate, tokens, pad, capture=("attn.hook_pattern", "attn.hook_v",
                                                                      "hook_resid_post"))
    u = _frozen_unembed(config, params, caps["hook_resid_post"][-1, :, q], target)
    wo = params["layers"]["attn"]["o"]["kernel"].reshape(L, H, config.head_dim, config.d_model)
    v = jnp.repeat(caps["attn.hook_v"].astype(jnp.float32), H // config.n_kv_heads, axis=3)   # [L, B, T, H, hd]
    proj = jnp.einsum("lbkhe,lhed,bd->blhk", v, wo.astype(jnp.float32), u)                      # (v_k W_O) . u
    per_key = jnp.moveaxis(caps["attn.hook_pattern"][:, :, :, q, :], 0, 1) * proj              # [B, L, H, T]
    per_head = per_key.sum(-1)
    logit = logits[jnp.arange(tokens.shape[0]), q, target]
    return {"per_key": per_key, "per_head": per_head, "other": logit - per_head.sum((1, 2)), "logit": logit}


def heads_for_share(per_head, share: float = 0.8) -> tuple[int, list[tuple]]:
    """How many heads, ranked by ``|mean over examples|`` of their attribution, cover ``share`` of the summed
    absolute attribution of all heads; and the ranking ``[(layer, head, mean attribution)]``."""
    mean = np.asarray(per_head).mean(0)
    order = sorted(np.ndindex(mean.shape), key=lambda i: -abs(mean[i]))
    mags = np.array([abs(mean[i]) for i in order])
    k = int(np.searchsorted(np.cumsum(mags) / max(mags.sum(), 1e-30), share - 1e-12) + 1)
    return min(k, len(order)), [(int(l), int(h), float(mean[l, h])) for l, h in order]
