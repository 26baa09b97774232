"""LoRA adapters on chosen kernels of the stacked parameter tree: ``W + (alpha / rank) * A @ B``.

Modules are named by their path in the parameter tree, e.g. ``attn.q``, ``attn.o``, ``mlp.up``; ``A`` starts random
(std ``1 / sqrt(in)``) and ``B`` at zero, so the adapted model starts equal to the base model.

Training uses :func:`attach`: the forward adds the low-rank branch ``(x A) B`` beside ``x W``, so the backward never
forms the gradient of the frozen ``W`` (a full ``in x out`` matrix per layer, as costly as full fine-tuning's weight
gradient). :func:`merge` folds the adapters into the kernels, for export and for a plain parameter tree.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def _kernel(params: dict, module: str):
    node = params["layers"]
    for part in module.split("."):
        if part not in node:
            raise ValueError(f"LoRA module {module!r} is not in the model (layers.{module}.kernel); e.g. attn.q, "
                             f"attn.k, attn.v, attn.o, mlp.up")
        node = node[part]
    return node["kernel"]


def init_lora(params: dict, modules, rank: int, key) -> dict:
    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    lora = {}
    for module, k in zip(modules, jax.random.split(key, len(modules))):
        w = _kernel(params, module)
        n_layers, n_in, n_out = w.shape
        lora[module] = {"a": jax.random.normal(k, (n_layers, n_in, rank), jnp.float32) / jnp.sqrt(n_in),
                        "b": jnp.zeros((n_layers, rank, n_out), jnp.float32)}
    return lora


def _node(tree: dict, module: str) -> dict:
    """The kernel node of ``module`` in ``tree``, copied (with the dicts above it) so it can be changed in place."""
    node = tree["layers"]
    for part in module.split("."):
        node[part] = dict(node[part])
        node = node[part]
    return node


def attach(params: dict, lora: dict, alpha: float) -> dict:
    """The base parameters with each adapted kernel's adapters beside it: ``lora_a = A``, ``lora_b = (alpha / rank)
    B``; the decoder's linear layers then compute ``x W + (x A) B`` (the same function as :func:`merge`'s, to float
    rounding), and gradients reach only the adapters."""
    tree = jax.tree.map(lambda x: x, params)
    for module, ab in lora.items():
        node = _node(tree, module)
        node["lora_a"], node["lora_b"] = ab["a"], (alpha / ab["a"].shape[-1]) * ab["b"]
    return tree


def merge(params: dict, lora: dict, alpha: float) -> dict:
    """The base parameters with every adapted kernel replaced by ``W + (alpha / rank) A @ B``."""
    merged = jax.tree.map(lambda x: x, params)  # a new tree (leaves shared)
    for module, ab in lora.items():
        node = _node(merged, module)
        scale = alpha / ab["a"].shape[-1]
        node["kernel"] = node["kernel"] + scale * jnp.einsum("lir,lro->lio", ab["a"], ab["b"])
    return merged
