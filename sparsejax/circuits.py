"""Node-level circuit discovery on the writable hooks: attribution patching (EAP), exact activation patching, and
circuit evaluation by explained effect. Pure functions of (config, params, gate, token batches).

Nodes: the input embedding (``hook_embed``), every attention head (its output ``blocks.l.attn.hook_z[..., h, :]``)
and every MLP (``blocks.l.hook_mlp_out``). A metric maps logits ``[B, T, V]`` to one number per example (e.g.
:func:`logit_diff`); effects are means over examples.

* **EAP** (attribution patching; Nanda 2023, Syed et al. 2023): ``score(n) = sum (a_n(corrupt) - a_n(clean)) *
  d metric / d a_n`` at the clean run — two forwards and one backward for every node at once.
* **Exact patching**: ``metric(clean run with node n set to its corrupted value) - metric(clean)``, one forward per
  node (the reference the EAP scores are checked against).
* **Explained effect** of a set of kept nodes: every other node takes its corrupted activation,
  ``(m_circuit - m_corrupt) / (m_clean - m_corrupt)`` (1 when every node is kept, 0 when none is).

Sparse models: the model runs in eval mode (deterministic gates). ``gates="recompute"`` (default) lets a patched run
recompute its gates from its own queries and keys; ``gates="frozen"`` fixes every layer's gates to the clean run's
(patching ``attn.hook_gate``; materialises the T x T pattern: for analysis sizes).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .models import forward


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


def _hook_names(config):
    return ["hook_embed"] + [f"blocks.{l}.{n}" for l in range(config.n_layers) for n in ("attn.hook_z", "hook_mlp_out")]


def _run(config, params, gate, tokens, interventions=None, capture=None):
    return forward(config, params, tokens, gate, mode="eval", capture=capture, interventions=interventions)


def _frozen_gates(config, params, gate, tokens, how: str) -> dict:
    if how == "recompute" or gate is None:
        return {}
    if how != "frozen":
        raise ValueError(f"gates must be 'recompute' or 'frozen', got {how!r}")
    caps = _run(config, params, gate, tokens, capture="blocks.*.attn.hook_gate")[1]["captures"]
    return dict(caps)


def activations(config, params, gate, tokens, interventions=None) -> dict:
    """The node activations of a run: ``hook_embed`` and every layer's ``attn.hook_z`` and ``hook_mlp_out``."""
    return dict(_run(config, params, gate, tokens, interventions, capture=_hook_names(config))[1]["captures"])


def _node_value(acts: dict, node):
    if node[0] == "embed":
        return acts["hook_embed"]
    if node[0] == "mlp":
        return acts[f"blocks.{node[1]}.hook_mlp_out"]
    return acts[f"blocks.{node[1]}.attn.hook_z"][:, :, node[2]]


def eap_scores(config, params, gate, clean, corrupt, metric, *, gates: str = "recompute") -> dict:
    """Attribution-patching score of every node (:func:`nodes` order), as ``{node: float}`` (mean over examples)."""
    frozen = _frozen_gates(config, params, gate, clean, gates)
    a_clean = activations(config, params, gate, clean, frozen)
    a_corrupt = activations(config, params, gate, corrupt, frozen)
    names = _hook_names(config)
    deltas = {n: jnp.zeros_like(a_clean[n]) for n in names}

    def m(deltas):
        inter = {**frozen, **{n: (lambda x, d=deltas[n]: x + d) for n in names}}
        logits, _ = _run(config, params, gate, clean, inter)
        return jnp.mean(metric(logits))

    grads = jax.grad(m)(deltas)
    per_hook = {n: (a_corrupt[n] - a_clean[n]) * grads[n] for n in names}
    # the gradient is of the mean metric, so the sum over examples estimates the mean effect
    return {node: float(jnp.sum(_node_value(per_hook, node))) for node in nodes(config)}


def _patched(config, acts_corrupt: dict, patch: set, frozen: dict) -> dict:
    """Interventions that give every node in ``patch`` its corrupted activation."""
    inter = dict(frozen)
    if ("embed",) in patch:
        inter["hook_embed"] = acts_corrupt["hook_embed"]
    for l in range(config.n_layers):
        heads = [n[2] for n in patch if n[0] == "head" and n[1] == l]
        if heads:
            idx = jnp.asarray(heads)
            other = acts_corrupt[f"blocks.{l}.attn.hook_z"]
            inter[f"blocks.{l}.attn.hook_z"] = lambda z, idx=idx, other=other: z.at[:, :, idx].set(other[:, :, idx])
        if ("mlp", l) in patch:
            inter[f"blocks.{l}.hook_mlp_out"] = acts_corrupt[f"blocks.{l}.hook_mlp_out"]
    return inter


def patching_effects(config, params, gate, clean, corrupt, metric, *, gates: str = "recompute") -> dict:
    """Exact activation patching: ``{node: mean metric(clean with node corrupted) - mean metric(clean)}``."""
    frozen = _frozen_gates(config, params, gate, clean, gates)
    a_corrupt = activations(config, params, gate, corrupt, frozen)
    base = float(jnp.mean(metric(_run(config, params, gate, clean, frozen)[0])))
    out = {}
    for node in nodes(config):
        logits, _ = _run(config, params, gate, clean, _patched(config, a_corrupt, {node}, frozen))
        out[node] = float(jnp.mean(metric(logits))) - base
    return out


def explained_effect(config, params, gate, clean, corrupt, metric, keep, *, gates: str = "recompute") -> float:
    """``(m_circuit - m_corrupt) / (m_clean - m_corrupt)`` with only the nodes in ``keep`` computed on the clean
    input (every other node patched to its corrupted activation); means over examples."""
    frozen = _frozen_gates(config, params, gate, clean, gates)
    a_corrupt = activations(config, params, gate, corrupt, frozen)
    m_clean = float(jnp.mean(metric(_run(config, params, gate, clean, frozen)[0])))
    m_corrupt = float(jnp.mean(metric(_run(config, params, gate, corrupt, frozen)[0])))
    patch = set(nodes(config)) - set(map(tuple, keep))
    m_circuit = float(jnp.mean(metric(_run(config, params, gate, clean, _patched(config, a_corrupt, patch,
                                                                                  frozen))[0])))
    if abs(m_clean - m_corrupt) < 1e-12:
        raise ValueError("clean and corrupted inputs give the same metric: nothing to explain")
    return (m_circuit - m_corrupt) / (m_clean - m_corrupt)


def effect_curve(config, params, gate, clean, corrupt, metric, scores: dict, ks, *, gates: str = "recompute"):
    """Explained effect when keeping the top-``k`` nodes by ``|score|`` (the embedding always kept), for each k."""
    ranked = [n for n in sorted(scores, key=lambda n: -abs(scores[n])) if n != ("embed",)]
    return [explained_effect(config, params, gate, clean, corrupt, metric, [("embed",), *ranked[:k]], gates=gates)
            for k in ks]


def rank_agreement(a: dict, b: dict, k: int) -> float:
    """Share of the top-``k`` nodes by ``|a|`` that are also in the top-``k`` by ``|b|``."""
    top = lambda s: set(sorted(s, key=lambda n: -abs(s[n]))[:k])
    return len(top(a) & top(b)) / k


def correlation(a: dict, b: dict) -> float:
    keys = sorted(a)
    return float(np.corrcoef([a[k] for k in keys], [b[k] for k in keys])[0, 1])
