"""The post-training objective's pieces: next-token cross-entropy, the density regulariser, distillation."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def token_nll(logits, targets):
    """Each token's next-token negative log-likelihood (nats), ``[B, T]``."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]


def cross_entropy(logits, targets, mask=None):
    """Mean next-token cross-entropy (nats) of ``logits [B, T, V]`` against integer ``targets [B, T]``."""
    nll = token_nll(logits, targets)
    if mask is None:
        return nll.mean()
    mask = mask.astype(jnp.float32)
    return (nll * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def sequence_cross_entropy(logits, targets, mask=None):
    """Each sequence's mean next-token cross-entropy over its (masked) tokens, ``[B]`` (0 for a row with none)."""
    nll = token_nll(logits, targets)
    if mask is None:
        return nll.mean(-1)
    mask = mask.astype(jnp.float32)
    return (nll * mask).sum(-1) / jnp.maximum(mask.sum(-1), 1.0)


def density_penalty(aux) -> jax.Array:
    """The model's sparsity term: expected edge density averaged over layers, batch and heads."""
    return aux["density"].mean()


def distillation_kl(student_logits, teacher_logits):
    """Mean ``KL(teacher || student)`` per token, the teacher being the frozen dense model."""
    t = jax.nn.log_softmax(jax.lax.stop_gradient(teacher_logits).astype(jnp.float32), -1)
    s = jax.nn.log_softmax(student_logits.astype(jnp.float32), -1)
    return jnp.sum(jnp.exp(t) * (t - s), -1).mean()
