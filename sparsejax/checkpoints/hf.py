"""Hugging Face checkpoints: ``from_pretrained(dir)`` / ``save_pretrained(model, dir)`` through declarative name maps.

A name map is a list of ``(hf_name, our_path, hook)``: ``hf_name`` may contain ``{l}`` (a per-layer tensor,
stacked on a leading layer axis), ``hook`` is one of ``copy``, ``linear`` (torch ``[out, in]`` <-> our
``[in, out]``) or ``split3`` (GPT-2's fused ``c_attn``: one tensor <-> q, k, v). Loading is strict: unknown,
missing and mis-shaped tensors are all listed in one error. No network: a missing file is an error.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..files import atomic_directory
from ..gates import Gate, gate_from_json, gate_to_json
from ..models.config import ModelConfig, config_from_hf, config_to_hf
from ..models.decoder import init_params

GATE_FILE = "sparsejax_gate.json"
TOKENIZER_FILE = "tokenizer.json"  # a checkpoint's (and a text run's) tokenizer, as `tokenizers` writes it
# Buffers some exporters write that carry no parameters.
IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias", "rotary_emb.inv_freq")


@dataclasses.dataclass
class Model:
    """A loaded model: ``config``, float32 ``params`` (nested dict) and ``gate`` (None = dense)."""

    config: ModelConfig
    params: dict
    gate: Gate | None = None


def name_map(c: ModelConfig) -> list[tuple[str, Any, str]]:
    """The declarative map of one family (only the tensors this config has)."""
    if c.family == "gpt2":
        h = "transformer.h.{l}."
        m = [("transformer.wte.weight", ("embed", "tokens"), "copy"),
             ("transformer.wpe.weight", ("embed", "positions"), "copy"),
             (h + "attn.c_attn.weight", [("layers", "attn", x, "kernel") for x in "qkv"], "split3"),
             (h + "attn.c_attn.bias", [("layers", "attn", x, "bias") for x in "qkv"], "split3"),
             (h + "attn.c_proj.weight", ("layers", "attn", "o", "kernel"), "copy"),
             (h + "attn.c_proj.bias", ("layers", "attn", "o", "bias"), "copy"),
             (h + "mlp.c_fc.weight", ("layers", "mlp", "fc", "kernel"), "copy"),
             (h + "mlp.c_fc.bias", ("layers", "mlp", "fc", "bias"), "copy"),
             (h + "mlp.c_proj.weight", ("layers", "mlp", "proj", "kernel"), "copy"),
             (h + "mlp.c_proj.bias", ("layers", "mlp", "proj", "bias"), "copy")]
        for hf, ours in (("ln_1", "attn_norm"), ("ln_2", "mlp_norm")):
            m += [(h + f"{hf}.weight", ("layers", ours, "scale"), "copy"), (h + f"{hf}.bias", ("layers", ours, "bias"), "copy")]
        m += [("transformer.ln_f.weight", ("final_norm", "scale"), "copy"),
              ("transformer.ln_f.bias", ("final_norm", "bias"), "copy")]
        if not c.tie_embeddings:
            m.append(("lm_head.weight", ("lm_head", "kernel"), "linear"))
        return m
    h = "model.layers.{l}."
    m = [("model.embed_tokens.weight", ("embed", "tokens"), "copy")]
    for x in "qkvo":
        m.append((h + f"self_attn.{x}_proj.weight", ("layers", "attn", x, "kernel"), "linear"))
        if (c.qkv_bias and x != "o") or (c.out_bias and x == "o"):
            m.append((h + f"self_attn.{x}_proj.bias", ("layers", "attn", x, "bias"), "copy"))
    if c.qk_norm:
        m += [(h + "self_attn.q_norm.weight", ("layers", "attn", "q_norm", "scale"), "copy"),
              (h + "self_attn.k_norm.weight", ("layers", "attn", "k_norm", "scale"), "copy")]
    for x in ("gate", "up", "down"):
        m.append((h + f"mlp.{x}_proj.weight", ("layers", "mlp", x, "kernel"), "linear"))
        if c.mlp_bias:
            m.append((h + f"mlp.{x}_proj.bias", ("layers", "mlp", x, "bias"), "copy"))
    if c.norm != "layernorm_noparam":
        norms = {"pre": {"attn_norm": "input_layernorm", "mlp_norm": "post_attention_layernorm"},
                 "post": {"attn_norm": "post_attention_layernorm", "mlp_norm": "post_feedforward_layernorm"},
                 "sandwich": {"attn_norm": "input_layernorm", "attn_post_norm": "post_attention_layernorm",
                              "mlp_norm": "pre_feedforward_layernorm", "mlp_post_norm": "post_feedforward_layernorm"},
                 }[c.norm_position]
        m += [(h + f"{hf}.weight", ("layers", ours, "scale"), "copy") for ours, hf in norms.items()]
        m.append(("model.norm.weight", ("final_norm", "scale"), "copy"))
    if not c.tie_embeddings:
        m.append(("lm_head.weight", ("lm_head", "kernel"), "linear"))
    return m


def _get(tree, path):
    for k in path:
        tree = tree[k]
    return tree


def _set(tree, path, value):
    for k in path[:-1]:
        tree = tree.setdefault(k, {})
    tree[path[-1]] = value


# ------------------------------------------------------------------------------------------------- reading
class _Reader:
    """Tensor-by-tensor access to ``model.safetensors`` or a sharded ``model.safetensors.index.json``."""

    def __init__(self, path: Path):
        from safetensors import safe_open

        index = path / "model.safetensors.index.json"
        if index.exists():
            weight_map = json.loads(index.read_text())["weight_map"]
            files = sorted(set(weight_map.values()))
        elif (path / "model.safetensors").exists():
            files, weight_map = ["model.safetensors"], None
        else:
            raise FileNotFoundError(f"{path} has no model.safetensors or model.safetensors.index.json (sparsejax "
                                    "never downloads: save the checkpoint there first)")
        self.handles = {}
        for f in files:
            if not (path / f).exists():
                raise FileNotFoundError(f"shard {f} listed in {index} is missing from {path}")
            try:
                self.handles[f] = safe_open(str(path / f), framework="flax")
            except Exception as e:  # corrupt header, truncated file
                raise ValueError(f"cannot read {path / f}: {e}") from e
        self.where = {k: f for f, h in self.handles.items() for k in h.keys()}
        if weight_map is not None:
            self.where = {k: f for k, f in self.where.items() if weight_map.get(k, f) == f}

    def keys(self):
        return set(self.where)

    def shape(self, name):
        return tuple(self.handles[self.where[name]].get_slice(name).get_shape())

    def get(self, name) -> np.ndarray:
        return np.asarray(self.handles[self.where[name]].get_tensor(name), np.float32)


def _expected_shapes(c: ModelConfig):
    return jax.eval_shape(lambda: init_params(c, jax.random.PRNGKey(0)))


@functools.lru_cache(maxsize=None)
def _layer_setter(sharding):
    """``set(buf, l, x) = buf.at[l].set(x)`` in place (the buffer is donated), keeping ``sharding``."""
    return jax.jit(lambda buf, l, x: jax.lax.dynamic_update_index_in_dim(buf, x, l, 0), donate_argnums=0,
                   out_shardings=sharding)


def _hf_piece_shapes(shape: tuple, hook) -> list[tuple]:
    """The shapes our tensors get from one HF tensor of ``shape`` (before stacking layers)."""
    if hook == "split3":
        return [shape[:-1] + (shape[-1] // 3,)] * 3 if shape[-1] % 3 == 0 else [shape]
    return [shape[::-1] if hook == "linear" and len(shape) == 2 else shape]


def load_params(c: ModelConfig, reader, *, names=None, shardings=None) -> dict:
    """Read, transform and stack every tensor of the family's map; raise one error listing all problems.

    Streaming: every check runs on the file headers first (nothing is read when anything is wrong); then tensors
    are read one at a time and written into their (stacked) device arrays in place, so host memory holds one
    checkpoint tensor at a time. ``shardings``: a pytree like the params of ``NamedSharding``s (e.g. from
    :func:`sparsejax.sharding.param_shardings`) on which each array is created; default: the default device."""
    names = name_map(c) if names is None else names
    expected = _expected_shapes(c)
    available = reader.keys()
    plan, used, missing, bad = [], set(), [], []
    for hf, ours, hook in names:
        layers = list(range(c.n_layers)) if "{l}" in hf else [None]
        keys = [hf.format(l=l) if l is not None else hf for l in layers]
        absent = [k for k in keys if k not in available]
        missing += absent
        used.update(k for k in keys if k in available)
        if absent:
            continue
        paths = ours if hook == "split3" else [ours]
        ok = True
        for k in keys:
            got = _hf_piece_shapes(reader.shape(k), hook)
            for n, path in enumerate(paths):
                want = _get(expected, path).shape
                want = want[1:] if "{l}" in hf else want
                if len(got) != len(paths) or tuple(got[n]) != tuple(want):
                    bad.append(f"{k} -> {'.'.join(path)}: got {got[min(n, len(got) - 1)]}, expected {want}")
                    ok = False
                    break
            if not ok:
                break
        if ok:
            plan.append((keys, paths, hook, "{l}" in hf))
    unknown = sorted(k for k in available - used if not k.endswith(IGNORED_SUFFIXES)
                     and not (k == "lm_head.weight" and c.tie_embeddings))
    problems = [f"missing tensors: {missing}"] * bool(missing) + [f"mis-shaped tensors: {bad}"] * bool(bad) + \
        [f"unknown tensors (not in the {c.family} map): {unknown}"] * bool(unknown)
    if problems:
        raise ValueError("checkpoint does not match the config:\n  " + "\n  ".join(problems))

    params = {}
    where = (lambda path: _get(shardings, path)) if shardings is not None else (lambda path: None)
    for keys, paths, hook, stacked in plan:
        def pieces(key):
            x = reader.get(key)
            return np.split(x, 3, axis=-1) if hook == "split3" else [x.T if hook == "linear" else x]
        if not stacked:
            for path, x in zip(paths, pieces(keys[0])):
                _set(params, path, jax.device_put(np.ascontiguousarray(x), where(path)))
            continue
        bufs = [jnp.zeros(_get(expected, path).shape, jnp.float32, device=where(path)) for path in paths]
        for l, key in enumerate(keys):
            for n, x in enumerate(pieces(key)):
                bufs[n] = _layer_setter(where(paths[n]))(bufs[n], l, np.ascontiguousarray(x))
        for path, buf in zip(paths, bufs):
            _set(params, path, buf)
    return params


def _read_gate(path: Path) -> Gate | None:
    f = path / GATE_FILE
    if not f.exists():
        return None
    return gate_from_json(json.loads(f.read_text()))


def from_pretrained(path: str | os.PathLike, *, gate: Any = None, mesh=None, rules=None) -> Model:
    """Load a Hugging Face checkpoint directory (``config.json`` + safetensors, sharded or not), tensor by tensor.

    ``mesh`` (with ``rules``, the logical-axis table; default :data:`sparsejax.sharding.DEFAULT_RULES`): create
    every parameter directly on its sharding as it is read (host memory: one tensor at a time).

    ``gate``: add a gate to a dense checkpoint (a float bias or :class:`Gate`); a checkpoint saved by
    sparsejax with a gate (``sparsejax_gate.json``) loads it, and passing ``gate=`` as well is an error.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint directory {path} does not exist (sparsejax never downloads)")
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path} has no config.json; is it a Hugging Face checkpoint directory?")
    try:
        hf = json.loads((path / "config.json").read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path / 'config.json'} is not valid JSON: {e}") from e
    config = config_from_hf(hf)
    shardings = None
    if mesh is not None:
        from .. import sharding

        shardings = sharding.param_shardings(_expected_shapes(config), mesh, rules or sharding.DEFAULT_RULES)
    params = load_params(config, _Reader(path), shardings=shardings)
    saved = _read_gate(path)
    if saved is not None and gate is not None:
        raise ValueError(f"{path} already has a gate ({GATE_FILE}); pass gate=None to use it")
    from ..gates import as_gate

    return Model(config, params, saved if saved is not None else as_gate(gate))


# ------------------------------------------------------------------------------------------------- writing
def iter_export_tensors(c: ModelConfig, params: dict, fetch=np.asarray):
    """``(HF name, float32 numpy tensor)`` one at a time (the inverse of :func:`load_params`): a layer's tensor is
    sliced from the stacked (possibly sharded) device array before ``fetch`` copies it to the host, so the host holds
    one tensor at a time, never a whole stacked layer group. Multi-process: ``fetch`` gathers the slice across
    processes (a collective: every process iterates, in the same order)."""
    for hf, ours, hook in name_map(c):
        layers = range(c.n_layers) if "{l}" in hf else [None]
        for l in layers:
            pick = (lambda x: x) if l is None else (lambda x: x[l])
            if hook == "split3":
                value = np.concatenate([fetch(pick(_get(params, p))) for p in ours], axis=-1)
            else:
                value = fetch(pick(_get(params, ours)))
                if hook == "linear":
                    value = np.swapaxes(value, -1, -2)
            yield (hf if l is None else hf.format(l=l)), np.ascontiguousarray(value, np.float32)


def export_tensors(c: ModelConfig, params: dict, fetch=np.asarray) -> dict[str, np.ndarray]:
    """Our params as HF-named float32 numpy tensors, all at once (small models; see :func:`iter_export_tensors`)."""
    return dict(iter_export_tensors(c, params, fetch))


def _write_safetensors(c: ModelConfig, params: dict, directory: Path, max_shard_bytes: int | None,
                       fetch=np.asarray) -> None:
    """``model.safetensors``, or (``max_shard_bytes``) Hugging Face's sharded layout: ``model-0000i-of-0000N
    .safetensors`` files of at most ``max_shard_bytes`` each (or one tensor, if larger) and
    ``model.safetensors.index.json``. Host memory: one shard's tensors at a time."""
    from safetensors.numpy import save_file

    meta = {"format": "pt"}
    if max_shard_bytes is None:
        save_file(export_tensors(c, params, fetch), str(directory / "model.safetensors"), metadata=meta)
        return
    if not max_shard_bytes > 0:
        raise ValueError(f"max_shard_bytes must be > 0 (or None for one file), got {max_shard_bytes}")
    files, shard, size, total, weight_map = [], {}, 0, 0, {}

    def flush():
        name = f"shard-{len(files):05d}.tmp"
        save_file(shard, str(directory / name), metadata=meta)
        files.append((name, list(shard)))
        shard.clear()

    for name, tensor in iter_export_tensors(c, params, fetch):
        if shard and size + tensor.nbytes > max_shard_bytes:
            flush()
            size = 0
        shard[name] = tensor
        size += tensor.nbytes
        total += tensor.nbytes
    if shard:
        flush()
    for i, (tmp_name, names) in enumerate(files):
        final = f"model-{i + 1:05d}-of-{len(files):05d}.safetensors"
        os.replace(directory / tmp_name, directory / final)
        weight_map.update({n: final for n in names})
    (directory / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))


def save_pretrained(model: Model, path: str | os.PathLike, *, tokenizer=None,
                    max_shard_bytes: int | None = None, fetch=np.asarray) -> None:
    """Write ``config.json`` + ``model.safetensors`` (loadable by ``transformers``, dense semantics), when the
    model has a gate ``sparsejax_gate.json``, and ``tokenizer.json`` when a ``tokenizers.Tokenizer`` is given.
    ``max_shard_bytes`` (e.g. ``2 * 2**30``): Hugging Face's sharded layout with an index, written shard by shard
    from (sharded) device arrays, so the host never holds more than one shard — the export of a model larger than
    host memory. ``fetch``: how a device array reaches the host (see :func:`iter_export_tensors`). Atomic: the
    directory appears complete or not at all."""

    def write(tmp: Path):
        (tmp / "config.json").write_text(json.dumps(config_to_hf(model.config), indent=2))
        _write_safetensors(model.config, model.params, tmp, max_shard_bytes, fetch)
        if model.gate is not None:
            (tmp / GATE_FILE).write_text(json.dumps(gate_to_json(model.gate)))
        if tokenizer is not None:
            tokenizer.save(str(tmp / TOKENIZER_FILE))

    atomic_directory(Path(path), write)
