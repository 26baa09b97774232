"""What every circuit method shares: the metric, the node list, the one compiled eval-mode forward (:func:`_run`)
that takes what it patches as data, the gate modes, padding, and the comparison of two score sets."""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from ..models import forward
from ..models.hooks import MODEL_HOOKS, PerLayer


def logit_diff(good, bad, position: int = -1) -> Callable:
    """Metric: ``logit[good] - logit[bad]`` at ``position``, per example (``good``/``bad``: ``[B]`` token ids)."""
    good, bad = jnp.asarray(good), jnp.asarray(bad)

    def metric(logits):
        last = logits[:, position]
        idx = jnp.arange(last.shape[0])
        return last[idx, good] - last[idx, bad]
    return metric


def nodes(config) -> list[tuple]:
    """``("embed",)``, ``("head", layer, head)`` for every head, ``("mlp", layer)`` for every MLP, in model order."""
    out = [("embed",)]
    for l in range(config.n_layers):
        out += [("head", l, h) for h in range(config.n_heads)] + [("mlp", l)]
    return out


_NODE_HOOKS = ("hook_embed", "attn.hook_z", "hook_mlp_out")


def _capture_names(hooks) -> list[str]:
    """``forward``'s capture patterns for model hooks and layer hooks' short names (every layer's)."""
    return [h if h in MODEL_HOOKS else f"blocks.*.{h}" for h in hooks]


def padding(attention_mask) -> dict:
    """The forward keywords for a left-padded batch: ``attention_mask`` and the positions it implies (``cumsum - 1``,
    so every prompt's real tokens have positions ``0, 1, ...`` as if unpadded); ``{}`` for ``None``. Left padding
    keeps every prompt's last token at position ``-1``, where the task metrics read."""
    if attention_mask is None:
        return {}
    mask = jnp.asarray(attention_mask)
    if mask.ndim != 2:
        raise ValueError(f"attention_mask must be [batch, T] (1 = real token, 0 = padding), got shape {mask.shape}")
    if not isinstance(mask, jax.core.Tracer) and not bool(jnp.all(mask[:, -1] != 0)):
        raise ValueError("circuit functions need left padding (every prompt's last token real, where the metric "
                         "reads): pad on the left, as sparsejax.tasks does")
    return {"attention_mask": mask, "positions": jnp.maximum(jnp.cumsum(mask.astype(jnp.int32), 1) - 1, 0)}


def _tokens(config, *batches) -> list:
    """The token batches as jax arrays, their ids checked on the host (inside ``jit`` the forward cannot)."""
    for ids in map(np.asarray, batches):
        if ids.size and not 0 <= ids.min() <= ids.max() < config.vocab_size:
            raise ValueError(f"token ids must lie in [0, {config.vocab_size}) (the model's vocabulary), got ids in "
                             f"[{ids.min()}, {ids.max()}]; is the tokenizer the model's own?")
    return [jnp.asarray(b) for b in batches]


@dataclasses.dataclass(frozen=True)
class _Patch(PerLayer):
    """A :class:`PerLayer` replacement where ``mask[l]`` is true (it broadcasts against layer l's activation from
    the right): layer l's activation becomes ``values[l]`` there and stays as it is elsewhere."""
    mask: Any = None

    def apply(self, index, value):
        return jnp.where(self.mask[index], self.values[index].astype(value.dtype), value)


def _node_patch(config, patched, acts) -> dict:
    """Interventions that give every node where ``patched`` (``[nodes]`` bool, :func:`nodes` order) is true its
    value in ``acts`` (the :data:`_NODE_HOOKS` captures of a run) and leave every other node alone."""
    layers = patched[1:].reshape(config.n_layers, config.n_heads + 1)  # each layer's heads, then its MLP
    return {"hook_embed": lambda x: jnp.where(patched[0], acts["hook_embed"].astype(x.dtype), x),
            "attn.hook_z": _Patch(acts["attn.hook_z"], mask=layers[:, :-1, None]),
            "hook_mlp_out": _Patch(acts["hook_mlp_out"], mask=layers[:, -1])}


@functools.partial(jax.jit, static_argnames=("config", "capture"))
def _run(config, params, gate, tokens, pad=None, frozen=None, *, patch=None, deltas=None, embed=None, capture=()):
    """The eval-mode forward of every circuit function, compiled once per config, ``capture``, shapes and kind of
    edit; what it edits is data, so one program serves every node set, edge set and integration step.

    ``frozen``: ``[L, B, H, T, T]`` gates replacing every layer's (``gates="frozen"``), or None. ``patch``:
    ``(patched, acts)``, every node where ``patched`` is true takes its value in ``acts`` (:func:`_node_patch`).
    ``deltas``: ``{layer hook: [L, ...]}``, added to each layer's activation. ``embed``: a replacement for
    ``hook_embed`` (not with ``patch``). ``capture``: a tuple of model hooks and layer hooks' short names.
    Returns ``(logits, {hook: capture})``, a layer hook's stacked ``[L, ...]``."""
    inter = {hook: PerLayer(d) for hook, d in (deltas or {}).items()}
    if frozen is not None:
        inter["attn.hook_gate"] = PerLayer(frozen, add=False)
    if patch is not None:
        inter.update(_node_patch(config, *patch))
    if embed is not None:
        inter["hook_embed"] = embed
    logits, aux = forward(config, params, tokens, gate, mode="eval", capture=_capture_names(capture),
                          interventions=inter, **(pad or {}))
    caps = aux["captures"]
    stack = lambda h: jnp.stack([caps[f"blocks.{l}.{h}"] for l in range(config.n_layers)])
    return logits, {h: caps[h] if h in MODEL_HOOKS else stack(h) for h in capture}


def _gate_values(config, params, gate, tokens, how: str, pad=None):
    """``[L, B, H, T, T]``: the gates of the run on ``tokens``, which every run reuses with ``gates="frozen"``;
    None with ``gates="recompute"`` (or a dense model)."""
    if how not in ("recompute", "frozen"):
        raise ValueError(f"gates must be 'recompute' or 'frozen', got {how!r}")
    if how == "recompute" or gate is None:
        return None
    return _run(config, params, gate, tokens, pad, capture=("attn.hook_gate",))[1]["attn.hook_gate"]


def _frozen_gates(config, params, gate, tokens, how: str, pad=None) -> dict:
    """:func:`_gate_values` as ``forward`` interventions."""
    values = _gate_values(config, params, gate, tokens, how, pad)
    return {} if values is None else {"attn.hook_gate": PerLayer(values, add=False)}


def activations(config, params, gate, tokens, interventions=None, *, attention_mask=None) -> dict:
    """The node activations of a run: ``hook_embed`` and every layer's ``attn.hook_z`` and ``hook_mlp_out`` (an
    eager forward: ``interventions`` may be anything ``forward`` takes)."""
    return dict(forward(config, params, jnp.asarray(tokens), gate, mode="eval", capture=_capture_names(_NODE_HOOKS),
                        interventions=interventions, **padding(attention_mask))[1]["captures"])


def rank_agreement(a: dict, b: dict, k: int) -> float:
    """Share of the top-``k`` nodes by ``|a|`` that are also in the top-``k`` by ``|b|``."""
    top = lambda s: set(sorted(s, key=lambda n: -abs(s[n]))[:k])
    return len(top(a) & top(b)) / k


def correlation(a: dict, b: dict) -> float:
    keys = sorted(a)
    return float(np.corrcoef([a[k] for k in keys], [b[k] for k in keys])[0, 1])


def _smallest(effect, total: int, target: float) -> tuple[int | None, dict]:
    """The search of :func:`smallest_edge_circuit` over ``k = 1 .. total`` with ``effect(k)``."""
    seen = {}
    value = lambda k: seen.setdefault(k, effect(k))
    ks = sorted({min(2 ** i, total) for i in range(total.bit_length() + 1)})
    hi = next((k for k in ks if value(k) >= target), None)
    if hi is None:
        return None, seen
    lo = max([k for k in ks if k < hi] or [0])
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if value(mid) >= target else (mid, hi)
    return hi, dict(sorted(seen.items()))
