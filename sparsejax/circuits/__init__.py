"""Circuit discovery on the writable hooks: attribution patching (EAP, EAP-IG), exact activation patching, and
circuit evaluation by explained effect, for nodes and for edges. Pure functions of (config, params, gate, token
batches). The rooms: ``core.py`` (the metric, the node list, the one compiled forward, padding, gate modes),
``node_level.py`` (node scores, patching, head circuits), ``edge_level.py`` (the edge graph, edge scores, edge patching, edge
circuits in one forward), ``attribution.py`` (the direct attention attribution of a logit).

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

Compiled once: every forward goes through one module-level ``jit`` (:func:`_run`, the config static) and takes what
it patches as data — a ``[nodes]`` bool mask over the node activations (``where(mask, corrupt, current)``), reader
deltas weighted by a ``[writers, readers]`` matrix, frozen gates — so a model config and batch shape compile a fixed
handful of programs however many nodes, edges or circuit sizes are evaluated. Forward-only functions apply the
metric to the returned logits outside the compiled code (any Python metric, no recompilation); the gradient-based
scores (:func:`eap_scores`, :func:`edge_score_matrix`) take it as a static argument, so they compile once per metric
object (a task's ``metric``, reused across calls).
"""
# the private names: for the tests, benchmarks/circuits.py and report.draw_circuit
from .attribution import _frozen_unembed, attention_attribution, heads_for_share
from .core import _frozen_gates, activations, correlation, logit_diff, nodes, padding, rank_agreement
from .edge_level import (EDGE_METHODS, READER_HOOKS, EdgeCircuitEvaluator, _edge_matrix, _edge_scores_jit, allowed,
                    circuit_heads, edge_effect_curve, edge_explained_effect, edge_patching_effects, edge_score_matrix,
                    edge_scores, edges, readers, smallest_edge_circuit, top_edges, writers)
from .node_level import (eap_scores, effect_curve, explained_effect, explained_effects, patching_effects,
                    smallest_head_circuit)

__all__ = ["EDGE_METHODS", "READER_HOOKS", "EdgeCircuitEvaluator", "activations", "allowed", "attention_attribution",
           "circuit_heads", "correlation", "eap_scores", "edge_effect_curve", "edge_explained_effect",
           "edge_patching_effects", "edge_score_matrix", "edge_scores", "edges", "effect_curve", "explained_effect",
           "explained_effects", "heads_for_share", "logit_diff", "nodes", "padding", "patching_effects",
           "rank_agreement", "readers", "smallest_edge_circuit", "smallest_head_circuit", "top_edges", "writers"]
