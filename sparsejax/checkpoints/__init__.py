"""Checkpoint import/export: Hugging Face safetensors, nanoGPT, GGUF (import)."""
from .gguf import convert_gguf, from_gguf
from .hf import Model, from_pretrained, save_pretrained
from .nanogpt import from_nanogpt

__all__ = ["Model", "convert_gguf", "from_gguf", "from_nanogpt", "from_pretrained", "save_pretrained"]
