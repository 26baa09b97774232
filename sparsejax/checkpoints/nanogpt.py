"""nanoGPT checkpoints (``ckpt.pt`` / ``final.pth``): ``{"model": state_dict, "model_args": {...}}`` or a bare
state dict plus ``model_args``. torch is imported only here (the ``reference`` extra)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..models.config import ModelConfig
from .hf import Model, load_params


class _DictReader:
    def __init__(self, tensors: dict[str, np.ndarray]):
        self.tensors = tensors

    def keys(self):
        return set(self.tensors)

    def get(self, name):
        return self.tensors[name]


def nanogpt_config(args: dict) -> ModelConfig:
    d, h = args["n_embd"], args["n_head"]
    bias = bool(args.get("bias", True))
    return ModelConfig(family="gpt2", vocab_size=args.get("vocab_size", 50304), d_model=d, n_layers=args["n_layer"],
                       n_heads=h, n_kv_heads=h, head_dim=d // h, d_ff=4 * d, max_position=args["block_size"],
                       norm="layernorm", norm_eps=1e-5, mlp="gelu", activation="gelu", position="learned",
                       qkv_bias=bias, out_bias=bias, mlp_bias=bias, tie_embeddings=True)


def _names(c: ModelConfig, bias: bool):
    h = "transformer.h.{l}."
    m = [("transformer.wte.weight", ("embed", "tokens"), "copy"),
         ("transformer.wpe.weight", ("embed", "positions"), "copy"),
         ("transformer.ln_f.weight", ("final_norm", "scale"), "copy")]
    linears = [("attn.c_attn", None), ("attn.c_proj", ("attn", "o")), ("mlp.c_fc", ("mlp", "fc")),
               ("mlp.c_proj", ("mlp", "proj"))]
    for name, ours in linears:
        for kind in ("weight", "bias") if bias else ("weight",):
            leaf = "kernel" if kind == "weight" else "bias"
            if ours is None:  # fused q, k, v (nn.Linear: [3d, d]; transposed to [d, 3d] before the split)
                m.append((h + f"{name}.{kind}", [("layers", "attn", x, leaf) for x in "qkv"], "split3"))
            else:
                m.append((h + f"{name}.{kind}", ("layers", *ours, leaf), "copy"))
    for hf, ours in (("ln_1", "attn_norm"), ("ln_2", "mlp_norm")):
        m.append((h + f"{hf}.weight", ("layers", ours, "scale"), "copy"))
        if bias:
            m.append((h + f"{hf}.bias", ("layers", ours, "bias"), "copy"))
    if bias:
        m.append(("transformer.ln_f.bias", ("final_norm", "bias"), "copy"))
    return m


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
    bias = bool(args.get("bias", True))
    params = load_params(config, _DictReader(tensors), names=_names(config, bias))
    if not bias:  # LayerNorm(bias=False): a zero bias is the same function
        import jax.numpy as jnp

        for p in (params["layers"]["attn_norm"], params["layers"]["mlp_norm"], params["final_norm"]):
            p["bias"] = jnp.zeros_like(p["scale"])
    return Model(config, params)
