"""LoRA adapters: the training form (a low-rank branch beside the frozen kernel, ``lora.attach``) is the same function
as the adapters merged into the kernels (``lora.merge``, the exported model), with the same gradients, and its
backward forms no gradient of a frozen kernel (the reason it exists: that matrix is as costly as full fine-tuning's)."""
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

import sparsejax as sj
from sparsejax import lora

MODULES = ("attn.q", "attn.k", "attn.v", "attn.o", "mlp.gate", "mlp.up", "mlp.down")
D, F = 32, 48  # d_model and d_ff: a (D, F) or (F, D) matrix in the backward can only be an MLP kernel's gradient


def _model(family="llama"):
    cfg = sj.ModelConfig(family=family, vocab_size=64, d_model=D, n_layers=2, n_heads=4, n_kv_heads=2 if family ==
                         "llama" else 4, head_dim=8, d_ff=F, max_position=32)
    params = sj.init_params(cfg, jax.random.PRNGKey(0), std=0.2)
    modules = MODULES if family == "llama" else ("attn.q", "attn.k", "attn.v", "attn.o", "mlp.fc", "mlp.proj")
    adapters = lora.init_lora(params, modules, 4, jax.random.PRNGKey(1))
    # B starts at zero (the adapted model = the base); give it values so the branch matters
    keys = iter(jax.random.split(jax.random.PRNGKey(2), len(adapters)))
    adapters = {m: {"a": ab["a"], "b": 0.3 * jax.random.normal(next(keys), ab["b"].shape)} for m, ab in adapters.items()}
    tokens = jax.random.randint(jax.random.PRNGKey(3), (2, 16), 0, 64)
    return cfg, params, adapters, tokens


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_attached_adapters_compute_the_merged_model(family):
    cfg, params, adapters, tokens = _model(family)
    merged, attached = lora.merge(params, adapters, 16.0), lora.attach(params, adapters, 16.0)
    base = sj.forward(cfg, params, tokens, gate=1.0)[0]
    want, aux_w = sj.forward(cfg, merged, tokens, gate=1.0, capture=["blocks.*.attn.hook_result", "hook_q_input"])
    got, aux_g = sj.forward(cfg, attached, tokens, gate=1.0, capture=["blocks.*.attn.hook_result", "hook_q_input"])
    assert float(jnp.abs(want - base).max()) > 0.1  # the adapters change the model
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
    for name, value in aux_w["captures"].items():  # the per-head paths (split q/k/v inputs, each head's output)
        np.testing.assert_allclose(aux_g["captures"][name], value, atol=1e-4, rtol=1e-4)
    # sampled gates, and the gradient the trainer takes (with respect to the adapters only)
    loss = lambda p_of: lambda ab: sj.forward(cfg, p_of(params, ab, 16.0), tokens, gate=1.0, mode="train", seed=7)[0].std()
    np.testing.assert_allclose(loss(lora.attach)(adapters), loss(lora.merge)(adapters), rtol=1e-5)
    g_att, g_mer = jax.grad(loss(lora.attach))(adapters), jax.grad(loss(lora.merge))(adapters)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(g_att), jax.tree.leaves(g_mer)):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4, err_msg=jax.tree_util.keystr(path))


def _dot_shapes(jaxpr) -> list[tuple]:
    """Output shapes of every dot_general in a jaxpr, sub-jaxprs (scan, remat, custom_vjp, pjit) included."""
    shapes = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            shapes.append(tuple(eqn.outvars[0].aval.shape))
        for value in eqn.params.values():
            for sub in value if isinstance(value, (list, tuple)) else [value]:
                inner = getattr(sub, "jaxpr", sub)
                if isinstance(inner, jax.extend.core.Jaxpr):
                    shapes += _dot_shapes(inner)
    return shapes


def test_the_training_form_forms_no_gradient_of_a_frozen_kernel():
    cfg, params, adapters, tokens = _model()
    grad = lambda p_of: jax.make_jaxpr(jax.grad(lambda ab: sj.forward(cfg, p_of(params, ab, 16.0), tokens, gate=1.0,
                                                                      mode="train", seed=0)[0].mean()))(adapters)
    kernel_shaped = lambda shapes: [s for s in shapes if s[-2:] in ((D, F), (F, D))]
    assert kernel_shaped(_dot_shapes(grad(lora.merge).jaxpr))  # the check sees the merged form's weight gradients
    assert not kernel_shaped(_dot_shapes(grad(lora.attach).jaxpr))
