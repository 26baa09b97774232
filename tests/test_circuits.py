"""Node-level circuit discovery: EAP against exact activation patching on tiny models (dense and gated), and the
explained-effect bounds (1 with every node kept, 0 with none)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sparsejax as sj
from sparsejax import circuits


def _setup(gated):
    config = sj.ModelConfig(family="llama", vocab_size=24, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                            d_ff=64, max_position=16)
    params = sj.init_params(config, jax.random.PRNGKey(1))
    rng = np.random.default_rng(0)
    clean = rng.integers(0, 24, size=(8, 10))
    corrupt = clean.copy()
    corrupt[:, 3] = (clean[:, 3] + 1 + rng.integers(0, 22, size=8)) % 24  # one token changed per example
    good, bad = rng.integers(0, 24, size=8), rng.integers(0, 24, size=8)
    gate = sj.make_gate(np.linspace(-1, 2, 8).reshape(2, 4), shape=(2, 4)) if gated else None
    return config, params, gate, jnp.asarray(clean), jnp.asarray(corrupt), circuits.logit_diff(good, bad)


def test_eap_agrees_with_exact_patching(gates="frozen"):  # gated with frozen gates: the path with most parts
    config, params, gate, clean, corrupt, metric = _setup(True)
    eap = circuits.eap_scores(config, params, gate, clean, corrupt, metric, gates=gates)
    exact = circuits.patching_effects(config, params, gate, clean, corrupt, metric, gates=gates)
    assert set(eap) == set(exact) == set(circuits.nodes(config))
    assert circuits.correlation(eap, exact) > 0.9, (eap, exact)
    assert circuits.rank_agreement(eap, exact, 3) >= 2 / 3


def test_explained_effect_bounds():
    config, params, gate, clean, corrupt, metric = _setup(True)
    everything = circuits.nodes(config)
    assert circuits.explained_effect(config, params, gate, clean, corrupt, metric, everything) == pytest.approx(
        1.0, abs=1e-4)
    assert circuits.explained_effect(config, params, gate, clean, corrupt, metric, []) == pytest.approx(0.0, abs=1e-4)
    scores = {n: float(i) for i, n in enumerate(everything)}  # any ranking: keeping every node explains all
    curve = circuits.effect_curve(config, params, gate, clean, corrupt, metric, scores, [len(everything) - 1])
    assert curve[-1] == pytest.approx(1.0, abs=1e-4)


def test_smallest_head_circuit_and_patching_a_subset():
    config, params, gate, clean, corrupt, metric = _setup(True)
    exact = circuits.patching_effects(config, params, gate, clean, corrupt, metric)
    heads = [n for n in circuits.nodes(config) if n[0] == "head"]
    subset = heads[::3]
    assert circuits.patching_effects(config, params, gate, clean, corrupt, metric, only=subset) == \
        {n: exact[n] for n in subset}
    ranked = sorted(heads, key=lambda n: exact[n])
    others = [n for n in circuits.nodes(config) if n[0] != "head"]
    curve = circuits.explained_effects(config, params, gate, clean, corrupt, metric,
                                       [others + ranked[:k] for k in range(len(heads) + 1)])
    for target in (0.5, 0.9):
        k, seen = circuits.smallest_head_circuit(config, params, gate, clean, corrupt, metric, ranked, target)
        assert curve[k] >= target and curve[k - 1] < target          # a crossing of the full curve
        for j, v in seen.items():
            assert v == pytest.approx(curve[j], abs=1e-6)


def test_gemma3_node_circuits_hooks_and_windows():
    """Gemma 3 (one KV head, sliding-window layer): the node-level methods run, exact patching explains the whole
    effect with every node and none with none, and EAP's first-order scores correlate with it (weakly: a one-token
    corruption moves this random model's embedding x sqrt(d) far out of EAP's linear range; its gradients equal
    finite differences); the captured pattern has no mass and no edge outside the window; edge-level methods refuse
    its post-sublayer norms clearly."""
    config = sj.ModelConfig(family="gemma3", vocab_size=24, d_model=32, n_layers=2, n_heads=4, n_kv_heads=1,
                            head_dim=16, d_ff=64, max_position=16, sliding_window=3,
                            layer_types=("sliding_attention", "full_attention"))
    params = sj.init_params(config, jax.random.PRNGKey(1))
    _, _, _, clean, corrupt, metric = _setup(False)
    gate = sj.make_gate(np.linspace(-1, 2, 8).reshape(2, 4), shape=(2, 4))
    eap = circuits.eap_scores(config, params, gate, clean, corrupt, metric, gates="frozen")
    exact = circuits.patching_effects(config, params, gate, clean, corrupt, metric, gates="frozen")
    assert set(eap) == set(exact) == set(circuits.nodes(config))
    assert circuits.correlation(eap, exact) > 0.1, (eap, exact)
    everything = circuits.nodes(config)
    for keep, want in ((everything, 1.0), ([], 0.0)):
        assert circuits.explained_effect(config, params, gate, clean, corrupt, metric, keep) == pytest.approx(
            want, abs=1e-4)
    caps = sj.forward(config, params, clean, gate, capture=["blocks.*.attn.hook_pattern",
                                                            "blocks.*.attn.hook_adjacency"])[1]["captures"]
    far = np.subtract.outer(np.arange(10), np.arange(10)) >= 3
    assert np.all(np.asarray(caps["blocks.0.attn.hook_pattern"])[..., far] == 0)
    assert not np.asarray(caps["blocks.0.attn.hook_adjacency"])[..., far].any()
    assert np.asarray(caps["blocks.1.attn.hook_adjacency"])[..., far].any()  # the global layer sees them
    with pytest.raises(ValueError, match="pre-norm"):
        circuits.edge_scores(config, params, gate, clean, corrupt, metric)
