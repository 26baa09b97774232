"""Run a sparsejax-trained sparse model in PyTorch ``transformers`` with its exact eval semantics.

A checkpoint written by :func:`sparsejax.save_pretrained` is a Hugging Face directory (``config.json``,
``model.safetensors``) plus ``sparsejax_gate.json``. Plain ``transformers`` loads it as the *dense* model. This
module registers an attention function ``"sparsejax"`` through transformers' attention interface that applies the
method in eval mode (docs/method.md §1): the softmax over every causal key, then the deterministic gate
``A_ij = 1[s_ij + b_{l,h} > 0]`` (Bernoulli gates; hard-concrete: its deterministic gate value), no
renormalisation, with ``s_ij = q_i . k_j * scaling`` (transformers' scaling: ``1 / sqrt(head_dim)``, Gemma's
``1 / sqrt(query_pre_attn_scalar)``, the logit the gate is tied to in sparsejax too). Sliding-window layers get
transformers' sliding-window mask (the pairs their dense model attends), so gates exist only inside the window. TransformerLens / EAP-IG / ACDC users can then work on
the sparse model in torch::

    from sparsejax.checkpoints.transformers_attention import load_sparse_model
    model = load_sparse_model("runs/sparse/model")       # a transformers PreTrainedModel, eval semantics
    logits = model(input_ids).logits                       # equal to sparsejax.forward(..., mode="eval")

The returned attention weights are the effective pattern ``P * A`` (what ``output_attentions=True`` shows).
Padding masks from ``attention_mask`` are honoured (masked keys get neither softmax mass nor an edge). Needs
``torch`` and ``transformers`` (the reference extra); nothing here is imported by the rest of the library.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

NAME = "sparsejax"


def _gate_tensor(module, torch):
    """The layer's gate as ``(kind, bias [H] tensor, temperature, stretch)`` from ``module.config.sparsejax_gate``,
    or None."""
    spec = getattr(module.config, "sparsejax_gate", None)
    if spec is None:
        return None
    bias = torch.tensor(spec["bias"][module.layer_idx], dtype=torch.float32)
    return spec["kind"], bias, spec["temperature"], tuple(spec["stretch"])


def sparse_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """The attention-interface function: ``query [B, H, T, D]``, ``key``/``value`` ``[B, K, S, D]`` ->
    ``(output [B, T, H, D], effective attention [B, H, T, S])``. Float32 inside, output in the query's dtype."""
    import torch

    b, h, t, d = query.shape
    groups = h // key.shape[1]
    k = key.float().repeat_interleave(groups, dim=1)
    v = value.float().repeat_interleave(groups, dim=1)
    s = torch.matmul(query.float(), k.transpose(2, 3)) * (d ** -0.5 if scaling is None else scaling)
    n_keys = s.shape[-1]
    allowed = torch.ones(t, n_keys, dtype=torch.bool, device=s.device).tril(n_keys - t)  # queries are the last t
    allowed = allowed.expand(b, h, t, n_keys)
    if attention_mask is not None:  # transformers' additive (0 / large negative) or boolean (True = attend) mask
        m = attention_mask if attention_mask.dtype == torch.bool else attention_mask > torch.finfo(
            attention_mask.dtype).min / 2
        allowed = allowed & m[..., -n_keys:].expand(b, h, t, n_keys)
    p = torch.softmax(s.masked_fill(~allowed, float("-inf")), dim=-1).nan_to_num(0.0)  # fully masked rows: 0
    gate = _gate_tensor(module, torch)
    if gate is None:
        a = allowed.float()
    else:
        from ..gates import family

        kind, bias, temperature, stretch = gate
        g = s + bias.to(s.device)[None, :, None, None]
        a = family(kind).torch_eval(torch, g, temperature, stretch) * allowed
    weights = p * a
    out = torch.matmul(weights, v).transpose(1, 2).contiguous().to(query.dtype)
    return out, weights


def register() -> None:
    """Register ``attn_implementation="sparsejax"`` (attention and its mask) with transformers (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(NAME, sparse_attention_forward)
    AttentionMaskInterface.register(NAME, eager_mask)


def load_sparse_model(path, **kwargs):
    """A sparsejax checkpoint directory as a ``transformers`` causal LM running the sparse attention in eval mode
    (dense checkpoints run with a plain causal softmax). ``kwargs`` go to ``from_pretrained``."""
    import transformers

    from ..models.config import config_from_hf
    from ..models.decoder import model_gate
    from .hf import _read_gate

    path = Path(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path} has no config.json: give a directory written by sparsejax.save_pretrained")
    register()
    model = transformers.AutoModelForCausalLM.from_pretrained(path, attn_implementation=NAME, **kwargs)
    gate = _read_gate(path)
    if gate is not None:
        gate = model_gate(gate, config_from_hf(json.loads((path / "config.json").read_text())))
        model.config.sparsejax_gate = {"bias": np.asarray(gate.bias).tolist(), "kind": gate.kind,
                                       "temperature": gate.temperature, "stretch": list(gate.stretch)}
    return model.eval()
