"""Node-level circuits: EAP scores of every node, exact activation patching, explained effects of node sets and
the smallest head circuit. Nodes: the embedding, every head (its ``hook_z``), every MLP."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from .core import _NODE_HOOKS, _gate_values, _run, _smallest, _tokens, nodes, padding


def eap_scores(config, params, gate, clean, corrupt, metric, *, gates: str = "recompute",
               attention_mask=None) -> dict:
    """Attribution-patching score of every node (:func:`nodes` order), as ``{node: float}`` (mean over examples):
    the corrupt-minus-clean activation dotted with the gradient of the mean metric at the node, at the clean run
    (patches nothing; one compiled program per config, shapes and ``metric``)."""
    clean, corrupt = _tokens(config, clean, corrupt)
    scores = _node_eap(config, params, gate, clean, corrupt, metric, gates, padding(attention_mask))
    return dict(zip(nodes(config), map(float, np.asarray(scores))))


@functools.partial(jax.jit, static_argnames=("config", "metric", "gates"))
def _node_eap(config, params, gate, clean, corrupt, metric, gates, pad) -> jax.Array:
    """:func:`eap_scores` as a ``[nodes]`` vector, compiled once per config, shapes, ``metric`` and ``gates``."""
    frozen = _gate_values(config, params, gate, clean, gates, pad)
    a_clean, a_corrupt = (_run(config, params, gate, t, pad, frozen, capture=_NODE_HOOKS)[1]
                          for t in (clean, corrupt))

    def m(d):  # additive zero deltas on every node's activation
        logits, _ = _run(config, params, gate, clean, pad, frozen, embed=a_clean["hook_embed"] + d["hook_embed"],
                         deltas={h: d[h] for h in _NODE_HOOKS[1:]})
        return jnp.mean(metric(logits))

    grads = jax.grad(m)(jax.tree.map(jnp.zeros_like, a_clean))
    # the gradient is of the mean metric, so the sum over examples estimates the mean effect
    per = jax.tree.map(lambda c, a, g: ((c - a) * g).astype(jnp.float32), a_corrupt, a_clean, grads)
    heads, mlps = jnp.sum(per["attn.hook_z"], (1, 2, 4)), jnp.sum(per["hook_mlp_out"], (1, 2, 3))   # [L, H], [L]
    return jnp.concatenate([jnp.sum(per["hook_embed"])[None], jnp.concatenate([heads, mlps[:, None]], 1).ravel()])


def _node_mask(config, chosen) -> np.ndarray:
    """``[nodes]`` bool: which of :func:`nodes` are in ``chosen``."""
    chosen = set(map(tuple, chosen))
    return np.array([n in chosen for n in nodes(config)])


def _node_runner(config, params, gate, clean, corrupt, metric, gates, attention_mask):
    """``(run, m_clean, m_corrupt)``. ``run(patched)``: the mean metric of the clean run in which every node where
    ``patched`` (``[nodes]`` bool) is true takes its activation on the corrupted input — one compiled forward for
    every node set, the metric applied to the logits it returns. ``m_clean`` / ``m_corrupt``: the clean and the
    corrupted run's (gates frozen to the clean run's with ``gates="frozen"``)."""
    clean, corrupt = _tokens(config, clean, corrupt)
    pad = padding(attention_mask)
    frozen = _gate_values(config, params, gate, clean, gates, pad)
    acts = _run(config, params, gate, corrupt, pad, frozen, capture=_NODE_HOOKS)[1]

    def run(patched, tokens=clean):
        logits, _ = _run(config, params, gate, tokens, pad, frozen, patch=(np.asarray(patched, bool), acts))
        return float(jnp.mean(metric(logits)))

    none = np.zeros(len(nodes(config)), bool)
    return run, run(none), run(none, corrupt)


def patching_effects(config, params, gate, clean, corrupt, metric, *, gates: str = "recompute",
                     attention_mask=None, only=None) -> dict:
    """Exact activation patching: ``{node: mean metric(clean with node corrupted) - mean metric(clean)}``, one
    forward per node, in which only that node takes its activation on the corrupted input. ``only``: these nodes
    (e.g. a subset of a large model's heads, to check attribution scores), else every node."""
    run, base, _ = _node_runner(config, params, gate, clean, corrupt, metric, gates, attention_mask)
    every = nodes(config)
    index = {node: i for i, node in enumerate(every)}
    return {node: run(np.arange(len(every)) == index[node]) - base for node in (every if only is None else only)}


def explained_effects(config, params, gate, clean, corrupt, metric, keeps, *, gates: str = "recompute",
                      attention_mask=None) -> list[float]:
    """:func:`explained_effect` of each node set in ``keeps``, the clean and corrupted runs shared: one forward per
    set (every node outside it patched to its corrupted activation)."""
    explained = _node_explainer(config, params, gate, clean, corrupt, metric, gates, attention_mask)
    return [explained(keep) for keep in keeps]


def _node_explainer(config, params, gate, clean, corrupt, metric, gates, attention_mask):
    """``keep -> explained effect`` (every node outside ``keep`` patched), the clean and corrupted runs shared."""
    run, m_clean, m_corrupt = _node_runner(config, params, gate, clean, corrupt, metric, gates, attention_mask)
    if abs(m_clean - m_corrupt) < 1e-12:
        raise ValueError("clean and corrupted inputs give the same metric: nothing to explain")
    return lambda keep: (run(~_node_mask(config, keep)) - m_corrupt) / (m_clean - m_corrupt)


def explained_effect(config, params, gate, clean, corrupt, metric, keep, *, gates: str = "recompute",
                     attention_mask=None) -> float:
    """``(m_circuit - m_corrupt) / (m_clean - m_corrupt)`` with only the nodes in ``keep`` computed on the clean
    input (every other node patched to its corrupted activation); means over examples."""
    return explained_effects(config, params, gate, clean, corrupt, metric, [keep], gates=gates,
                             attention_mask=attention_mask)[0]


def effect_curve(config, params, gate, clean, corrupt, metric, scores: dict, ks, *, gates: str = "recompute",
                 attention_mask=None):
    """Explained effect when keeping the top-``k`` nodes by ``|score|`` (the embedding always kept; every other
    node patched to its corrupted activation), for each k."""
    ranked = [n for n in sorted(scores, key=lambda n: -abs(scores[n])) if n != ("embed",)]
    return explained_effects(config, params, gate, clean, corrupt, metric, [[("embed",), *ranked[:k]] for k in ks],
                             gates=gates, attention_mask=attention_mask)


def smallest_head_circuit(config, params, gate, clean, corrupt, metric, ranked_heads, target: float = 0.9, *,
                          gates: str = "recompute", attention_mask=None) -> tuple[int | None, dict]:
    """The fewest heads, taken in ``ranked_heads`` order (the embedding and every MLP kept, every other head patched
    to its corrupted output), whose circuit explains ``>= target``, found as :func:`smallest_edge_circuit` finds
    edges (a doubling grid, then bisection): for models with too many heads to evaluate every k."""
    explained = _node_explainer(config, params, gate, clean, corrupt, metric, gates, attention_mask)
    others = [n for n in nodes(config) if n[0] != "head"]
    return _smallest(lambda k: explained(others + list(ranked_heads[:k])), len(ranked_heads), target)
