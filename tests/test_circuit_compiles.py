"""Circuit functions compile once per model config and batch shape (what they patch is data), and the masked
node patching equals the per-node interventions it replaced."""
import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sparsejax as sj
from sparsejax import circuits
from test_circuits import _setup  # the tiny gated GQA model and one-token corruption

BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"


@contextlib.contextmanager
def compiles():
    """The names of the programs XLA compiles inside the block."""
    names = []

    def listener(event, duration, **kw):
        if event == BACKEND_COMPILE:
            names.append(kw.get("fun_name"))

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield names
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def test_compiles_do_not_grow_with_nodes_or_circuit_sizes():
    """Node patching of every node, a node-circuit curve and an edge-circuit curve compile a fixed set of programs:
    the same for 2 and for 6 circuit sizes, and none at all when run again on the same config. (Before, every
    patched run compiled its own forward: 13 for patching the 11 nodes, 4 per point of the node curve.)"""
    config, params, gate, clean, corrupt, metric = _setup(True)
    node_scores = {n: float(i) for i, n in enumerate(circuits.nodes(config))}
    edge_scores = np.arange(circuits.allowed(config).size, dtype=float).reshape(circuits.allowed(config).shape)

    def analysis(cfg, n_k):
        kw = dict(gates="frozen")  # the path with most parts
        circuits.patching_effects(cfg, params, gate, clean, corrupt, metric, **kw)
        circuits.effect_curve(cfg, params, gate, clean, corrupt, metric, node_scores, range(1, n_k + 1), **kw)
        circuits.edge_effect_curve(cfg, params, gate, clean, corrupt, metric, edge_scores,
                                   [2 ** i for i in range(n_k)], **kw)

    float(jnp.mean(metric(jnp.zeros((*clean.shape, config.vocab_size)))))  # the metric's eager ops, compiled once
    fresh = [config.replace(norm_eps=config.norm_eps * (i + 2)) for i in range(2)]  # new configs: empty caches
    with compiles() as two:
        analysis(fresh[0], 2)
    with compiles() as six:
        analysis(fresh[1], 6)
    with compiles() as again:
        analysis(fresh[1], 3)
    assert sorted(two) == sorted(six) and len(two) <= 5, (two, six)
    assert again == []


@pytest.mark.parametrize("gates", ["frozen", "recompute"])
def test_masked_patching_equals_per_node_interventions(gates):
    """The reference is the old formulation: a forward whose exact-name interventions set each patched head's
    slice of ``hook_z`` (and the embedding / MLP outputs) to the corrupted run's, gates frozen by exact names."""
    config, params, gate, clean, corrupt, metric = _setup(True)
    frozen = {}
    if gates == "frozen":
        frozen = dict(sj.forward(config, params, clean, gate, capture="blocks.*.attn.hook_gate")[1]["captures"])
    acts = circuits.activations(config, params, gate, corrupt, frozen)

    def old(patch, tokens=clean):
        inter = dict(frozen)
        if ("embed",) in patch:
            inter["hook_embed"] = acts["hook_embed"]
        for l in range(config.n_layers):
            heads = [n[2] for n in patch if n[0] == "head" and n[1] == l]
            if heads:
                idx, other = jnp.asarray(heads), acts[f"blocks.{l}.attn.hook_z"]
                inter[f"blocks.{l}.attn.hook_z"] = lambda z, idx=idx, other=other: z.at[:, :, idx].set(other[:, :, idx])
            if ("mlp", l) in patch:
                inter[f"blocks.{l}.hook_mlp_out"] = acts[f"blocks.{l}.hook_mlp_out"]
        return float(jnp.mean(metric(sj.forward(config, params, tokens, gate, interventions=inter)[0])))

    exact = circuits.patching_effects(config, params, gate, clean, corrupt, metric, gates=gates)
    base = old(set())
    for node in [("embed",), ("head", 0, 1), ("head", 1, 3), ("mlp", 1)]:
        assert exact[node] == pytest.approx(old({node}) - base, rel=1e-4, abs=1e-5), node
    keep = [("embed",), ("head", 0, 0), ("head", 0, 2), ("mlp", 0), ("head", 1, 1)]
    patched = set(circuits.nodes(config)) - set(keep)
    m_corrupt = old(set(), corrupt)
    want = (old(patched) - m_corrupt) / (base - m_corrupt)
    got = circuits.explained_effect(config, params, gate, clean, corrupt, metric, keep, gates=gates)
    assert abs(want) > 1e-3 and got == pytest.approx(want, rel=1e-4, abs=1e-5)
