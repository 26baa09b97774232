"""Named activations (TransformerLens names): capture them, and intervene on them, inside ``jit`` and ``lax.scan``.

``forward(..., capture=[...], interventions={name: spec})``. A name is ``hook_embed``, ``ln_final.hook_normalized``
or ``blocks.{l}.<layer hook>`` (:data:`LAYER_HOOKS`); captures accept ``fnmatch`` patterns (``"hook_z"`` matches
every layer's). An intervention replaces the activation before anything downstream reads it; ``spec`` is

* an array (replace; broadcast to the activation's shape) — e.g. the same hook captured on a corrupted input,
* ``"zero"`` (zero ablation), ``"mean"`` (the mean over the batch axis: mean ablation),
* a function ``f(value) -> value`` (e.g. patch one head: ``lambda z: z.at[:, :, 3].set(other[:, :, 3])``),
* :class:`PerLayer` under a layer hook's short name (``"attn.hook_q_input"``): one array per layer, stacked
  ``[L, *shape]``, added to (or replacing) the activation of layer l with a dynamic index — one op per layer,
  where L exact-name interventions on the same hook cost L ops per layer (used by edge-level circuit discovery).

Arrays must be given under exact names; the other specs also under patterns. Captured values are those after the
intervention. Layer hooks run inside the layer scan: each intervention is applied where ``layer == l``.

``forward(..., carried=...)`` takes one :class:`Carried` intervention: an edit whose state travels through the layer
scan beside the residual stream, so what a layer reads can depend on what earlier layers of the *same* run wrote
(edge-level circuits in one pass: every reader gets the corrupted-minus-current outputs of its removed writers).

Attention-internal hooks: ``attn.hook_q_input`` / ``hook_k_input`` / ``hook_v_input`` are the residual stream copied
per (query / key-value) head before the projection (as TransformerLens' ``use_split_qkv_input``; edges into a
head's q, k and v are separate); asking for any of them computes q, k, v head by head. ``attn.hook_pattern`` (the
effective attention ``P * A``) and ``attn.hook_gate`` (``A``) come from :func:`sparsejax.attention.attention_pattern`;
intervening on either computes the head outputs from the (patched) materialised pattern, so gates can be frozen
from another run (patch ``hook_gate``) or recomputed (leave it alone).
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any, Callable

import jax.numpy as jnp

# Per-layer hooks (``blocks.{l}.`` + name) and their shapes.
LAYER_HOOKS = {
    "hook_resid_pre": "[B, T, d]", "hook_resid_mid": "[B, T, d]", "hook_resid_post": "[B, T, d]",
    "attn.hook_q_input": "[B, T, H, d] residual input of each query head", "attn.hook_k_input": "[B, T, K, d]",
    "attn.hook_v_input": "[B, T, K, d]",
    "attn.hook_q": "[B, T, H, hd] (before RoPE)", "attn.hook_k": "[B, T, K, hd]", "attn.hook_v": "[B, T, K, hd]",
    "attn.hook_rot_q": "[B, T, H, hd] (RoPE models)", "attn.hook_rot_k": "[B, T, K, hd] (RoPE models)",
    "attn.hook_pattern": "[B, H, T, T] effective attention P * A (softmax times gate)",
    "attn.hook_gate": "[B, H, T, T] gate values A", "attn.hook_adjacency": "[B, H, T, T] bool, A > 0 (capture only)",
    "attn.hook_z": "[B, T, H, hd]", "attn.hook_result": "[B, T, H, d] per-head output (capture only)",
    "hook_attn_out": "[B, T, d]", "hook_mlp_in": "[B, T, d] residual input of the MLP", "hook_mlp_out": "[B, T, d]",
}
MODEL_HOOKS = {"hook_embed": "[B, T, d]", "ln_final.hook_normalized": "[B, T, d]"}
CAPTURE_ONLY = ("attn.hook_adjacency", "attn.hook_result")
SPLIT_INPUTS = ("attn.hook_q_input", "attn.hook_k_input", "attn.hook_v_input")
PATTERN_HOOKS = ("attn.hook_pattern", "attn.hook_gate", "attn.hook_adjacency")


def hook_names(n_layers: int) -> list[str]:
    """Every hook name of a model with ``n_layers`` layers."""
    return [*MODEL_HOOKS, *(f"blocks.{l}.{h}" for l in range(n_layers) for h in LAYER_HOOKS)]


def _matches(name: str, pattern: str) -> bool:
    return fnmatch.fnmatch(name, pattern) or fnmatch.fnmatch(name, "*." + pattern)


def _apply(spec, value):
    if isinstance(spec, str):
        if spec == "zero":
            return jnp.zeros_like(value)
        if spec == "mean":
            return jnp.broadcast_to(jnp.mean(value, axis=0, keepdims=True), value.shape).astype(value.dtype)
        raise ValueError(f"unknown intervention {spec!r}: use an array, 'zero', 'mean' or a function")
    if callable(spec):
        return spec(value)
    return jnp.broadcast_to(jnp.asarray(spec), value.shape).astype(value.dtype)


@dataclass(frozen=True)
class PerLayer:
    """Stacked per-layer values ``[L, *hook shape]`` for one layer hook: ``value + values[l]`` (``add=True``) or
    ``values[l]`` in layer l."""
    values: Any
    add: bool = True

    def apply(self, index, value):
        v = self.values[index].astype(value.dtype)
        return value + v if self.add else jnp.broadcast_to(v, value.shape)


class Carried:
    """An intervention with state carried through the layer scan (subclass it; the instance is closed over by the
    forward, its arrays are traced like any other input).

    ``hooks``: the layer hooks' short names it sees (any of :data:`LAYER_HOOKS`, ``attn.hook_result`` included).
    ``init()``: the state before layer 0 (a pytree). ``xs()``: per-layer inputs, a pytree of ``[L, ...]`` arrays
    (or None), sliced for each layer. ``at(state, x, index, name, value) -> (value, state)``: at hook ``name`` of
    layer ``index`` (traced), the new activation and state (for capture-only hooks the value is ignored).
    ``final(state, x) -> x``: the residual stream after the last layer, before the final norm."""
    hooks: tuple[str, ...] = ()

    def init(self):
        return ()

    def xs(self):
        return None

    def at(self, state, x, index, name, value):
        return value, state

    def final(self, state, x):
        return x


class Hooks:
    """The capture filter and the interventions of one forward pass."""

    def __init__(self, n_layers: int, capture=None, interventions: dict[str, Any] | None = None,
                 carried: Carried | None = None):
        names = hook_names(n_layers)
        patterns = [] if not capture else [capture] if isinstance(capture, str) else list(capture)
        unknown = [p for p in patterns if not any(_matches(n, p) for n in names)]
        if unknown:
            raise ValueError(f"capture patterns {unknown} match no hook; hooks are {', '.join(MODEL_HOOKS)} and "
                             f"blocks.{{l}}.<{', '.join(LAYER_HOOKS)}>")
        self.keep: Callable[[str], bool] = lambda name: any(_matches(name, p) for p in patterns)
        # (layer or None, hook name without the blocks prefix) -> [specs]
        self.edits: dict[tuple[int | None, str], list] = {}
        self.per_layer: dict[str, PerLayer] = {}
        for key, spec in (interventions or {}).items():
            if isinstance(spec, PerLayer):
                if key not in LAYER_HOOKS or key in CAPTURE_ONLY:
                    raise ValueError(f"PerLayer interventions take a layer hook's short name (one of "
                                     f"{', '.join(h for h in LAYER_HOOKS if h not in CAPTURE_ONLY)}), got {key!r}")
                if spec.values.shape[0] != n_layers:
                    raise ValueError(f"PerLayer values for {key} have {spec.values.shape[0]} layers on axis 0; the "
                                     f"model has {n_layers}")
                self.per_layer[key] = spec
                continue
            hits = [n for n in names if _matches(n, key)] if isinstance(spec, str) or callable(spec) else \
                [n for n in names if n == key]
            if not hits:
                raise ValueError(f"intervention {key!r} matches no hook" + (
                    " (array replacements need an exact name, e.g. blocks.0.attn.hook_z)"
                    if not (isinstance(spec, str) or callable(spec)) else ""))
            for n in hits:
                if n.startswith("blocks."):
                    _, layer, short = n.split(".", 2)
                    if short in CAPTURE_ONLY:
                        raise ValueError(f"{n} can be captured but not intervened on; patch "
                                         f"{'attn.hook_gate' if 'adjacency' in short else 'attn.hook_z'} instead")
                    self.edits.setdefault((int(layer), short), []).append(spec)
                else:
                    self.edits.setdefault((None, n), []).append(spec)
        if carried is not None:
            if not isinstance(carried, Carried):
                raise TypeError(f"carried= takes a sparsejax.models.hooks.Carried, got {type(carried).__name__}")
            unknown = [h for h in carried.hooks if h not in LAYER_HOOKS]
            if unknown:
                raise ValueError(f"{type(carried).__name__}.hooks names {unknown}, not layer hooks; they are "
                                 f"{', '.join(LAYER_HOOKS)}")
        self.carried = carried
        self.carried_hooks = set(carried.hooks) if carried is not None else set()
        self.layer_hooks = {h for h in LAYER_HOOKS if any(self.keep(f"blocks.{l}.{h}") for l in range(n_layers))}
        self.layer_edits = {h for (l, h) in self.edits if l is not None} | set(self.per_layer)
        active = self.layer_hooks | self.layer_edits | self.carried_hooks
        self.split_inputs = bool(active & set(SPLIT_INPUTS))
        self.materialise_pattern = bool(self.layer_edits & {"attn.hook_pattern", "attn.hook_gate"})
        self.need_pattern = self.materialise_pattern or bool(self.layer_hooks & set(PATTERN_HOOKS))
        self.n_layers = n_layers

    def model_point(self, name: str, value, captures: dict):
        """A model-level hook point: apply its interventions, capture if asked, return the value."""
        for spec in self.edits.get((None, name), ()):
            value = _apply(spec, value)
        if self.keep(name):
            captures[name] = value
        return value

    def wants(self, name: str) -> bool:
        """Whether layer hook ``name`` is read by anything (a capture or the carried intervention): for hooks the
        forward computes only on demand (``attn.hook_result``)."""
        return name in self.layer_hooks or name in self.carried_hooks

    def layer_point(self, index, name: str, value, captured: dict, carry: list | None = None, xs=None):
        """A hook point inside the layer scan (``index`` is the traced layer number; ``carry``: a one-element list
        holding the carried intervention's state, updated in place while the layer is traced; ``xs``: its inputs
        for this layer)."""
        for (l, h), specs in self.edits.items():
            if h == name and l is not None:
                for spec in specs:
                    value = jnp.where(index == l, _apply(spec, value), value)
        if name in self.per_layer:
            value = self.per_layer[name].apply(index, value)
        if name in self.carried_hooks:
            value, carry[0] = self.carried.at(carry[0], xs, index, name, value)
        if name in self.layer_hooks:
            captured[name] = value
        return value

    def collect(self, stacked: dict, captures: dict):
        """Unstack the per-layer captures (``[L, ...]``) into ``blocks.{l}.name`` entries that were asked for."""
        for name, values in stacked.items():
            for l in range(self.n_layers):
                full = f"blocks.{l}.{name}"
                if self.keep(full):
                    captures[full] = values[l]
        return captures
