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

Prompts of several lengths: every function takes ``attention_mask=`` (``[B, T]``, 1 = token) for a left-padded batch,
shared by the clean and corrupted prompts (:func:`padding`; ``sparsejax.tasks`` builds such batches).
"""
from __future__ import annotations

import functools
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


def _run(config, params, gate, tokens, interventions=None, capture=None, pad=None):
    return forward(config, params, tokens, gate, mode="eval", capture=capture, interventions=interventions,
                   **(pad or {}))


def _frozen_gates(config, params, gate, tokens, how: str, pad=None) -> dict:
    if how == "recompute" or gate is None:
        return {}
    if how != "frozen":
        raise ValueError(f"gates must be 'recompute' or 'frozen', got {how!r}")
    caps = _run(config, params, gate, tokens, capture="blocks.*.attn.hook_gate", pad=pad)[1]["captures"]
    return dict(caps)


def activations(config, params, gate, tokens, interventions=None, *, attention_mask=None) -> dict:
    """The node activations of a run: ``hook_embed`` and every layer's ``attn.hook_z`` and ``hook_mlp_out``."""
    return _activations(config, params, gate, tokens, interventions, padding(attention_mask))


def _activations(config, params, gate, tokens, interventions, pad) -> dict:
    return dict(_run(config, params, gate, tokens, interventions, capture=_hook_names(config), pad=pad)[1]["captures"])


def _node_value(acts: dict, node):
    if node[0] == "embed":
        return acts["hook_embed"]
    if node[0] == "mlp":
        return acts[f"blocks.{node[1]}.hook_mlp_out"]
    return acts[f"blocks.{node[1]}.attn.hook_z"][:, :, node[2]]


def eap_scores(config, params, gate, clean, corrupt, metric, *, gates: str = "recompute",
               attention_mask=None) -> dict:
    """Attribution-patching score of every node (:func:`nodes` order), as ``{node: float}`` (mean over examples)."""
    pad = padding(attention_mask)
    frozen = _frozen_gates(config, params, gate, clean, gates, pad)
    a_clean = _activations(config, params, gate, clean, frozen, pad)
    a_corrupt = _activations(config, params, gate, corrupt, frozen, pad)
    names = _hook_names(config)
    deltas = {n: jnp.zeros_like(a_clean[n]) for n in names}

    def m(deltas):
        inter = {**frozen, **{n: (lambda x, d=deltas[n]: x + d) for n in names}}
        logits, _ = _run(config, params, gate, clean, inter, pad=pad)
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


def patching_effects(config, params, gate, clean, corrupt, metric, *, gates: str = "recompute",
                     attention_mask=None) -> dict:
    """Exact activation patching: ``{node: mean metric(clean with node corrupted) - mean metric(clean)}``."""
    pad = padding(attention_mask)
    frozen = _frozen_gates(config, params, gate, clean, gates, pad)
    a_corrupt = _activations(config, params, gate, corrupt, frozen, pad)
    base = float(jnp.mean(metric(_run(config, params, gate, clean, frozen, pad=pad)[0])))
    out = {}
    for node in nodes(config):
        logits, _ = _run(config, params, gate, clean, _patched(config, a_corrupt, {node}, frozen), pad=pad)
        out[node] = float(jnp.mean(metric(logits))) - base
    return out


def explained_effect(config, params, gate, clean, corrupt, metric, keep, *, gates: str = "recompute",
                     attention_mask=None) -> float:
    """``(m_circuit - m_corrupt) / (m_clean - m_corrupt)`` with only the nodes in ``keep`` computed on the clean
    input (every other node patched to its corrupted activation); means over examples."""
    pad = padding(attention_mask)
    frozen = _frozen_gates(config, params, gate, clean, gates, pad)
    a_corrupt = _activations(config, params, gate, corrupt, frozen, pad)
    m_clean = float(jnp.mean(metric(_run(config, params, gate, clean, frozen, pad=pad)[0])))
    m_corrupt = float(jnp.mean(metric(_run(config, params, gate, corrupt, frozen, pad=pad)[0])))
    patch = set(nodes(config)) - set(map(tuple, keep))
    m_circuit = float(jnp.mean(metric(_run(config, params, gate, clean, _patched(config, a_corrupt, patch, frozen),
                                           pad=pad)[0])))
    if abs(m_clean - m_corrupt) < 1e-12:
        raise ValueError("clean and corrupted inputs give the same metric: nothing to explain")
    return (m_circuit - m_corrupt) / (m_clean - m_corrupt)


def effect_curve(config, params, gate, clean, corrupt, metric, scores: dict, ks, *, gates: str = "recompute",
                 attention_mask=None):
    """Explained effect when keeping the top-``k`` nodes by ``|score|`` (the embedding always kept), for each k."""
    ranked = [n for n in sorted(scores, key=lambda n: -abs(scores[n])) if n != ("embed",)]
    return [explained_effect(config, params, gate, clean, corrupt, metric, [("embed",), *ranked[:k]], gates=gates,
                             attention_mask=attention_mask) for k in ks]


def rank_agreement(a: dict, b: dict, k: int) -> float:
    """Share of the top-``k`` nodes by ``|a|`` that are also in the top-``k`` by ``|b|``."""
    top = lambda s: set(sorted(s, key=lambda n: -abs(s[n]))[:k])
    return len(top(a) & top(b)) / k


def correlation(a: dict, b: dict) -> float:
    keys = sorted(a)
    return float(np.corrcoef([a[k] for k in keys], [b[k] for k in keys])[0, 1])


# --------------------------------------------------------------------------------------------------------------------
# Edge level. Writers put their output into the residual stream: the embedding (``hook_embed``), every head (its
# ``attn.hook_result``, the head's slice of the output projection) and every MLP (``hook_mlp_out``). Readers take
# their input from it: every query head's q input and every key/value head's k and v inputs (separate targets, as
# EAP-IG; ``attn.hook_{q,k,v}_input``), every MLP's input (``hook_mlp_in``) and the logits (the last layer's
# ``hook_resid_post``, before the final norm). An edge is a writer upstream of a reader. Patching an edge gives the
# reader the writer's corrupted output in place of its clean one and leaves every other reader alone.
# Needs a residual stream that is the sum of the writers' outputs (pre-norm families; OLMo-2's post-norm applies a
# norm to each sublayer's output, so only node-level scores apply there).

READER_HOOKS = {"q": "attn.hook_q_input", "k": "attn.hook_k_input", "v": "attn.hook_v_input", "mlp": "hook_mlp_in",
                "logits": "hook_resid_post"}
_WRITER_CAPTURE = ["hook_embed", "blocks.*.attn.hook_result", "blocks.*.hook_mlp_out"]


def writers(config) -> list[tuple]:
    """Edge sources in model order: ``("embed",)``, ``("head", l, h)``, ``("mlp", l)`` (as :func:`nodes`)."""
    return nodes(config)


def readers(config) -> list[tuple]:
    """Edge targets in model order: ``("q", l, h)``, ``("k", l, g)``, ``("v", l, g)`` (g a key/value head),
    ``("mlp", l)``, then ``("logits",)``."""
    out = []
    for l in range(config.n_layers):
        out += [("q", l, h) for h in range(config.n_heads)]
        out += [(kind, l, g) for kind in ("k", "v") for g in range(config.n_kv_heads)] + [("mlp", l)]
    return out + [("logits",)]


def _position(node, n_layers: int) -> int:
    if node[0] in ("embed",):
        return 0
    if node[0] == "logits":
        return 2 * n_layers + 1
    return 2 * node[1] + (2 if node[0] == "mlp" else 1)


def allowed(config) -> np.ndarray:
    """``[writers, readers]`` bool: the writer is upstream of the reader."""
    pw = np.array([_position(w, config.n_layers) for w in writers(config)])
    pr = np.array([_position(r, config.n_layers) for r in readers(config)])
    return pw[:, None] < pr[None, :]


def edges(config) -> list[tuple]:
    """Every edge ``(writer, reader)`` of the graph, in model order."""
    ws, rs, ok = writers(config), readers(config), allowed(config)
    return [(ws[i], rs[j]) for i, j in zip(*np.nonzero(ok))]


def _check_edge_model(config):
    if config.norm_position != "pre":
        raise ValueError(f"edge-level circuits need a pre-norm model (the residual stream is then the sum of the "
                         f"writers' outputs); {config.family} normalises each sublayer's output: use the node-level "
                         f"eap_scores / patching_effects / explained_effect instead")


def _writer_stack(config, caps) -> jax.Array:
    """``[writers, B, T, d]`` float32, in :func:`writers` order."""
    parts = [caps["hook_embed"][None]]
    for l in range(config.n_layers):
        parts += [jnp.moveaxis(caps[f"blocks.{l}.attn.hook_result"], 2, 0), caps[f"blocks.{l}.hook_mlp_out"][None]]
    return jnp.concatenate(parts).astype(jnp.float32)


def _reader_index(config) -> dict:
    """Per reader hook: the reader indices laid out as the hook's per-layer slots (``[L, slots]`` or ``[L]``)."""
    idx = {r: i for i, r in enumerate(readers(config))}
    L = range(config.n_layers)
    out = {"q": np.array([[idx[("q", l, h)] for h in range(config.n_heads)] for l in L]),
           "mlp": np.array([idx[("mlp", l)] for l in L])}
    for kind in ("k", "v"):
        out[kind] = np.array([[idx[(kind, l, g)] for g in range(config.n_kv_heads)] for l in L])
    return out


def _reader_deltas(config, diffs, weights) -> dict:
    """Per reader hook, ``[L, B, T, (slots,) d]`` additive inputs ``sum_w weights[w, r] * diffs[w]``."""
    index = _reader_index(config)
    out = {}
    for kind, hook in READER_HOOKS.items():
        if kind == "logits":
            last = jnp.einsum("wbtd,w->btd", diffs, weights[:, -1])
            out[hook] = jnp.zeros((config.n_layers, *last.shape), last.dtype).at[-1].set(last)
        elif kind == "mlp":
            out[hook] = jnp.einsum("wbtd,wl->lbtd", diffs, weights[:, index[kind]])
        else:
            out[hook] = jnp.einsum("wbtd,wls->lbtsd", diffs, weights[:, index[kind]])
    return out


def _reader_scores(config, diffs, grads) -> jax.Array:
    """``[writers, readers]``: ``sum_{b,t} diffs[w] . grads[reader r]``."""
    index = _reader_index(config)
    scores = jnp.zeros((diffs.shape[0], len(readers(config))), jnp.float32)
    for kind, hook in READER_HOOKS.items():
        g = grads[hook]
        if kind == "logits":
            scores = scores.at[:, -1].set(jnp.einsum("wbtd,btd->w", diffs, g[-1]))
        elif kind == "mlp":
            scores = scores.at[:, index[kind]].set(jnp.einsum("wbtd,lbtd->wl", diffs, g))
        else:
            scores = scores.at[:, index[kind]].set(jnp.einsum("wbtd,lbtsd->wls", diffs, g))
    return scores


def _edge_context(config, params, gate, clean, corrupt, gates, pad):
    """Frozen-gate interventions, and the writers' outputs on the clean and corrupted inputs."""
    _check_edge_model(config)
    frozen = _frozen_gates(config, params, gate, clean, gates, pad)
    caps = lambda toks: _run(config, params, gate, toks, frozen, capture=_WRITER_CAPTURE, pad=pad)[1]["captures"]
    c_clean, c_corrupt = caps(clean), caps(corrupt)
    return frozen, _writer_stack(config, c_clean), _writer_stack(config, c_corrupt), c_clean, c_corrupt


def _with_deltas(frozen, deltas, extra=None):
    from .models.hooks import PerLayer
    return {**frozen, **{h: PerLayer(d) for h, d in deltas.items()}, **(extra or {})}


EDGE_METHODS = ("eap", "eap-ig", "eap-ig-activations")


def edge_score_matrix(config, params, gate, clean, corrupt, metric, *, method: str = "eap", steps: int = 5,
                      gates: str = "recompute", attention_mask=None) -> np.ndarray:
    """Attribution scores of every edge as a ``[writers, readers]`` array (0 where no edge; see :func:`edges`).

    ``method="eap"``: ``(a_w(corrupt) - a_w(clean)) . d metric / d input_r`` at the clean run (two forwards and one
    backward for every edge at once). ``method="eap-ig"`` (EAP-IG, Hanna et al. 2024, integrated gradients over the
    input): the gradient averaged over ``steps`` runs whose input embeddings lie on the line from the corrupted to
    the clean ones (``alpha = 1/steps ... 1``). ``method="eap-ig-activations"`` (their activation variant): for
    each writer group — the embedding, one layer's heads, one layer's MLP — the gradient at every reader averaged
    over ``steps`` runs in which only that group's outputs lie on the line from corrupted to clean (the rest of the
    model runs on the clean input): ``(2 L + 1) * steps`` forward+backward passes. Its scores of a group's edges sum,
    as ``steps`` grows, to the exact effect of patching that group (completeness; a test). Scores estimate the mean
    effect over examples."""
    if method not in EDGE_METHODS:
        raise ValueError(f"method must be one of {', '.join(EDGE_METHODS)}, got {method!r}")
    if method != "eap" and steps < 1:
        raise ValueError(f"{method} needs steps >= 1, got {steps}")
    return np.asarray(_edge_scores_jit(config, params, gate, jnp.asarray(clean), jnp.asarray(corrupt), metric,
                                       method, steps, gates, padding(attention_mask)))


@functools.partial(jax.jit, static_argnums=(0, 5, 6, 7, 8))
def _edge_scores_jit(config, params, gate, clean, corrupt, metric, method, steps, gates, pad):
    frozen, w_clean, w_corrupt, c_clean, c_corrupt = _edge_context(config, params, gate, clean, corrupt, gates, pad)
    diffs = w_corrupt - w_clean
    zeros = _reader_deltas(config, diffs, jnp.zeros((diffs.shape[0], len(readers(config)))))

    def m(deltas, embed=None):
        extra = None if embed is None else {"hook_embed": embed}
        logits, _ = _run(config, params, gate, clean, _with_deltas(frozen, deltas, extra), pad=pad)
        return jnp.mean(metric(logits))

    if method == "eap":
        grads = jax.grad(m)(zeros)
    elif method == "eap-ig-activations":
        return _ig_activation_scores(config, params, gate, clean, metric, steps, frozen, diffs, zeros,
                                     c_clean["hook_embed"], pad) * jnp.asarray(allowed(config))
    else:
        e_clean, e_corrupt = c_clean["hook_embed"], c_corrupt["hook_embed"]
        alphas = (jnp.arange(steps) + 1.0) / steps
        grads = jax.lax.map(lambda a: jax.grad(m)(zeros, e_corrupt + a * (e_clean - e_corrupt)), alphas)
        grads = jax.tree.map(lambda g: jnp.mean(g, axis=0), grads)
    return _reader_scores(config, diffs, grads) * jnp.asarray(allowed(config))


def _writer_groups(config) -> np.ndarray:
    """Group of every writer: 0 the embedding, ``1 + 2 l`` layer l's heads, ``2 + 2 l`` layer l's MLP."""
    return np.array([0 if w[0] == "embed" else 1 + 2 * w[1] + (w[0] == "mlp") for w in writers(config)])


def _ig_activation_scores(config, params, gate, clean, metric, steps, frozen, diffs, zeros, embed_clean, pad):
    """EAP-IG over activations from the writers' output differences ``diffs`` (corrupt - clean, ``[W, B, T, d]``):
    a group's move is the sum of its writers' differences, added where the group writes (the embedding, a layer's
    attention output, a layer's MLP output) — no extra forward passes to capture anything."""
    from .models.hooks import PerLayer

    L = config.n_layers
    g_ids = np.arange(2 * L + 1)
    of_group = jnp.asarray(_writer_groups(config)[None, :] == g_ids[:, None], jnp.float32)   # [groups, writers]
    moved = jnp.einsum("gw,wbtd->gbtd", of_group, diffs)          # each group's corrupt - clean output
    is_layer = lambda first: jnp.asarray(g_ids[:, None] == first + 2 * np.arange(L)[None, :], jnp.float32)
    is_attn, is_mlp = is_layer(1), is_layer(2)                     # [groups, L]
    per_layer = lambda sel, values: PerLayer(sel.reshape(L, 1, 1, 1) * values)

    def one(pair):
        gi, a = pair
        shift = 1.0 - a  # the group's output: clean + (1 - a)(corrupt - clean) = corrupt + a (clean - corrupt)
        extra = {"hook_attn_out": per_layer(shift * is_attn[gi], moved[1::2]),
                 "hook_mlp_out": per_layer(shift * is_mlp[gi], moved[2::2]),
                 "hook_embed": embed_clean + shift * (gi == 0) * moved[0]}

        def m(deltas):
            logits, _ = _run(config, params, gate, clean, _with_deltas(frozen, deltas, extra), pad=pad)
            return jnp.mean(metric(logits))

        grads = jax.grad(m)(zeros)
        return _reader_scores(config, diffs * of_group[gi][:, None, None, None], grads)

    alphas = (jnp.arange(steps) + 1.0) / steps
    pairs = (jnp.repeat(jnp.arange(2 * L + 1), steps), jnp.tile(alphas, 2 * L + 1))
    return jnp.sum(jax.lax.map(one, pairs), axis=0) / steps


def edge_scores(config, params, gate, clean, corrupt, metric, **kw) -> dict:
    """:func:`edge_score_matrix` as ``{(writer, reader): score}`` over :func:`edges`."""
    s = edge_score_matrix(config, params, gate, clean, corrupt, metric, **kw)
    ws, rs, ok = writers(config), readers(config), allowed(config)
    return {(ws[i], rs[j]): float(s[i, j]) for i, j in zip(*np.nonzero(ok))}


def _edge_matrix(config, chosen) -> np.ndarray:
    """Edges (``(writer, reader)`` tuples or a ``[writers, readers]`` bool array) as a bool matrix."""
    ok = allowed(config)
    if isinstance(chosen, np.ndarray) and chosen.dtype == bool:
        if chosen.shape != ok.shape:
            raise ValueError(f"edge matrix has shape {chosen.shape}, the graph is {ok.shape} (writers, readers)")
        return chosen & ok
    wi = {w: i for i, w in enumerate(writers(config))}
    ri = {r: i for i, r in enumerate(readers(config))}
    out = np.zeros_like(ok)
    for e in chosen:
        w, r = tuple(e[0]), tuple(e[1])
        if w not in wi or r not in ri or not ok[wi[w], ri[r]]:
            raise ValueError(f"{(w, r)} is not an edge of this model's graph (see circuits.edges(config))")
        out[wi[w], ri[r]] = True
    return out


def edge_patching_effects(config, params, gate, clean, corrupt, metric, *, only=None,
                          gates: str = "recompute", attention_mask=None) -> dict:
    """Exact edge patching: ``{edge: mean metric(clean run whose reader gets the writer's corrupted output) -
    mean metric(clean)}``, one forward per edge (every edge, or those in ``only``): the reference for the scores."""
    pad = padding(attention_mask)
    frozen, w_clean, w_corrupt, _, _ = _edge_context(config, params, gate, jnp.asarray(clean),
                                                     jnp.asarray(corrupt), gates, pad)
    diffs = w_corrupt - w_clean
    clean = jnp.asarray(clean)

    @jax.jit
    def m(weights):
        logits, _ = _run(config, params, gate, clean, _with_deltas(frozen, _reader_deltas(config, diffs, weights)),
                         pad=pad)
        return jnp.mean(metric(logits))

    ws, rs = writers(config), readers(config)
    base = float(m(jnp.zeros((len(ws), len(rs)))))
    todo = _edge_matrix(config, edges(config) if only is None else only)
    out = {}
    for i, j in zip(*np.nonzero(todo)):
        out[(ws[i], rs[j])] = float(m(jnp.zeros((len(ws), len(rs))).at[i, j].set(1.0))) - base
    return out


class EdgeCircuitEvaluator:
    """Evaluates circuits of edges on one clean/corrupted batch (one compiled forward, reused across circuits):
    ``EdgeCircuitEvaluator(config, params, gate, clean, corrupt, metric, gates).explained(keep)``."""

    def __init__(self, config, params, gate, clean, corrupt, metric, gates: str = "recompute", attention_mask=None):
        clean, corrupt = jnp.asarray(clean), jnp.asarray(corrupt)
        pad = padding(attention_mask)
        frozen, self.w_clean, self.w_corrupt, _, _ = _edge_context(config, params, gate, clean, corrupt, gates, pad)
        self.config, self.clean = config, clean

        @jax.jit
        def run(current, toks, weights):
            inter = _with_deltas(frozen, _reader_deltas(config, self.w_corrupt - current, weights))
            logits, aux = _run(config, params, gate, toks, inter, capture=_WRITER_CAPTURE, pad=pad)
            return jnp.mean(metric(logits)), _writer_stack(config, aux["captures"])

        self.run = run
        no_edit = jnp.zeros(allowed(config).shape, jnp.float32)
        self.m_clean = float(run(self.w_clean, clean, no_edit)[0])
        self.m_corrupt = float(run(self.w_corrupt, corrupt, no_edit)[0])
        if abs(self.m_clean - self.m_corrupt) < 1e-12:
            raise ValueError("clean and corrupted inputs give the same metric: nothing to explain")

    def explained(self, keep) -> float:
        removed = jnp.asarray(allowed(self.config) & ~_edge_matrix(self.config, keep), jnp.float32)
        current = self.w_clean
        for _ in range(2 * self.config.n_layers + 1):
            m_circuit, new = self.run(current, self.clean, removed)
            if bool(jnp.array_equal(new, current)):
                break
            current = new
        return (float(m_circuit) - self.m_corrupt) / (self.m_clean - self.m_corrupt)


def edge_explained_effect(config, params, gate, clean, corrupt, metric, keep, *, gates: str = "recompute",
                          attention_mask=None) -> float:
    """Explained effect of a circuit of edges: every reader's input is the sum of its kept writers' outputs in the
    circuit run and of its other writers' outputs on the corrupted input; ``(m_circuit - m_corrupt) / (m_clean -
    m_corrupt)``. ``keep``: edges as tuples or a ``[writers, readers]`` bool array.

    Computed exactly by fixed-point passes: each forward gives every reader the corrupted-minus-current difference
    of its removed writers as measured in the previous pass; a writer's output is final once everything upstream
    is, so at most ``2 L + 1`` passes are needed (it stops as soon as a pass leaves every writer unchanged)."""
    return EdgeCircuitEvaluator(config, params, gate, clean, corrupt, metric, gates, attention_mask).explained(keep)


def top_edges(config, scores, k: int) -> np.ndarray:
    """The ``k`` edges of largest ``|score|`` (``scores``: ``[writers, readers]`` or ``{edge: score}``) as a bool
    ``[writers, readers]`` matrix."""
    ws, rs = writers(config), readers(config)
    if isinstance(scores, dict):
        mat = np.zeros((len(ws), len(rs)))
        wi, ri = {w: i for i, w in enumerate(ws)}, {r: i for i, r in enumerate(rs)}
        for (w, r), v in scores.items():
            mat[wi[w], ri[r]] = v
        scores = mat
    flat = np.where(allowed(config), np.abs(scores), -np.inf).ravel()
    keep = np.zeros(flat.shape, bool)
    keep[np.argsort(-flat, kind="stable")[:k]] = True
    return keep.reshape(len(ws), len(rs)) & allowed(config)


def edge_effect_curve(config, params, gate, clean, corrupt, metric, scores, ks, *, gates: str = "recompute",
                      attention_mask=None):
    """Explained effect when keeping the top-``k`` edges by ``|score|`` (:func:`top_edges`), for each k."""
    runner = EdgeCircuitEvaluator(config, params, gate, clean, corrupt, metric, gates, attention_mask)
    return [runner.explained(top_edges(config, scores, k)) for k in ks]


def smallest_edge_circuit(config, params, gate, clean, corrupt, metric, scores, target: float = 0.9, *,
                          gates: str = "recompute", attention_mask=None) -> tuple[int | None, dict]:
    """The fewest top-scored edges (:func:`top_edges`) whose circuit explains ``>= target`` of the effect, and every
    ``{k: explained effect}`` evaluated on the way: a doubling grid, then bisection between the last grid point
    below the target and the first at or above it (the curve is not always monotone: the bisection finds a crossing,
    the grid points are returned too). ``None`` if even every edge falls short (never, up to rounding: all edges
    explain 1)."""
    runner = EdgeCircuitEvaluator(config, params, gate, clean, corrupt, metric, gates, attention_mask)
    total = int(allowed(config).sum())
    seen = {}
    effect = lambda k: seen.setdefault(k, runner.explained(top_edges(config, scores, k)))
    ks = sorted({min(2 ** i, total) for i in range(total.bit_length() + 1)})
    hi = next((k for k in ks if effect(k) >= target), None)
    if hi is None:
        return None, seen
    lo = max([k for k in ks if k < hi] or [0])
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if effect(mid) >= target else (mid, hi)
    return hi, dict(sorted(seen.items()))


def circuit_heads(config, keep) -> set:
    """The heads a circuit of edges touches (as a writer, or through a q/k/v input)."""
    mat = _edge_matrix(config, keep)
    ws, rs = writers(config), readers(config)
    heads = {ws[i] for i in np.nonzero(mat.any(1))[0] if ws[i][0] == "head"}
    ratio = config.n_heads // config.n_kv_heads
    for j in np.nonzero(mat.any(0))[0]:
        r = rs[j]
        if r[0] == "q":
            heads.add(("head", r[1], r[2]))
        elif r[0] in ("k", "v"):  # a key/value head serves n_heads / n_kv_heads query heads
            heads.update(("head", r[1], r[2] * ratio + i) for i in range(ratio))
    return heads


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
    tokens, target = jnp.asarray(tokens), jnp.asarray(target)
    L, H = config.n_layers, config.n_heads
    logits, aux = _run(config, params, gate, tokens, capture=["blocks.*.attn.hook_pattern", "blocks.*.attn.hook_v",
                                                               f"blocks.{L - 1}.hook_resid_post"],
                     pad=padding(attention_mask))
    caps = aux["captures"]
    q = position % tokens.shape[1]
    u = _frozen_unembed(config, params, caps[f"blocks.{L - 1}.hook_resid_post"][:, q], target)
    ratio = H // config.n_kv_heads
    wo = params["layers"]["attn"]["o"]["kernel"].reshape(L, H, config.head_dim, config.d_model)
    per_key = []
    for l in range(L):
        v = jnp.repeat(caps[f"blocks.{l}.attn.hook_v"].astype(jnp.float32), ratio, axis=2)   # [B, T, H, hd]
        proj = jnp.einsum("bkhe,hed,bd->bhk", v, wo[l].astype(jnp.float32), u)                # (v_k W_O) . u
        per_key.append(caps[f"blocks.{l}.attn.hook_pattern"][:, :, q, :] * proj)
    per_key = jnp.stack(per_key, 1)
    per_head = per_key.sum(-1)
    logit = logits[jnp.arange(tokens.shape[0]), q, target]
    return {"per_key": np.asarray(per_key), "per_head": np.asarray(per_head),
            "other": np.asarray(logit - per_head.sum((1, 2))), "logit": np.asarray(logit)}


def heads_for_share(per_head, share: float = 0.8) -> tuple[int, list[tuple]]:
    """How many heads, ranked by ``|mean over examples|`` of their attribution, cover ``share`` of the summed
    absolute attribution of all heads; and the ranking ``[(layer, head, mean attribution)]``."""
    mean = np.asarray(per_head).mean(0)
    order = sorted(np.ndindex(mean.shape), key=lambda i: -abs(mean[i]))
    mags = np.array([abs(mean[i]) for i in order])
    k = int(np.searchsorted(np.cumsum(mags) / max(mags.sum(), 1e-30), share - 1e-12) + 1)
    return min(k, len(order)), [(int(l), int(h), float(mean[l, h])) for l, h in order]
