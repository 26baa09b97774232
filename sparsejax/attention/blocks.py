"""Typed block sizes of the blocked attention implementations: :class:`BlockSizes`, one default per kernel backend.

``block_q`` / ``block_k`` are the forward tiles (and the only sizes ``implementation="chunked"`` reads);
``block_q_bwd`` / ``block_k_bwd`` the tiles of both backward kernels; ``num_warps`` / ``num_stages`` Triton's
launch parameters (GPU only); ``backward`` the backward variant of the fused kernel: ``"split"`` (a dk/dv kernel
and a dq/bias kernel, deterministic) or ``"atomic"`` (one kernel, dq and the bias gradient added with atomic
adds; GPU and interpret mode).

The defaults (:data:`BLOCK_SIZES`): GPU, the best of two sweeps on one H200 (T=4096, bf16, 16 heads x 128, train
mode; ``benchmarks/kernel_tuning.py``, ``docs/results/kernel_tuning_h200_*.txt``; the atomic backward measured
1.8-11x slower there: contention on dq); TPU, 256-row/key tiles (Mosaic's lanes are 128 wide); ``"interpret"``
(Pallas interpret mode on CPU), large tiles: fewer programs.
"""
from __future__ import annotations

import dataclasses
import numbers
from typing import Any, Mapping

BACKWARDS = ("split", "atomic")
BACKENDS = ("gpu", "tpu", "interpret")
_SIZES = ("block_q", "block_k", "block_q_bwd", "block_k_bwd")


def _is_int(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


@dataclasses.dataclass(frozen=True)
class BlockSizes:
    """Tile sizes and launch options of the blocked attention kernels (validated on construction).

    ``block_q_bwd`` / ``block_k_bwd`` default to ``block_q`` / ``block_k``. Pass one to
    :func:`sparsejax.sparse_attention` as ``block_sizes=``; loose keywords (``block_q=64``, ...) override its fields
    (or, without it, the backend's default)."""

    block_q: int
    block_k: int
    block_q_bwd: int | None = None
    block_k_bwd: int | None = None
    num_warps: int | None = None
    num_stages: int | None = None
    backward: str = "split"

    def __post_init__(self):
        for name, fallback in (("block_q_bwd", "block_q"), ("block_k_bwd", "block_k")):
            if getattr(self, name) is None:
                object.__setattr__(self, name, getattr(self, fallback))
        for name in _SIZES:
            x = getattr(self, name)
            if not _is_int(x) or x < 1:
                raise ValueError(f"BlockSizes.{name} must be a positive int, got {x!r}")
            object.__setattr__(self, name, int(x))
        if self.num_warps is not None and (not _is_int(self.num_warps) or self.num_warps < 1
                                           or self.num_warps & (self.num_warps - 1)):
            raise ValueError(f"BlockSizes.num_warps must be a power of two (Triton's warps per program) or None, "
                             f"got {self.num_warps!r}")
        if self.num_stages is not None and (not _is_int(self.num_stages) or self.num_stages < 1):
            raise ValueError(f"BlockSizes.num_stages must be a positive int (Triton's pipeline stages) or None, got "
                             f"{self.num_stages!r}")
        if self.backward not in BACKWARDS:
            raise ValueError(f"backward={self.backward!r} is not available; choose one of {list(BACKWARDS)} "
                             "('split': two kernels, deterministic; 'atomic': one kernel with atomic dq, GPU)")

    @classmethod
    def of(cls, value: "BlockSizes | Mapping[str, Any] | None" = None, *, backend: str = "interpret",
           **overrides) -> "BlockSizes":
        """A :class:`BlockSizes` from ``value`` (a BlockSizes, a mapping of its fields, or None = the backend's
        default) with ``overrides`` replacing fields. Unknown names raise."""
        if backend not in BLOCK_SIZES:
            raise ValueError(f"unknown Pallas backend {backend!r}; choose one of {sorted(BLOCK_SIZES)}")
        base = BLOCK_SIZES[backend]
        if value is not None and not isinstance(value, BlockSizes):
            if not isinstance(value, Mapping):
                raise ValueError(f"block_sizes must be a BlockSizes or a mapping of its fields, got "
                                 f"{type(value).__name__}")
            overrides = {**dict(value), **overrides}
            value = None
        unknown = set(overrides) - set(FIELDS)
        if unknown:
            raise ValueError(f"unknown block option(s) {sorted(unknown)}; the Pallas kernel takes {sorted(FIELDS)}")
        return dataclasses.replace(base if value is None else value, **overrides)

    def check(self, backend: str) -> "BlockSizes":
        """Raise a clear error when ``backend`` cannot run these options; return self."""
        if self.backward == "atomic" and backend == "tpu":
            raise ValueError("backward='atomic' is not available on tpu; choose 'split' (Mosaic TPU has no atomic "
                             "adds)")
        if backend == "gpu":
            odd = {n: getattr(self, n) for n in _SIZES if getattr(self, n) & (getattr(self, n) - 1)}
            if odd:
                raise ValueError(f"block sizes {odd} on gpu: Triton's tiles must be powers of two")
        return self

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


FIELDS = tuple(f.name for f in dataclasses.fields(BlockSizes))

BLOCK_SIZES = {
    "gpu": BlockSizes(block_q=64, block_k=32, block_q_bwd=64, block_k_bwd=32, num_warps=4, num_stages=3,
                      backward="split"),
    "tpu": BlockSizes(block_q=256, block_k=256, block_q_bwd=256, block_k_bwd=256, backward="split"),
    "interpret": BlockSizes(block_q=128, block_k=128, block_q_bwd=128, block_k_bwd=128, backward="split"),
}
