"""Independent float64 numpy statement of the method (docs/method.md §1-2), written without the library."""
import numpy as np

M32 = 0xFFFFFFFF
SALTS = (0x9E3779B9, 0x85EBCA6B, 0xC2B2AE35, 0x27D4EB2F, 0x165667B1)


def _mix(x):
    x = x.astype(np.uint64) & M32
    x ^= x >> 16
    x = (x * 0x7FEB352D) & M32
    x ^= x >> 15
    x = (x * 0x846CA68B) & M32
    x ^= x >> 16
    return x


def uniform(seed, b, h, i, j):
    """lowbias32 chained over (seed, b, h, i, j); uint64 arithmetic masked to 32 bits."""
    u = lambda a: np.asarray(a, np.uint64)
    x = _mix((u(seed) + SALTS[0]) & M32)
    for c, salt in zip((b, h, i, j), SALTS[1:]):
        x = _mix(x ^ ((u(c) + salt) & M32))
    return ((x >> 9).astype(np.float64) + 0.5) / 2.0**23


def logistic(seed, shape, shared_heads=False):
    """Logistic noise [B, H, T, S]; ``shared_heads``: every head given head index 0 (one draw per batch row, query
    and key, the same for all heads)."""
    b, h, i, j = np.ix_(*[np.arange(n) for n in shape])
    u = uniform(seed, b, h * 0 if shared_heads else h, i, j)
    return np.log(u) - np.log1p(-u)


def sig(x):
    return 1.0 / (1.0 + np.exp(-x))


def attention(q, k, v, bias, *, family="bernoulli", train=False, noise=None, causal=True, temperature=2 / 3,
              stretch=(-0.1, 1.1), frozen_hard=None, dense=False, window=None):
    """Returns (out [B,T,H,D], density [B,H], adjacency [B,H,T,S], hard [B,H,T,S]).

    ``window``: sliding-window attention (causal): query i sees key j iff j <= i and i - j < window; the softmax,
    the gates and the density's denominator are over those pairs only (the pairs the dense model attends).

    ``frozen_hard``: for the Bernoulli gate, use this hard sample instead of recomputing it, so that the
    straight-through gradient is the ordinary derivative of the output at the current point (for finite
    differences): A = hard + sigmoid(z) - sigmoid(z0), with sigmoid(z0) passed inside ``frozen_hard``.
    """
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    B, T, H, D = q.shape
    S, KH = k.shape[1], k.shape[2]
    k = np.repeat(k, H // KH, axis=2)
    v = np.repeat(v, H // KH, axis=2)
    s = np.einsum("bthd,bshd->bhts", q, k) / np.sqrt(D)
    mask = np.tril(np.ones((T, S), bool)) if causal else np.ones((T, S), bool)
    if window is not None:
        assert causal
        mask &= (np.arange(T)[:, None] - np.arange(S)[None, :]) < window
    sm = np.where(mask, s, -np.inf)
    p = np.exp(sm - sm.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    g = s + np.broadcast_to(np.asarray(bias, np.float64), (H,))[None, :, None, None]
    l = noise if (train and noise is not None) else 0.0
    if dense:
        a = np.ones_like(g)
        expected = np.ones_like(g)
    elif family == "bernoulli":
        z = g + l
        hard = (z > 0).astype(np.float64)
        if frozen_hard is not None:
            hard0, soft0 = frozen_hard
            a = hard0 + sig(z) - soft0
        else:
            a = hard
        expected = sig(g)
    else:
        gamma, zeta = stretch
        t = (g + l) / temperature if train else g
        a = np.clip(sig(t) * (zeta - gamma) + gamma, 0.0, 1.0)
        expected = sig(g - temperature * np.log(-gamma / zeta))
    a = np.where(mask, a, 0.0)
    out = np.einsum("bhts,bshd->bthd", p * a, v)
    density = np.where(mask, expected, 0.0).sum((2, 3)) / mask.sum()
    z0 = g + l
    return out, density, a > 0, ((z0 > 0).astype(np.float64), sig(z0))
