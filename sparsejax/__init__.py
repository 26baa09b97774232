"""sparsejax: extremely sparse attention by post-training (arXiv 2512.05865), in JAX."""
from .attention import AttentionStats, sparse_attention
from .gates import Gate, make_gate

__version__ = "0.1.0"
__all__ = ["AttentionStats", "Gate", "make_gate", "sparse_attention"]
