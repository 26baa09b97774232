"""Flax modules against the functional decoder (itself checked against transformers)."""
import jax
import numpy as np
from flax import nnx

import sparsejax as sj
from sparsejax.flax import DecoderBlock, SparseSelfAttention, SparseSelfAttentionLinen


def _setup(n_kv=2):
    cfg = sj.ModelConfig(family="llama", vocab_size=50, d_model=32, n_layers=1, n_heads=4, n_kv_heads=n_kv,
                         head_dim=8, d_ff=48, max_position=32, norm_eps=1e-6, rope_theta=10000.0)
    params = sj.init_params(cfg, jax.random.PRNGKey(1), std=0.2)
    params["layers"]["attn_norm"]["scale"] = 1 + 0.3 * jax.random.normal(jax.random.PRNGKey(2), (1, 32))
    tokens = np.random.default_rng(0).integers(0, 50, size=(2, 13))
    return cfg, params, tokens


def _load_block(block: DecoderBlock, params):
    L = params["layers"]
    a = L["attn"]
    for name in "qkvo":
        getattr(block.attn, name).kernel[...] = a[name]["kernel"][0]
    for name in ("gate", "up", "down"):
        getattr(block, name).kernel[...] = L["mlp"][name]["kernel"][0]
    block.attn_norm.scale[...] = L["attn_norm"]["scale"][0]
    block.mlp_norm.scale[...] = L["mlp_norm"]["scale"][0]


def test_nnx_decoder_block_equals_functional_layer():
    cfg, params, tokens = _setup()
    block = DecoderBlock(32, 4, 48, num_kv_heads=2, head_dim=8, gate_bias=0.5, rngs=nnx.Rngs(0))
    _load_block(block, params)
    for mode, dense in (("eval", True), ("eval", False), ("train", False)):
        _, aux = sj.forward(cfg, params, tokens, gate=None if dense else 0.5, mode=mode, seed=4,
                            capture=["hook_resid_pre", "hook_resid_post"])
        x = aux["captures"]["blocks.0.hook_resid_pre"]
        # the functional model seeds layer 0 with layer_seed(seed, 0)
        y, stats = block(x, mode=mode, seed=sj.gates.layer_seed(4, 0), dense=dense)
        np.testing.assert_allclose(y, aux["captures"]["blocks.0.hook_resid_post"], atol=1e-5)
        np.testing.assert_allclose(stats.expected_density, aux["density"][0], atol=1e-6)


def test_linen_attention_equals_nnx_attention_and_learns_bias():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 11, 32))
    linen = SparseSelfAttentionLinen(32, 4, num_kv_heads=2, gate_bias=0.2, learnable_bias=True)
    variables = linen.init(jax.random.PRNGKey(1), x)
    att = SparseSelfAttention(32, 4, num_kv_heads=2, gate_bias=0.2, learnable_bias=True, rngs=nnx.Rngs(0))
    for name in "qkvo":
        getattr(att, name).kernel[...] = variables["params"][name]["kernel"]
    y1, s1 = linen.apply(variables, x, mode="train", seed=3)
    y2, s2 = att(x, mode="train", seed=3)
    np.testing.assert_allclose(y1, y2, atol=1e-6)
    np.testing.assert_allclose(s1.expected_density, s2.expected_density, atol=1e-7)
    # the learnable bias gets a gradient from the density regulariser
    g = jax.grad(lambda v: linen.apply(v, x, mode="train", seed=3)[1].expected_density.mean())(variables)
    assert np.all(np.asarray(g["params"]["gate_bias"]) > 0)
    grads = nnx.grad(lambda m: m(x, mode="train", seed=3)[1].expected_density.mean())(att)
    np.testing.assert_allclose(grads.gate_bias[...], g["params"]["gate_bias"], rtol=1e-5)


def test_sliding_window_block_equals_the_functional_qwen2_layer():
    """``window=`` in the Flax modules is the decoder's sliding-window layer (Qwen2 with sliding_window, checked
    against transformers): a Llama block with q/k/v biases (o's bias 0) and a 4-key window, T = 13."""
    cfg = sj.ModelConfig(family="qwen2", vocab_size=50, d_model=32, n_layers=1, n_heads=4, n_kv_heads=2, head_dim=8,
                         d_ff=48, max_position=32, norm_eps=1e-6, sliding_window=4)
    params = sj.init_params(cfg, jax.random.PRNGKey(1), std=0.2)
    for name in "qkv":
        params["layers"]["attn"][name]["bias"] = 0.3 * jax.random.normal(jax.random.PRNGKey(5), (1, 32 if name == "q"
                                                                                                 else 16))
    tokens = np.random.default_rng(0).integers(0, 50, size=(2, 13))
    block = DecoderBlock(32, 4, 48, num_kv_heads=2, head_dim=8, gate_bias=0.5, use_bias=True, window=4,
                         rngs=nnx.Rngs(0))
    _load_block(block, params)
    for name in "qkv":
        getattr(block.attn, name).bias[...] = params["layers"]["attn"][name]["bias"][0]
    block.attn.o.bias[...] = 0.0
    for mode, dense in (("eval", True), ("train", False)):
        _, aux = sj.forward(cfg, params, tokens, gate=None if dense else 0.5, mode=mode, seed=4,
                            capture=["hook_resid_pre", "hook_resid_post"])
        y, stats = block(aux["captures"]["blocks.0.hook_resid_pre"], mode=mode, seed=sj.gates.layer_seed(4, 0),
                         dense=dense)
        np.testing.assert_allclose(y, aux["captures"]["blocks.0.hook_resid_post"], atol=1e-5)
        np.testing.assert_allclose(stats.expected_density, aux["density"][0], atol=1e-6)
    unwindowed = DecoderBlock(32, 4, 48, num_kv_heads=2, head_dim=8, use_bias=True, rngs=nnx.Rngs(0))
    x = aux["captures"]["blocks.0.hook_resid_pre"]
    assert np.abs(np.asarray(unwindowed(x, dense=True)[0][:, 4:] - DecoderBlock(
        32, 4, 48, num_kv_heads=2, head_dim=8, use_bias=True, window=4, rngs=nnx.Rngs(0))(x, dense=True)[0][:, 4:])).max() > 1e-4
    linen = SparseSelfAttentionLinen(32, 4, num_kv_heads=2, window=4)
    variables = linen.init(jax.random.PRNGKey(1), x)
    att = SparseSelfAttention(32, 4, num_kv_heads=2, window=4, rngs=nnx.Rngs(0))
    for name in "qkvo":
        getattr(att, name).kernel[...] = variables["params"][name]["kernel"]
    np.testing.assert_allclose(linen.apply(variables, x, mode="train", seed=3)[0], att(x, mode="train", seed=3)[0],
                               atol=1e-6)
