"""nanoGPT checkpoints (``ckpt.pt`` / ``final.pth``): ``{"model": state_dict, "model_args": {...}}`` or a bare
state dict plus ``model_args``. torch is imported only here (the ``reference`` extra)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..models.config import ModelConfig
import jax

from ..models.decoder import init_params
from .hf import Model, _get, load_params, name_map


class _DictReader:
    def __init__(self, tensors: dict[str, np.ndarray]):
        self.tensors = tensors

    def keys(self):
        return set(self.tensors)

    def shape(self, name):
        return tuple(np.shape(self.tensors[name]))

    def get(self, name):
        return np.asarray(self.tensors[name], np.float32)


def nanogpt_config(args: dict) -> ModelConfig:
    """nanoGPT's GPT-2 layout: exact GELU, tied head; ``bias=False`` models load with zero biases (same function)."""
    d, h = args["n_embd"], args["n_head"]
    return ModelConfig(family="gpt2", vocab_size=args.get("vocab_size", 50304), d_model=d, n_layers=args["n_layer"],
                       n_heads=h, d_ff=4 * d, max_position=args["block_size"], activation="gelu",
                       tie_embeddings=True)


def from_nanogpt(path: str | os.PathLike) -> Model:
    """Load a nanoGPT checkpoint (GPT-2 layout, vocab usually padded to 50304, exact GELU, tied head)."""
    try:
        import torch
    except ImportError as e:
        raise ImportError("reading nanoGPT checkpoints needs torch: pip install 'sparsejax[reference]'") from e
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"nanoGPT checkpoint {path} does not exist")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    state = ckpt.get("model", ckpt)
    args = ckpt.get("model_args")
    if args is None:
        raise ValueError(f"{path} has no 'model_args' (n_layer, n_head, n_embd, block_size, bias, vocab_size)")
    tensors = {}
    for k, v in state.items():
        k = k.removeprefix("_orig_mod.")  # torch.compile'd models
        x = v.detach().to(torch.float32).numpy()
        # nn.Linear stores [out, in]; our kernels are [in, out]
        tensors[k] = x.T if k.endswith(".weight") and (".attn.c_" in k or ".mlp.c_" in k) else x
    config = nanogpt_config(args)
    if not bool(args.get("bias", True)):  # Linear/LayerNorm(bias=False): a zero bias is the same function
        shapes = jax.eval_shape(lambda: init_params(config, jax.random.PRNGKey(0)))
        width = lambda path: _get(shapes, path).shape[-1]
        for name, ours, hook in name_map(config):
            layers = range(config.n_layers) if "{l}" in name else [None]
            for l in layers:
                key = name.format(l=l) if l is not None else name
                if key.endswith(".bias") and key not in tensors:
                    n = sum(width(p) for p in ours) if hook == "split3" else width(ours)
                    tensors[key] = np.zeros((n,), np.float32)
    return Model(config, load_params(config, _DictReader(tensors)))

