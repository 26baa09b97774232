"""Edge-level circuits: the writer/reader graph, EAP / EAP-IG edge scores, exact edge patching, and the explained
effect of an edge circuit in one forward (:class:`_CircuitPass`)."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ..models import forward
from ..models.hooks import Carried, PerLayer
from .core import _gate_values, _run, _smallest, _tokens, nodes, padding


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
_WRITER_HOOKS = ("hook_embed", "attn.hook_result", "hook_mlp_out")


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


def _writer_stack(caps) -> jax.Array:
    """``[writers, B, T, d]`` float32, in :func:`writers` order, from a run's :data:`_WRITER_HOOKS` captures."""
    heads = jnp.moveaxis(caps["attn.hook_result"], 3, 1)                       # [L, H, B, T, d]
    layers = jnp.concatenate([heads, caps["hook_mlp_out"][:, None]], 1)        # [L, H + 1, B, T, d]: heads, MLP
    return jnp.concatenate([caps["hook_embed"][None], layers.reshape(-1, *layers.shape[2:])]).astype(jnp.float32)


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


@functools.partial(jax.jit, static_argnames=("config", "gates"))
def _edge_context(config, params, gate, clean, corrupt, gates, pad):
    """The frozen gates (:func:`_gate_values`) and the writers' outputs on the clean and corrupted inputs."""
    _check_edge_model(config)
    frozen = _gate_values(config, params, gate, clean, gates, pad)
    w_clean, w_corrupt = (_writer_stack(_run(config, params, gate, t, pad, frozen, capture=_WRITER_HOOKS)[1])
                          for t in (clean, corrupt))
    return frozen, w_clean, w_corrupt


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
    clean, corrupt = _tokens(config, clean, corrupt)
    return np.asarray(_edge_scores_jit(config, params, gate, clean, corrupt, metric, method, steps, gates,
                                       padding(attention_mask)))


@functools.partial(jax.jit, static_argnums=(0, 5, 6, 7, 8))
def _edge_scores_jit(config, params, gate, clean, corrupt, metric, method, steps, gates, pad=None):
    """:func:`edge_score_matrix`, compiled once per config, shapes, ``metric``, ``method``, ``steps`` and ``gates``
    (patches nothing: the reader deltas it differentiates at are zero)."""
    frozen, w_clean, w_corrupt = _edge_context(config, params, gate, clean, corrupt, gates, pad)
    e_clean, e_corrupt = (w[0].astype(config.dtype) for w in (w_clean, w_corrupt))  # writer 0: the embedding
    diffs = w_corrupt - w_clean
    zeros = _reader_deltas(config, diffs, jnp.zeros((diffs.shape[0], len(readers(config)))))

    def m(deltas, embed=None):
        logits, _ = _run(config, params, gate, clean, pad, frozen, deltas=deltas, embed=embed)
        return jnp.mean(metric(logits))

    if method == "eap":
        grads = jax.grad(m)(zeros)
    elif method == "eap-ig-activations":
        return _ig_activation_scores(config, params, gate, clean, metric, steps, frozen, diffs, zeros,
                                     e_clean, pad) * jnp.asarray(allowed(config))
    else:
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
    L = config.n_layers
    g_ids = np.arange(2 * L + 1)
    of_group = jnp.asarray(_writer_groups(config)[None, :] == g_ids[:, None], jnp.float32)   # [groups, writers]
    moved = jnp.einsum("gw,wbtd->gbtd", of_group, diffs)          # each group's corrupt - clean output
    is_layer = lambda first: jnp.asarray(g_ids[:, None] == first + 2 * np.arange(L)[None, :], jnp.float32)
    is_attn, is_mlp = is_layer(1), is_layer(2)                     # [groups, L]
    per_layer = lambda sel, values: sel.reshape(L, 1, 1, 1) * values

    def one(pair):
        gi, a = pair
        shift = 1.0 - a  # the group's output: clean + (1 - a)(corrupt - clean) = corrupt + a (clean - corrupt)
        extra = {"hook_attn_out": per_layer(shift * is_attn[gi], moved[1::2]),
                 "hook_mlp_out": per_layer(shift * is_mlp[gi], moved[2::2])}
        embed = embed_clean + shift * (gi == 0) * moved[0]

        def m(deltas):
            logits, _ = _run(config, params, gate, clean, pad, frozen, deltas={**deltas, **extra}, embed=embed)
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


@functools.partial(jax.jit, static_argnames="config")
def _edge_run(config, params, gate, tokens, pad, frozen, w_corrupt, current, weights):
    """Logits and writer outputs (:func:`_writer_stack`) of a run in which every reader r gets ``sum_w weights[w, r]
    (w_corrupt - current)[w]`` added to its input: with ``current`` the clean writers' outputs and one weight, edge
    patching; with the circuit run's own, a fixed-point pass of :meth:`EdgeCircuitEvaluator.explained`. Compiled
    once per config and shapes: the edges are data (``weights``)."""
    deltas = _reader_deltas(config, w_corrupt - current, weights)
    logits, caps = _run(config, params, gate, tokens, pad, frozen, deltas=deltas, capture=_WRITER_HOOKS)
    return logits, _writer_stack(caps)


class _EdgeRuns:
    """Edge-patched runs on one clean/corrupted batch: the writers' clean and corrupted outputs, and :meth:`run`."""

    def __init__(self, config, params, gate, clean, corrupt, metric, gates="recompute", attention_mask=None):
        self.clean, self.corrupt = _tokens(config, clean, corrupt)
        self.config, self.params, self.gate, self.metric = config, params, gate, metric
        self.pad = padding(attention_mask)
        self.frozen, self.w_clean, self.w_corrupt = _edge_context(config, params, gate, self.clean, self.corrupt,
                                                                  gates, self.pad)

    def run(self, current, tokens, weights) -> tuple[float, jax.Array]:
        """The mean metric and the writer outputs of :func:`_edge_run` (``weights``: ``[writers, readers]``)."""
        logits, new = _edge_run(self.config, self.params, self.gate, tokens, self.pad, self.frozen, self.w_corrupt,
                                current, np.asarray(weights, np.float32))
        return float(jnp.mean(self.metric(logits))), new


def edge_patching_effects(config, params, gate, clean, corrupt, metric, *, only=None,
                          gates: str = "recompute", attention_mask=None) -> dict:
    """Exact edge patching: ``{edge: mean metric(clean run whose reader gets the writer's corrupted output) -
    mean metric(clean)}``, one forward per edge (every edge, or those in ``only``): the reference for the scores."""
    runs = _EdgeRuns(config, params, gate, clean, corrupt, metric, gates, attention_mask)
    effect = lambda weights: runs.run(runs.w_clean, runs.clean, weights)[0]
    zero = np.zeros(allowed(config).shape, np.float32)
    base = effect(zero)
    ws, rs, out = writers(config), readers(config), {}
    for i, j in zip(*np.nonzero(_edge_matrix(config, edges(config) if only is None else only))):
        one = zero.copy()
        one[i, j] = 1.0
        out[(ws[i], rs[j])] = effect(one) - base
    return out


class _CircuitPass(Carried):
    """The edge circuit run in one forward. The state's ``diffs`` ``[writers, B, T, d]`` hold each writer's corrupted
    minus circuit-run output (zero until the writer has run; the embedding's from the start). Every reader's input
    gets ``sum_w removed[w, r] diffs[w]`` — the removed writers upstream of it have all run in this pass — and each
    layer's heads and MLP write their rows once computed: the fixed point of :func:`_edge_run` in one pass. A layer's
    q, k and v deltas are one matrix product (``[readers, writers] @ [writers, B T d]``, computed at the q input and
    kept in the state for k and v); the MLP's is a second, after the layer's heads have written."""
    hooks = ("attn.hook_q_input", "attn.hook_k_input", "attn.hook_v_input", "hook_mlp_in", "attn.hook_result",
             "hook_mlp_out")

    def __init__(self, config, w_clean, w_corrupt, removed):
        self.h, self.g, self.w_corrupt, self.removed = config.n_heads, config.n_kv_heads, w_corrupt, removed
        self.diff0 = jnp.zeros_like(w_corrupt).at[0].set(w_corrupt[0] - w_clean[0])
        self.index = _reader_index(config)

    def init(self):
        return {"diffs": self.diff0, "kv": jnp.zeros((2 * self.g, *self.diff0.shape[1:]), self.diff0.dtype)}

    def xs(self):
        i = self.index  # per layer: the removed-edge weights of its q, k, v readers [L, q+k+v, W] and its MLP's [L, W]
        qkv = np.concatenate([i["q"], i["k"], i["v"]], axis=1)
        return {"qkv": jnp.moveaxis(self.removed[:, qkv], 0, -1), "mlp": self.removed[:, i["mlp"]].T}

    @staticmethod
    def _deltas(weights, diffs):
        return (weights @ diffs.reshape(diffs.shape[0], -1)).reshape(weights.shape[0], *diffs.shape[1:])

    def at(self, state, xs, index, name, value):
        diffs = state["diffs"]
        if name == "attn.hook_q_input":
            d = self._deltas(xs["qkv"], diffs)                                  # [H + 2 G, B, T, d]
            return value + jnp.moveaxis(d[:self.h], 0, 2).astype(value.dtype), {**state, "kv": d[self.h:]}
        if name in ("attn.hook_k_input", "attn.hook_v_input"):
            d = state["kv"][:self.g] if name == "attn.hook_k_input" else state["kv"][self.g:]
            return value + jnp.moveaxis(d, 0, 2).astype(value.dtype), state
        if name == "hook_mlp_in":
            return value + self._deltas(xs["mlp"][None], diffs)[0].astype(value.dtype), state
        first = 1 + index * (self.h + 1)  # this layer's rows: its heads, then its MLP
        if name == "attn.hook_result":
            rows, start = jnp.moveaxis(value, 2, 0), first                          # [H, B, T, d]
        else:
            rows, start = value[None], first + self.h
        corrupt = jax.lax.dynamic_slice_in_dim(self.w_corrupt, start, rows.shape[0], axis=0)
        diffs = jax.lax.dynamic_update_slice_in_dim(diffs, corrupt - rows.astype(jnp.float32), start, axis=0)
        return value, {**state, "diffs": diffs}

    def final(self, state, x):
        return x + self._deltas(self.removed[:, -1][None], state["diffs"])[0].astype(x.dtype)


@functools.partial(jax.jit, static_argnames="config")
def _circuit_run(config, params, gate, tokens, pad, frozen, w_clean, w_corrupt, removed):
    """Logits of the run on ``tokens`` in which every edge where ``removed`` (``[writers, readers]`` float) is 1
    carries its writer's corrupted output (:class:`_CircuitPass`): one forward, compiled once per config and shapes."""
    inter = {} if frozen is None else {"attn.hook_gate": PerLayer(frozen, add=False)}
    logits, _ = forward(config, params, tokens, gate, mode="eval", interventions=inter,
                        carried=_CircuitPass(config, w_clean, w_corrupt, removed), **(pad or {}))
    return logits


class EdgeCircuitEvaluator(_EdgeRuns):
    """Evaluates circuits of edges on one clean/corrupted batch: ``EdgeCircuitEvaluator(config, params, gate, clean,
    corrupt, metric, gates).explained(keep)``. Every evaluation is one forward of one compiled program
    (:func:`_circuit_run`, shared by every evaluator of the same config and shapes): the removed edges are its
    data, the metric is applied to its logits."""

    def __init__(self, config, params, gate, clean, corrupt, metric, gates: str = "recompute", attention_mask=None):
        super().__init__(config, params, gate, clean, corrupt, metric, gates, attention_mask)
        nothing = np.zeros(allowed(config).shape, bool)  # no edge removed: the plain clean / corrupted runs
        self.m_clean, self.m_corrupt = self._metric(self.clean, nothing), self._metric(self.corrupt, nothing)
        if abs(self.m_clean - self.m_corrupt) < 1e-12:
            raise ValueError("clean and corrupted inputs give the same metric: nothing to explain")

    def _metric(self, tokens, removed) -> float:
        logits = _circuit_run(self.config, self.params, self.gate, tokens, self.pad, self.frozen, self.w_clean,
                              self.w_corrupt, np.asarray(removed, np.float32))
        return float(jnp.mean(self.metric(logits)))

    def explained(self, keep) -> float:
        """Explained effect of the edges ``keep`` (every other edge's reader gets its writer's corrupted output):
        see :func:`edge_explained_effect`."""
        removed = allowed(self.config) & ~_edge_matrix(self.config, keep)
        return (self._metric(self.clean, removed) - self.m_corrupt) / (self.m_clean - self.m_corrupt)

    def explained_fixed_point(self, keep) -> float:
        """:meth:`explained` by fixed-point passes of :func:`_edge_run` (each forward gives every reader the
        corrupted-minus-current outputs of its removed writers as measured in the previous pass; at most ``2 L + 1``
        passes): the slow, independent computation the one-pass evaluation is tested against."""
        removed = allowed(self.config) & ~_edge_matrix(self.config, keep)
        current = self.w_clean
        for _ in range(2 * self.config.n_layers + 1):
            m_circuit, new = self.run(current, self.clean, removed)
            if np.array_equal(new, current):
                break
            current = new
        return (m_circuit - self.m_corrupt) / (self.m_clean - self.m_corrupt)


def edge_explained_effect(config, params, gate, clean, corrupt, metric, keep, *, gates: str = "recompute",
                          attention_mask=None) -> float:
    """Explained effect of a circuit of edges: every reader's input is the sum of its kept writers' outputs in the
    circuit run and of its other writers' outputs on the corrupted input; ``(m_circuit - m_corrupt) / (m_clean -
    m_corrupt)``. ``keep``: edges as tuples or a ``[writers, readers]`` bool array.

    Computed exactly in one forward: the corrupted-minus-circuit outputs of the writers travel through the layer scan
    (:class:`_CircuitPass`), so every reader sees its removed writers' differences from the same run (equal to the
    fixed point of :meth:`EdgeCircuitEvaluator.explained_fixed_point`, tested)."""
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
    return _smallest(lambda k: runner.explained(top_edges(config, scores, k)), int(allowed(config).sum()), target)


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
