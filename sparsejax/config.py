"""Typed run configuration (dataclasses), loadable from YAML with ``key=value`` overrides.

``load_config("toy_addition_posttrain", ["train.steps=200", "gate.bias=2"])`` takes a preset name (a file in
``sparsejax/presets``) or a YAML path. Unknown keys are errors that list the closest valid names.
"""
from __future__ import annotations

import dataclasses
import difflib
import typing
from pathlib import Path
from typing import Any

import yaml

PRESETS = Path(__file__).parent / "presets"


@dataclasses.dataclass
class ModelSection:
    checkpoint: str | None = None   # a Hugging Face directory (or a run's model/ dir); else build from the fields
    family: str = "llama"
    vocab_size: int = 12
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int | None = None
    d_ff: int = 512
    max_position: int = 64
    dtype: str = "float32"
    remat: str = "none"


@dataclasses.dataclass
class DataSection:
    kind: str = "addition"          # "addition" or "text"
    path: str | None = None         # text: a .txt file or a directory of them ("shakespeare" = the embedded corpus)
    tokenizer: str | None = None    # text: tokenizer.json; None = train a byte-level BPE and save it with the run
    bpe_vocab: int = 4096
    seq_len: int = 10
    backend: str = "array"          # "array" (in memory) or "tfds" (array_record files under the run dir)
    batch_size: int = 64
    seed: int = 0
    eval_batches: int = 8


@dataclasses.dataclass
class GateSection:
    enabled: bool = True            # False: dense (pretraining)
    bias: float = 3.0
    family: str = "bernoulli"
    per: str = "head"               # bias shape: "model" (), "layer" [L], "head" [L, H]
    learnable: bool = False
    temperature: float = 2.0 / 3.0
    stretch: tuple[float, float] = (-0.1, 1.1)


@dataclasses.dataclass
class ConstraintSection:
    method: str = "geco"            # "geco", "dual_ascent" or "penalty" (fixed beta)
    tau: float | None = None        # None: the dense model's held-out CE, measured before post-training
    slack: float = 0.0
    beta_init: float = 1e-2
    beta_min: float = 1e-6          # geco: floor of beta (keeps some sparsity pressure)
    eta: float = 1.0
    alpha: float = 0.99
    relative: bool = False          # geco: exponent (tau - C) / tau instead of (tau - C)
    max_log_step: float | None = None  # geco: clip of eta * (tau - C) per step
    lr: float = 0.1                 # dual ascent
    kp: float = 0.0                 # dual ascent PI damping


@dataclasses.dataclass
class TrainSection:
    steps: int = 100
    lr: float = 1e-3
    warmup: int = 0
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    grad_accum: int = 1
    distill: float = 0.0            # weight of KL(dense teacher || student); 0 = off
    lora_rank: int = 0              # 0 = full fine-tune; > 0 = LoRA adapters on lora_modules (base weights frozen)
    lora_alpha: float = 16.0
    lora_modules: tuple[str, ...] = ("attn.q", "attn.k", "attn.v", "attn.o")
    seed: int = 0
    log_every: int = 10
    eval_every: int = 0             # 0 = only at the end
    checkpoint_every: int = 0       # 0 = only at the end
    keep: int = 2
    max_bad_steps: int = 10         # consecutive non-finite steps before the run stops


@dataclasses.dataclass
class MeshSection:
    data: int = 1
    fsdp: int = 1
    tensor: int = 1


@dataclasses.dataclass
class RunConfig:
    model: ModelSection = dataclasses.field(default_factory=ModelSection)
    data: DataSection = dataclasses.field(default_factory=DataSection)
    gate: GateSection = dataclasses.field(default_factory=GateSection)
    constraint: ConstraintSection = dataclasses.field(default_factory=ConstraintSection)
    train: TrainSection = dataclasses.field(default_factory=TrainSection)
    mesh: MeshSection = dataclasses.field(default_factory=MeshSection)


def _coerce(value: Any, hint, where: str):
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if value is None:
        if hint is type(None) or type(None) in args:
            return None
        raise ValueError(f"{where} may not be null")
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where} must be a list, got {value!r}")
        return tuple(_coerce(v, args[0], where) for v in value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ValueError(f"{where} must be a list of {len(args)} numbers, got {value!r}")
        return tuple(_coerce(v, a, where) for v, a in zip(value, args))
    try:
        if hint is bool:
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                return value.lower() in ("true", "1", "yes")
            return bool(value)
        if hint is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if hint is float:
            return float(value)
        return str(value) if hint is str else value
    except (TypeError, ValueError):
        raise ValueError(f"{where}={value!r} is not a valid {getattr(hint, '__name__', hint)}") from None


def _update(obj, values: dict, prefix: str = ""):
    hints = typing.get_type_hints(type(obj))
    names = [f.name for f in dataclasses.fields(obj)]
    for key, value in values.items():
        where = f"{prefix}{key}"
        if key not in names:
            close = difflib.get_close_matches(key, names, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(prefix + c for c in close)}?" if close else \
                f"; valid keys: {', '.join(prefix + n for n in names)}"
            raise ValueError(f"unknown config key {where!r}{hint}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ValueError(f"{where} is a section; give its keys (e.g. {where}.{dataclasses.fields(current)[0].name}=...)")
            _update(current, value, where + ".")
        else:
            setattr(obj, key, _coerce(value, hints[key], where))


def _parse_override(item: str) -> dict:
    if "=" not in item:
        raise ValueError(f"override {item!r} must look like section.key=value")
    key, raw = item.split("=", 1)
    value = yaml.safe_load(raw) if raw != "" else None
    out: dict = {}
    node = out
    parts = key.strip().split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


def load_config(source: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """A :class:`RunConfig` from a preset name or YAML file, then ``key=value`` overrides."""
    cfg = RunConfig()
    if source is not None:
        path = Path(source)
        if not path.exists():
            path = PRESETS / f"{source}.yaml"
        if not path.exists():
            names = sorted(p.stem for p in PRESETS.glob("*.yaml"))
            raise FileNotFoundError(f"no config file or preset {source!r}; presets: {', '.join(names)}")
        _update(cfg, yaml.safe_load(path.read_text()) or {})
    for item in overrides or []:
        _update(cfg, _parse_override(item))
    return cfg


def to_dict(cfg: RunConfig) -> dict:
    return dataclasses.asdict(cfg)
