"""Checkpoint import/export: Hugging Face safetensors, nanoGPT."""
from .hf import Model, from_pretrained, save_pretrained
from .nanogpt import from_nanogpt

__all__ = ["Model", "from_nanogpt", "from_pretrained", "save_pretrained"]
