"""The method as a PyTorch user would write it, materialised T x T: the speed benchmarks' reference (one definition
for benchmarks/attention.py, kernels.py and smollm2_step.py; the method itself: docs/method.md)."""
from __future__ import annotations

import torch


def gated_weights(s, bias):
    """Scaled attention logits ``s`` [..., T, T] and the gate bias (broadcast against ``s``) -> the dense causal
    softmax times a sampled straight-through logistic gate on ``g = s + bias``, causal-masked [..., T, T], and the
    expected edge density (the mean of ``sigmoid(g)`` over causal pairs) [...] that the density penalty reads."""
    t = s.shape[-1]
    causal = torch.ones(t, t, dtype=torch.bool, device=s.device).tril()
    p = torch.softmax(s.masked_fill(~causal, float("-inf")), dim=-1)
    g = s + bias
    u = torch.rand_like(g).clamp(1e-6, 1 - 1e-6)
    z = g + torch.log(u) - torch.log1p(-u)
    soft = torch.sigmoid(z)
    a = (z > 0).float() + soft - soft.detach()
    return p * a * causal, (torch.sigmoid(g) * causal).sum((-1, -2)) / causal.sum()
