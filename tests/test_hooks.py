"""Writable hooks: capture and intervene by name inside jit and lax.scan; checked against independent facts
(the corrupted run itself, a model with a zeroed projection, the un-split computation)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sparsejax as sj
from sparsejax.models import ModelConfig

CFG = ModelConfig("llama", vocab_size=41, d_model=32, n_layers=3, n_heads=4, n_kv_heads=2, d_ff=48, max_position=16)
PARAMS = sj.init_params(CFG, jax.random.PRNGKey(0), std=0.3)
CLEAN = np.random.default_rng(0).integers(0, 41, size=(3, 12))
CORRUPT = np.random.default_rng(1).integers(0, 41, size=(3, 12))
GATE = sj.make_gate(0.5, shape=(CFG.n_layers, CFG.n_heads))
EVERY = ["hook_embed", "hook_resid_pre", "attn.hook_q_input", "attn.hook_k", "attn.hook_rot_q", "attn.hook_z",
         "attn.hook_pattern", "attn.hook_gate", "hook_attn_out", "hook_mlp_in", "hook_mlp_out", "hook_resid_post",
         "ln_final.hook_normalized"]


def run(tokens, gate=GATE, **kw):
    return jax.jit(lambda t: sj.forward(CFG, PARAMS, t, gate, **kw))(tokens)


def run_patched(tokens, arrays: dict, **kw):
    """Array interventions passed as arguments of the jitted function (as a user's patching loop would)."""
    return jax.jit(lambda t, a: sj.forward(CFG, PARAMS, t, GATE, interventions=a, **kw))(tokens, arrays)


@pytest.mark.parametrize("name", ["hook_embed", "blocks.0.hook_resid_pre", "blocks.1.attn.hook_z",
                                  "blocks.2.hook_mlp_out", "blocks.1.attn.hook_q_input", "blocks.0.attn.hook_v",
                                  "blocks.2.attn.hook_gate", "blocks.1.hook_mlp_in", "ln_final.hook_normalized"])
def test_patching_with_own_clean_value_changes_nothing_bitwise(name):
    # the same hooks are active in both runs, so the only difference is the replacement itself
    logits, aux = run(CLEAN, capture=name, interventions={name: lambda x: x})
    patched, _ = run_patched(CLEAN, {name: aux["captures"][name]}, capture=name)
    if name.endswith("_input"):
        # the per-head copies are identical, but XLA may fuse the per-head norm + projection differently when the
        # copies come from an argument rather than a broadcast (1-ulp differences)
        np.testing.assert_allclose(np.asarray(patched), np.asarray(logits), atol=1e-5, rtol=0)
    else:
        np.testing.assert_array_equal(np.asarray(patched), np.asarray(logits))


@pytest.mark.parametrize("name", ["hook_embed", "blocks.0.hook_resid_pre", "ln_final.hook_normalized"])
def test_patching_in_the_corrupted_value_gives_the_corrupted_run(name):
    corrupt_logits, aux = run(CORRUPT, capture=name)
    patched, _ = run_patched(CLEAN, {name: aux["captures"][name]})
    np.testing.assert_array_equal(np.asarray(patched), np.asarray(corrupt_logits))


def test_patching_every_head_input_reproduces_the_corrupted_layer():
    # q, k and v inputs of every head of every layer from the corrupted run, the rest of the residual stream clean:
    # each layer's attention output is the corrupted one, so (MLPs reading the mixed stream aside) layer 0's is exact
    names = [f"blocks.0.attn.hook_{x}_input" for x in "qkv"]
    _, aux = run(CORRUPT, capture=names + ["blocks.0.hook_attn_out"])
    _, patched = run(CLEAN, capture="blocks.0.hook_attn_out", interventions={n: aux["captures"][n] for n in names})
    np.testing.assert_allclose(np.asarray(patched["captures"]["blocks.0.hook_attn_out"]),
                               np.asarray(aux["captures"]["blocks.0.hook_attn_out"]), atol=1e-5)


def test_split_inputs_equal_the_fused_projection():
    plain, _ = run(CLEAN)
    split, aux = run(CLEAN, capture=["attn.hook_q_input", "attn.hook_k_input"])
    np.testing.assert_allclose(np.asarray(split), np.asarray(plain), atol=2e-5)
    assert aux["captures"]["blocks.1.attn.hook_q_input"].shape == (3, 12, 4, 32)
    assert aux["captures"]["blocks.1.attn.hook_k_input"].shape == (3, 12, 2, 32)


def test_zero_ablating_attention_equals_a_model_without_attention_output():
    zeroed = jax.tree.map(lambda x: x, PARAMS)
    zeroed["layers"]["attn"]["o"] = {"kernel": jnp.zeros_like(PARAMS["layers"]["attn"]["o"]["kernel"])}
    ref, _ = jax.jit(lambda t: sj.forward(CFG, zeroed, t, GATE))(CLEAN)
    ablated, _ = run(CLEAN, interventions={"hook_attn_out": "zero"})
    np.testing.assert_allclose(np.asarray(ablated), np.asarray(ref), atol=1e-6)


def test_mean_ablation_and_functions():
    _, aux = run(CLEAN, capture="blocks.1.hook_mlp_out", interventions={"blocks.1.hook_mlp_out": "mean"})
    got = np.asarray(aux["captures"]["blocks.1.hook_mlp_out"])
    np.testing.assert_allclose(got, np.broadcast_to(got.mean(0, keepdims=True), got.shape), atol=1e-6)
    _, clean = run(CLEAN, capture="blocks.1.attn.hook_z")
    _, corrupt = run(CORRUPT, capture="blocks.1.attn.hook_z")
    head = lambda z: z.at[:, :, 2].set(corrupt["captures"]["blocks.1.attn.hook_z"][:, :, 2])
    _, one = run(CLEAN, capture="blocks.1.attn.hook_z", interventions={"blocks.1.attn.hook_z": head})
    z, zc, zr = (np.asarray(a["captures"]["blocks.1.attn.hook_z"]) for a in (one, clean, corrupt))
    np.testing.assert_array_equal(z[:, :, 2], zr[:, :, 2])
    np.testing.assert_array_equal(np.delete(z, 2, axis=2), np.delete(zc, 2, axis=2))


def test_frozen_gates_versus_recomputed_gates():
    _, clean = run(CLEAN, capture="attn.hook_gate")
    frozen = {f"blocks.{l}.attn.hook_gate": clean["captures"][f"blocks.{l}.attn.hook_gate"] for l in range(3)}
    _, aux = run(CORRUPT, capture=["attn.hook_gate", "attn.hook_adjacency"], interventions=frozen)
    for l in range(3):  # the corrupted run now uses the clean run's edges
        np.testing.assert_array_equal(np.asarray(aux["captures"][f"blocks.{l}.attn.hook_adjacency"]),
                                      np.asarray(frozen[f"blocks.{l}.attn.hook_gate"]) > 0)
    # materialised pattern path (identity intervention) == the attention kernel's output
    plain, _ = run(CORRUPT)
    same, _ = run(CORRUPT, interventions={"attn.hook_gate": lambda a: a})
    np.testing.assert_allclose(np.asarray(same), np.asarray(plain), atol=2e-5)


def test_interventions_in_train_mode_under_remat_and_in_grad():
    cfg = CFG.replace(remat="full")
    f = lambda p: sj.forward(cfg, p, CLEAN, GATE, mode="train", seed=3,
                             interventions={"blocks.1.attn.hook_z": "zero"})[0].sum()
    g = jax.jit(jax.grad(f))(PARAMS)
    # with layer 1's head outputs zeroed, its o-projection gets no gradient
    assert float(jnp.abs(g["layers"]["attn"]["o"]["kernel"][1]).max()) == 0.0
    assert float(jnp.abs(g["layers"]["attn"]["o"]["kernel"][0]).max()) > 0.0


def test_bad_interventions_are_clear_errors():
    with pytest.raises(ValueError, match="need an exact name"):
        run(CLEAN, interventions={"blocks.*.attn.hook_z": np.zeros((3, 12, 4, 8))})
    with pytest.raises(ValueError, match="matches no hook"):
        run(CLEAN, interventions={"blocks.9.hook_resid_pre": "zero"})
    with pytest.raises(ValueError, match="captured but not intervened"):
        run(CLEAN, interventions={"blocks.0.attn.hook_adjacency": "zero"})
    with pytest.raises(ValueError, match="unknown intervention"):
        run(CLEAN, interventions={"hook_embed": "ones"})


def test_pattern_capture_uses_the_public_attention():
    _, aux = run(CLEAN, capture=["blocks.0.attn.hook_pattern", "blocks.0.attn.hook_rot_q", "blocks.0.attn.hook_rot_k"])
    q, k = aux["captures"]["blocks.0.attn.hook_rot_q"], aux["captures"]["blocks.0.attn.hook_rot_k"]
    p, a = sj.attention_pattern(q, k, sj.Gate(GATE.bias[0]))
    np.testing.assert_allclose(np.asarray(aux["captures"]["blocks.0.attn.hook_pattern"]), np.asarray(p * a), atol=1e-6)
