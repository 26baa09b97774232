"""sparsejax: extremely sparse attention by post-training (arXiv 2512.05865), in JAX."""
from .attention import AttentionStats, attention_pattern, sparse_attention
from .checkpoints import Model, from_gguf, from_nanogpt, from_pretrained, save_pretrained
from .gates import Gate, make_gate
from .models import ModelConfig, forward, init_params

__version__ = "0.1.0"
__all__ = ["AttentionStats", "attention_pattern", "Gate", "Model", "ModelConfig", "forward", "from_gguf", "from_nanogpt", "from_pretrained",
           "init_params", "make_gate", "save_pretrained", "sparse_attention"]
