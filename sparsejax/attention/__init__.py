"""``sparse_attention``: the one dispatch point over implementations of gated sparse attention."""
from __future__ import annotations

import warnings
from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .. import sharding
from ..gates import Gate, as_gate
from . import sharded
from .blocks import BLOCK_SIZES, BlockSizes
from .chunked import chunked_attention
from .pallas import backend_of, pallas_attention, unsupported
from .reference import attention_weights, reference_attention

__all__ = ["AttentionStats", "BLOCK_SIZES", "BlockSizes", "IMPLEMENTATIONS", "attention_pattern",
           "resolve_implementation", "sparse_attention"]

IMPLEMENTATIONS = {"reference": reference_attention, "chunked": chunked_attention, "pallas": pallas_attention}
_WARNED: set = set()


def resolve_implementation(implementation: str, q, k, v) -> str:
    """``"auto"`` -> ``"pallas"`` on GPU/TPU (``"chunked"`` with a one-time warning when the kernel cannot take
    the inputs) and ``"chunked"`` on CPU; any other name is returned as is."""
    if implementation != "auto":
        return implementation
    backend = backend_of(jax.default_backend())
    if backend == "interpret":
        return "chunked"
    why = unsupported(q, k, v, backend)
    if why:
        if why not in _WARNED:
            _WARNED.add(why)
            warnings.warn(f"sparse_attention: the Pallas kernel cannot take {why}; using implementation='chunked'",
                          stacklevel=3)
        return "chunked"
    return "pallas"


class AttentionStats(NamedTuple):
    """``expected_density``: ``[batch, heads]`` mean expected gate over causal pairs (differentiable; all ones
    when dense). ``adjacency``: ``[batch, heads, seq_q, seq_k]`` bool edges (``return_adjacency=True``), else None.
    ``edge_density``: ``[batch, heads]`` share of causal pairs that are edges under the *deterministic* (eval)
    gate ``g > 0`` — in both modes, counted on the fly (no T x T array), no gradient."""

    expected_density: jax.Array
    adjacency: jax.Array | None = None
    edge_density: jax.Array | None = None


def _check_window(window, causal: bool):
    if window is None:
        return None
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
        raise ValueError(f"window must be a positive int (the sliding window: query i sees keys i - window < j <= i) "
                         f"or None, got {window!r}")
    if not causal:
        raise ValueError("a sliding window is causal attention over the last `window` keys: pass causal=True "
                         "(or window=None)")
    return int(window)


def _check(q, k, v, gate: Gate | None, mode: str, seed, implementation: str):
    for name, x in (("q", q), ("k", k), ("v", v)):
        if getattr(x, "ndim", None) != 4:
            raise ValueError(f"{name} must be [batch, seq, heads, head_dim], got shape {getattr(x, 'shape', None)}")
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise ValueError(f"{name} must be floating point, got {x.dtype}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}; cast them first")
    if k.shape[:3] != v.shape[:3]:
        raise ValueError(f"k {k.shape} and v {v.shape} must agree in batch, seq and heads")
    if q.shape[0] != k.shape[0]:
        raise ValueError(f"batch sizes differ: q {q.shape[0]}, k/v {k.shape[0]}")
    if q.shape[3] != k.shape[3]:
        raise ValueError(f"head_dim differs: q {q.shape[3]}, k {k.shape[3]}")
    if q.shape[2] % k.shape[2]:
        raise ValueError(f"q heads ({q.shape[2]}) must be a multiple of k/v heads ({k.shape[2]}) for grouped-query "
                         "attention")
    if mode not in ("train", "eval"):
        raise ValueError(f"mode must be 'train' or 'eval', got {mode!r}")
    if gate is not None:
        bshape = jnp.shape(gate.bias)
        if bshape not in ((), (q.shape[2],)):
            raise ValueError(f"gate bias must be a scalar or [heads]=({q.shape[2]},), got shape {bshape}; slice "
                             "per-layer biases before calling attention")
        if mode == "train" and seed is None:
            raise ValueError("mode='train' samples gates and needs seed= (an int or integer scalar array); pass "
                             "mode='eval' for deterministic gates")
    if implementation != "auto" and implementation not in IMPLEMENTATIONS:
        raise ValueError(f"unknown implementation {implementation!r}; choose 'auto' or one of {sorted(IMPLEMENTATIONS)}")


def _check_mask(mask, q, k, implementation):
    shape = jnp.shape(mask)
    if q.shape[1] != k.shape[1] or shape != (q.shape[0], q.shape[1]):
        raise ValueError(f"attention_mask must be [batch, seq] = {(q.shape[0], q.shape[1])} of a self-attention "
                         f"(seq_q == seq_k), got mask {shape} for seq_q {q.shape[1]}, seq_k {k.shape[1]}")
    if implementation not in ("auto", "reference"):
        raise ValueError(f"attention_mask is supported by implementation='reference' (materialised), not "
                         f"{implementation!r}: pass implementation='auto' or 'reference', or batch prompts of one "
                         "length without a mask")


def _as_seed(seed):
    if seed is None:
        return None
    if isinstance(seed, (int, np.integer)):
        if not 0 <= int(seed) < 2**32:
            raise ValueError(f"seed must be in [0, 2**32), got {seed}")
        return jnp.asarray(np.uint32(seed))
    seed = jnp.asarray(seed)
    if seed.shape != () or not jnp.issubdtype(seed.dtype, jnp.integer):
        raise ValueError(f"seed must be an integer scalar, got dtype {seed.dtype} shape {seed.shape}")
    return seed.astype(jnp.uint32)


def _block_options(impl: str, implementation: str, block_sizes, blocks: dict) -> dict:
    """The block-size keywords the resolved implementation takes (module docstring of ``attention/blocks.py``)."""
    if isinstance(block_sizes, Mapping):
        blocks, block_sizes = {**block_sizes, **blocks}, None
    elif block_sizes is not None and not isinstance(block_sizes, BlockSizes):
        raise ValueError(f"block_sizes must be a BlockSizes or a mapping of its fields, got {type(block_sizes).__name__}")
    if impl == "reference":
        if blocks or block_sizes is not None:
            names = sorted(blocks) if blocks else ["block_sizes"]
            raise ValueError(f"block sizes {names} apply only to implementation='chunked' or 'pallas'")
        return {}
    if impl == "pallas":
        return {**blocks, "block_sizes": block_sizes}
    extra = set(blocks) - {"block_q", "block_k"}
    if extra and implementation != "auto":  # kernel-only options are dropped when auto falls back
        raise ValueError(f"implementation='chunked' takes block_q/block_k only, got {sorted(blocks)}")
    base = {} if block_sizes is None else {"block_q": block_sizes.block_q, "block_k": block_sizes.block_k}
    return {**base, **{n: x for n, x in blocks.items() if n in ("block_q", "block_k")}}


def sparse_attention(q, k, v, gate: Any = None, *, causal: bool = True, mode: str = "train", seed=None,
                     implementation: str = "auto", return_adjacency: bool = False, attention_mask=None,
                     window: int | None = None, block_sizes: BlockSizes | Mapping | None = None, **blocks):
    """Gated sparse attention (docs/method.md §1): ``y_i = sum_j softmax_j(s)_ij * A_ij * v_j``.

    Args:
      q: ``[batch, seq_q, heads, head_dim]``; k, v: ``[batch, seq_k, kv_heads, head_dim]`` with ``heads`` a
        multiple of ``kv_heads`` (grouped-query attention). Logits are computed in float32 whatever the input
        dtype; the output has q's dtype.
      gate: ``None`` (dense attention: every gate open), a float/array bias (the Bernoulli gate) or a
        :class:`sparsejax.Gate` (bias ``()`` or ``[heads]``, family, temperature, stretch; ``noise``: the training
        noise's scale, for noise annealing).
      causal: mask keys after the query (top-left aligned, as ``jax.nn.dot_product_attention``).
      mode: ``"train"`` samples gates from counter-based noise (needs ``seed``); ``"eval"`` is deterministic.
      seed: int in ``[0, 2**32)`` or integer scalar array; the same seed gives the same gates in every
        implementation.
      implementation: ``"auto"`` (the fused ``"pallas"`` kernel on GPU/TPU, ``"chunked"`` on CPU or when the
        kernel cannot take the shapes/dtype, with a one-time warning, or for a scaled training noise
        ``gate.noise``), ``"reference"`` (materialised, O(T^2)),
        ``"chunked"`` (XLA, O(T) memory) or ``"pallas"`` (the fused kernel; Pallas interpret mode on CPU: slow,
        for correctness).
      return_adjacency: also return the boolean edge tensor ``[batch, heads, seq_q, seq_k]``.
      attention_mask: ``[batch, seq]`` padding mask of self-attention (1/True = real token), as Hugging Face's:
        the softmax runs over real keys only, gates exist only between real tokens (a padded query's output is
        0) and densities average over pairs of real tokens. Materialised (``"reference"``; ``"auto"`` picks it):
        for analysis batches of prompts of different lengths, not for long-context training.
      window: sliding-window attention (causal, as Gemma's and Mistral's local layers): query i sees key j iff
        ``j <= i`` and ``i - j < window``. The softmax, the gates, the densities and their denominator are over
        those pairs only — the pairs the dense model attends (docs/method.md §1). ``"chunked"`` and ``"pallas"``
        skip the blocks outside the window (O(T W) work).
      block_sizes: a :class:`BlockSizes` (or a mapping of its fields) for ``"chunked"`` (which reads ``block_q`` /
        ``block_k``) and ``"pallas"`` (default: ``BLOCK_SIZES[backend]``, one per kernel backend).
      blocks: its fields as loose keywords, overriding ``block_sizes`` or the default: ``block_q``/``block_k`` for
        the chunked implementation; for ``"pallas"`` also ``block_q_bwd``, ``block_k_bwd``, ``num_warps``,
        ``num_stages``, ``backward`` (``"auto"`` drops the kernel-only ones when it falls back to chunked).

    Returns:
      ``(out, AttentionStats(expected_density [batch, heads], adjacency or None))``.
    """
    gate = as_gate(gate)
    _check(q, k, v, gate, mode, seed, implementation)
    window = _check_window(window, causal)
    if attention_mask is not None:
        _check_mask(attention_mask, q, k, implementation)
        implementation = "reference"
    impl = resolve_implementation(implementation, q, k, v)
    if impl == "pallas" and implementation == "auto" and gate is not None and gate.noise is not None \
            and mode == "train":
        impl = "chunked"  # a scaled training noise (noise annealing) is not in the fused kernel
    kwargs = _block_options(impl, implementation, block_sizes, blocks)
    if impl == "pallas":  # the trainer's sharding rules, read here once: the kernel file knows no mesh
        kwargs["partition"] = sharded.partition_for(jax.sharding.get_abstract_mesh(), sharding.active_rules())
    train = mode == "train" and gate is not None
    out, density, edges, adjacency = IMPLEMENTATIONS[impl](q, k, v, gate, causal=causal, train=train,
                                                           seed=_as_seed(seed) if train else None,
                                                           return_adjacency=return_adjacency, window=window,
                                                           **kwargs,
                                                           **({} if attention_mask is None else
                                                              {"attention_mask": attention_mask}))
    return out, AttentionStats(density, adjacency, jax.lax.stop_gradient(edges))


def attention_pattern(q, k, gate: Any = None, *, causal: bool = True, mode: str = "eval", seed=None,
                      attention_mask=None, window: int | None = None):
    """The materialised attention of the method: ``(P, A)``, both ``[batch, heads, seq_q, seq_k]`` float32 —
    the softmax over all causal keys and the gate values (sampled with ``seed`` in ``mode="train"``; exactly
    those :func:`sparse_attention` draws). The effective attention is ``P * A`` and the output is
    ``einsum("bhts,bshd->bthd", P * A, v)`` (k/v heads repeated for grouped-query attention). O(T^2) memory:
    for analysis and hooks, not for training. ``window``: as :func:`sparse_attention`."""
    gate = as_gate(gate)
    _check(q, k, k, gate, mode, seed, "reference")
    window = _check_window(window, causal)
    if attention_mask is not None:
        _check_mask(attention_mask, q, k, "reference")
    train = mode == "train" and gate is not None
    p, a, _, _ = attention_weights(q, k, gate, causal=causal, train=train, seed=_as_seed(seed) if train else None,
                                   attention_mask=attention_mask, window=window)
    return p, a
