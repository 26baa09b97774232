"""Typed run configuration (dataclasses), loadable from YAML with ``key=value`` overrides.

``load_config("toy_addition_posttrain", ["train.steps=200", "gate.bias=2"])`` takes a preset name (a file in
``sparsejax/presets``) or a YAML path. The dataclasses below are the schema of an OmegaConf structured config, which
reads the YAML, types every value and turns the result back into these dataclasses; unknown keys are errors that
list the closest valid names, and :func:`validate` checks every value's range and the rules between keys.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib
import math
import types
import typing
from pathlib import Path

import yaml
from omegaconf import BooleanNode, DictConfig, FloatNode, IntegerNode, OmegaConf, StringNode
from omegaconf.errors import OmegaConfBaseException

from .attention import IMPLEMENTATIONS as _ATTENTION  # the live table (an implementation added later counts)
from .controllers import registry as _controllers  # the live registry (a controller registered later counts)
from .gates.registry import FAMILIES as GATE_FAMILIES  # the live registry (a family registered later counts)
from .models.config import DTYPES, REMAT, ModelConfig

PRESETS = Path(__file__).parent / "presets"


# The model section is derived from ModelConfig (one definition of the architecture fields): every ModelConfig
# field (None = the family's value) plus ``checkpoint``. With a checkpoint only dtype and remat apply.
_MODEL_SECTION_DEFAULTS = dict(family="llama", vocab_size=12, d_model=128, n_layers=4, n_heads=4, d_ff=512,
                               max_position=64, dtype="float32", remat="none")
_CHECKPOINT_ONLY = ("rope_scaling",)  # set by a checkpoint's config.json, not by hand


def _model_section_fields():
    hints = typing.get_type_hints(ModelConfig)
    fields = [("checkpoint", typing.Optional[str], dataclasses.field(default=None))]
    for f in dataclasses.fields(ModelConfig):
        if f.name in _CHECKPOINT_ONLY:
            continue
        hint = hints[f.name]
        if f.name not in _MODEL_SECTION_DEFAULTS and type(None) not in typing.get_args(hint):
            hint = typing.Optional[hint]
        fields.append((f.name, hint, dataclasses.field(default=_MODEL_SECTION_DEFAULTS.get(f.name))))
    return fields


ModelSection = dataclasses.make_dataclass("ModelSection", _model_section_fields())
ModelSection.__doc__ = ("model.checkpoint (a Hugging Face directory, or a run's model/) or the fields of "
                        "sparsejax.ModelConfig for a fresh model (unset fields take the family's values)")


def model_config(section) -> ModelConfig:
    """The :class:`ModelConfig` of a fresh model described by a model section."""
    return ModelConfig(**{f.name: getattr(section, f.name) for f in dataclasses.fields(ModelConfig)
                          if f.name not in _CHECKPOINT_ONLY})


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
    repeat: float = 0.0             # text: share of rows with a passage copied later in the row (induction data)
    aside: float = 0.0              # share of the training rows (the last ones) held aside, never trained on: the
    #                                 CE gap (constraint.tau_data=batch / control) that the multiplier (CE mode) or
    #                                 the guard of a guarded density curriculum sees is measured on them. A dense
    #                                 run (gate.enabled=false) only leaves them out: pretrain with the same share
    #                                 so that the dense model has not memorised the rows the gap is measured on
    repeat_tokens: str = "text"     # the repeated passage: "text" (from the row) or "random" (uniform tokens)
    bos: bool | None = None         # every row starts with a BOS token. addition: token 12 (a 13-token vocabulary);
    #                                 text: the checkpoint's bos_token_id. null: text rows start with it where the
    #                                 checkpoint's tokenizer puts it first (Gemma, Llama 3: pretrained so) and
    #                                 data.repeat=0, else no BOS


@dataclasses.dataclass
class GateSection:
    enabled: bool = True            # False: dense (pretraining)
    bias: float = 3.0
    kind: str = "bernoulli"         # gate family (sparsejax.gates.FAMILIES): "bernoulli" (the paper's), "hard_concrete"
    per: str = "head"               # bias shape: "model" (), "layer" [L], "head" [L, H]
    learnable: bool = False
    bias_lr: float | None = None    # learnable bias: its own learning rate (None: train.lr)
    bias_max: float | None = None   # learnable bias: never above this (e.g. its start, gate.bias); None: no bound.
    #                                 A head the model needs under the noise otherwise raises its bias until its
    #                                 gates sit in the sigmoid's flat tail, where the density penalty has no slope
    temperature: float = 2.0 / 3.0
    stretch: tuple[float, float] = (-0.1, 1.1)
    noise_anneal: float = 0.0       # noise annealing: over this share of train.steps the gate noise's scale falls
    #                                 linearly from 1 to 0, ending noise_zero of the run before its end (sampled
    #                                 and deterministic gates meet; 0: the method's full noise all run)
    noise_zero: float = 0.0         # noise annealing: the last share of train.steps trains at noise scale 0
    #                                 (at gate.noise_floor when set)
    noise_floor: float = 0.0        # noise annealing: the scale falls from 1 to this floor instead of 0 and stays
    #                                 there (a margin around the gate threshold survives to the end)
    noise_recover: bool = False     # noise annealing, CE mode: the scale is at least the multiplier's violation over
    #                                 the slack (clipped to [0, 1]), so a run over tau gets the noise back
    penalty_knee: float | None = None  # above this gate logit the density penalty's gradient is its slope at the
    #                                 knee (the expected density's value unchanged); None: the sigmoid's, which
    #                                 vanishes, so an open edge the CE does not need keeps a large logit for ever
    penalty_floor: float | None = None  # below this gate logit the density penalty's gradient is 0 (its value
    #                                 unchanged); None: the sigmoid's, which pushes a closed edge ever deeper, out
    #                                 of reach of the CE's straight-through gradient sigmoid'(g) when it is needed
    shared_noise: bool = False      # one training-noise draw per (batch, query, key), shared by every head of a
    #                                 layer (False: the method's, one per head): a second head keeping the same read
    #                                 is sampled closed with the first, so copies are no insurance against the noise


@dataclasses.dataclass
class _ConstraintShared:
    """The constraint keys every controller shares (read by the Trainer, the step and the state)."""
    method: str = "pi"              # the controller (sparsejax.controllers): "pi" (PI control of log beta), "geco",
    #                                 "dual_ascent", "penalty" (fixed beta) or "none"
    sense: str = "ce"               # "ce": min density s.t. CE <= tau; "density": min CE s.t. density <= density_target
    density_target: float | None = None  # sense=density: target share of causal edges (e.g. 0.01)
    tau: float | None = None        # None: the dense model's held-out CE, measured before post-training
    slack: float = 0.0
    beta_init: float = 1e-2         # the multiplier's start; penalty: the fixed density weight
    tau_data: str = "validation"    # where the dense CE behind tau is measured: "validation" or "train" batches, or
    #                                 "batch": each measured training batch (the multiplier sees the CE minus the
    #                                 dense starting model's on the same batch, against the slack), or "control":
    #                                 the same against a dense control trained beside the sparse model on the same
    #                                 batches and schedule (one more forward and backward a step; control_model/)
    tau_gates: str = "dense"        # tau from the "dense" model (gates off) or the gated starting model under "sampled"
    #                                 gates (the training loss's own mode; docs/controllers.md)
    anneal_steps: int = 0           # pi/geco: move the target geometrically from anneal_from to its final value over
    #                                 this many steps (0: the final target from the start)
    anneal_from: float | None = None  # start of the annealed target; None (density mode): the gated model's
    #                                   held-out edge density, measured before post-training; CE mode with
    #                                   tau_data=batch / control: the CE gap it starts at (falling to the slack)
    measure: str = "deterministic"  # the CE the multiplier sees (CE mode; the guard's CE in a guarded curriculum):
    #                                 "sampled" (the training loss's) or "deterministic" (the exported model's gates:
    #                                 one more forward per measured step; docs/controllers.md)
    measure_every: int = 1          # measure=deterministic: every this many steps (the last value held between)
    guard: bool = False             # pi, density mode, annealed target: the target falls only while the measured CE
    #                                 is at or under the CE target (constraint.tau or dense + slack), else waits


# The constraint section: the shared keys above, then every registered controller's options (its Options dataclass
# in sparsejax/controllers/<name>.py: pi_ki, eta, lr, ...), all flat, so constraint.<key>=value names either.
ConstraintSection = dataclasses.make_dataclass("ConstraintSection", _controllers.section_fields(_ConstraintShared))
ConstraintSection.__doc__ = ("constraint.*: the keys every controller shares, then each registered controller's "
                             "options (sparsejax.controllers)")
_controllers.seal(ConstraintSection)


@dataclasses.dataclass
class TrainSection:
    steps: int = 100
    lr: float = 1e-3
    warmup: int = 0                 # linear warm-up steps from 0
    schedule: str = "constant"      # after warm-up: "constant", "cosine" or "linear" decay to lr * lr_final
    lr_final: float = 0.1
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
    export_shard_mb: float = 0.0    # exported model/ and best_model/: 0 = one model.safetensors; > 0 = Hugging Face's
    #                                 sharded files of at most this many MiB, written shard by shard (large models)
    attention: str = "auto"         # attention implementation: auto (pallas kernel on GPU/TPU, chunked on CPU),
    #                                 chunked, pallas, reference
    final: str = "last"             # model/: the "last" step's model, or "feasible": the last evaluated model that
    #                                 met the constraint on training batches (the final one unless a late step broke
    #                                 it; held-out data never decides; feasible_model/, feasible.json)
    feasible_tail: float | None = None  # with train.final=feasible (ignored with last): also the mean CE of this share of the training-batch
    #                                 sequences with the highest CE (their tail) must stay within the dense model's
    #                                 on the same sequences + feasible_tail_slack: a model that loses a whole class of
    #                                 problems moves the mean by the slack but its tail by 10-100x (docs/controllers.md,
    #                                 fifteenth round); null: the mean only
    feasible_tail_slack: float = 0.05


@dataclasses.dataclass
class MeshSection:
    data: int = 1
    fsdp: int = 1
    tensor: int = 1
    rules: tuple[str, ...] = ()     # logical-axis overrides, e.g. "embed=fsdp", "heads=tensor", "mlp=" (sharding.py)


@dataclasses.dataclass
class RunConfig:
    model: ModelSection = dataclasses.field(default_factory=ModelSection)
    data: DataSection = dataclasses.field(default_factory=DataSection)
    gate: GateSection = dataclasses.field(default_factory=GateSection)
    constraint: ConstraintSection = dataclasses.field(default_factory=ConstraintSection)
    train: TrainSection = dataclasses.field(default_factory=TrainSection)
    mesh: MeshSection = dataclasses.field(default_factory=MeshSection)


# ---- loading: OmegaConf structured configs ---------------------------------------------------------------------
# The schema is OmegaConf.structured(RunConfig): OmegaConf parses the YAML (files and override values), types and
# converts every value against the dataclass annotations ("7" -> 7, [-0.2, 1.2] -> (-0.2, 1.2)), refuses what does
# not fit, and OmegaConf.to_object turns the result back into the plain dataclasses. What is ours: the walk that
# names an unknown key's closest ones, and the messages its errors raise (OmegaConf's exceptions stop here).
_NODES = {int: IntegerNode, float: FloatNode, bool: BooleanNode, str: StringNode}


def _variadic(hint) -> bool:
    return typing.get_origin(hint) is tuple and typing.get_args(hint)[1:] == (Ellipsis,)


def _refuses(hint, value) -> bool:
    """Whether OmegaConf's node for a scalar type refuses ``value``."""
    try:
        _NODES[hint](value, is_optional=False) if hint in _NODES else None
    except OmegaConfBaseException:
        return True
    return False


def _value_error(where: str, value, hint) -> ValueError:
    """Our message for a value OmegaConf refused (``hint``: the field's annotation, Optional taken off); for a list,
    about its first element that OmegaConf's node for the element type refuses."""
    if value is None:
        return ValueError(f"{where} may not be null")
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, (list, tuple)) or (not _variadic(hint) and len(value) != len(args)):
            return ValueError(f"{where} must be a list, got {value!r}" if _variadic(hint) else
                              f"{where} must be a list of {len(args)} numbers, got {value!r}")
        elements = zip(value, (args[0],) * len(value) if _variadic(hint) else args)
        bad = next(((v, t) for v, t in elements if _refuses(t, v)), None)
        if bad is not None:
            return _value_error(where, *bad)
    return ValueError(f"{where}={value!r} is not a valid {getattr(hint, '__name__', hint)}")


def _plain(hint):
    """The annotation without ``| None``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


_hints = functools.lru_cache(typing.get_type_hints)  # a section's annotations (the classes are fixed at import)


def _set(section: DictConfig, key: str, value, where: str) -> None:
    hint = _plain(_hints(OmegaConf.get_type(section))[key])
    given = value
    if _variadic(hint) and isinstance(value, str):
        value = [v for v in value.split(",") if v]  # a list of names may be given as a,b,c
    elif hint is int and isinstance(value, float) and value.is_integer():
        value = int(value)  # 2000.0 is the integer 2000 (OmegaConf takes no float for an int)
    try:
        OmegaConf.update(section, key, value, merge=False)
    except OmegaConfBaseException:
        raise _value_error(where, given, hint) from None


def _merge(section: DictConfig, values: dict, prefix: str = "") -> None:
    """Set ``values`` (a nested dict) into the typed ``section``, key by key, in order."""
    names = list(section.keys())
    for key, value in values.items():
        where = f"{prefix}{key}"
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(prefix + c for c in close)}?" if close else \
                f"; valid keys: {', '.join(prefix + n for n in names)}"
            raise ValueError(f"unknown config key {where!r}{hint}")
        if OmegaConf.is_dict(section[key]):
            if not isinstance(value, dict):
                first = next(iter(section[key]))
                raise ValueError(f"{where} is a section; give its keys (e.g. {where}.{first}=...)")
            _merge(section[key], value, where + ".")
        else:
            _set(section, key, value, where)


def _read_yaml(path: Path) -> dict:
    try:
        loaded = OmegaConf.load(path)
    except (yaml.YAMLError, OmegaConfBaseException) as e:
        raise ValueError(f"{path} is not a valid config file: {e}") from None
    if not OmegaConf.is_dict(loaded):
        raise ValueError(f"{path} must be a mapping of sections (model:, data:, gate:, ...)")
    return OmegaConf.to_container(loaded)


def _read_override(item: str) -> dict:
    """``section.key=value`` (the value is YAML; ``key=`` is null) as a nested dict."""
    if "=" not in item:
        raise ValueError(f"override {item!r} must look like section.key=value")
    key, raw = item.split("=", 1)
    try:
        return OmegaConf.to_container(OmegaConf.from_dotlist([f"{key.strip()}={raw}"]))
    except yaml.YAMLError as e:
        raise ValueError(f"override {item!r}: the value is not valid YAML ({getattr(e, 'problem', e)})") from None
    except OmegaConfBaseException:
        raise ValueError(f"override {item!r} must look like section.key=value") from None


def load_config(source: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """A :class:`RunConfig` from a preset name or YAML file, then ``key=value`` overrides."""
    cfg = OmegaConf.structured(RunConfig)
    if source is not None:
        path = Path(source)
        if not path.exists():
            path = PRESETS / f"{source}.yaml"
        if not path.exists():
            names = sorted(p.stem for p in PRESETS.glob("*.yaml"))
            raise FileNotFoundError(f"no config file or preset {source!r}; presets: {', '.join(names)}")
        _merge(cfg, _read_yaml(path))
    for item in overrides or []:
        _merge(cfg, _read_override(item))
    try:
        run = OmegaConf.to_object(cfg)  # the plain dataclasses again (interpolations resolved)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None)
        raise ValueError(f"{key or 'config'}: {str(e).splitlines()[0]}") from None
    return validate(run)


_finite = lambda v: v is None or (isinstance(v, (int, float)) and math.isfinite(v))
_or = lambda names: ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else "".join(names)


def _one_of(values):
    """(valid?, what it must be) of a key whose values are listed once, where they are implemented: ``values()``
    reads the list when a config is checked (sparsejax.train imports this module, so its lists are read late)."""
    return (lambda v: v in values()), (lambda v: _or(values()))


def _listed(module: str, name: str):
    return lambda: getattr(importlib.import_module(module, __package__), name)


# (key, valid?, what it must be): checked by validate() before anything is measured or written
_RULES = (
    ("model.dtype", *_one_of(lambda: DTYPES)),
    ("train.attention", *_one_of(lambda: ("auto", *sorted(_ATTENTION)))),  # auto: pallas on GPU/TPU, else chunked
    ("model.remat", *_one_of(lambda: REMAT)),
    ("data.kind", *_one_of(_listed(".train.data", "KINDS"))),
    ("data.backend", *_one_of(_listed(".train.data", "BACKENDS"))),
    ("data.seq_len", lambda v: v >= 2, "an integer >= 2"),
    ("data.batch_size", lambda v: v >= 1, "an integer >= 1"),
    ("data.eval_batches", lambda v: v >= 1, "an integer >= 1"),
    ("data.bpe_vocab", lambda v: v >= 260, "an integer >= 260 (the byte alphabet plus specials)"),
    ("data.repeat", lambda v: 0 <= v <= 1, "a share in [0, 1] (0: plain text)"),
    ("data.repeat_tokens", *_one_of(_listed(".train.data", "REPEAT_TOKENS"))),
    ("gate.bias", lambda v: math.isfinite(v), "a finite number"),
    ("gate.kind", lambda v: v in GATE_FAMILIES, "a registered gate family: " + " or ".join(GATE_FAMILIES)),
    ("gate.per", *_one_of(_listed(".train.state", "GATE_PER"))),
    ("gate.bias_lr", lambda v: v is None or (math.isfinite(v) and v > 0), "a number > 0 or null"),
    ("gate.bias_max", lambda v: v is None or math.isfinite(v), "a number or null"),
    ("gate.temperature", lambda v: math.isfinite(v) and v > 0, "a number > 0"),
    ("gate.noise_anneal", lambda v: 0 <= v <= 1, "a share of train.steps in [0, 1] (0: the full noise all run)"),
    ("gate.noise_zero", lambda v: 0 <= v <= 1, "a share of train.steps in [0, 1]"),
    ("gate.noise_floor", lambda v: 0 <= v < 1, "a noise scale in [0, 1)"),
    ("gate.penalty_knee", lambda v: v is None or math.isfinite(v), "a gate logit (a number) or null"),
    ("gate.penalty_floor", lambda v: v is None or math.isfinite(v), "a gate logit (a number) or null"),
    ("constraint.method", lambda v: v in _controllers.CONTROLLERS,
     lambda v: f"a registered controller: {_or(_controllers.names())}{_controllers.did_you_mean(v)}"),
    ("constraint.sense", lambda v: v in _controllers.SENSES, " or ".join(_controllers.SENSES)),
    ("constraint.density_target", lambda v: v is None or 0 < v < 1, "a share in (0, 1)"),
    ("constraint.tau", lambda v: _finite(v), "a finite number"),
    ("constraint.slack", lambda v: _finite(v), "a finite number"),
    ("constraint.beta_init", lambda v: math.isfinite(v) and v > 0, "a number > 0"),
    ("constraint.tau_data", *_one_of(_listed(".train", "TAU_DATA"))),
    ("constraint.anneal_steps", lambda v: v >= 0, "an integer >= 0 (0: no annealing)"),
    ("constraint.tau_gates", *_one_of(_listed(".train", "TAU_GATES"))),
    ("constraint.measure", *_one_of(_listed(".train.step", "MEASURES"))),
    ("constraint.measure_every", lambda v: v >= 1, "an integer >= 1"),
    ("constraint.anneal_from", lambda v: v is None or (math.isfinite(v) and v > 0), "a number > 0 or null"),
    ("data.aside", lambda v: 0 <= v < 0.5, "a share of the training rows in [0, 0.5) (0: none held aside)"),
    ("data.bos", lambda v: v in (True, False, None),
     "true, false or null (null: text rows start with the checkpoint's BOS where its tokenizer adds one)"),
    ("train.steps", lambda v: v >= 0, "an integer >= 0"),
    ("train.final", lambda v: v in ("last", "feasible"), "last or feasible"),
    ("train.feasible_tail", lambda v: v is None or 0 < v <= 1, "a share of the sequences in (0, 1] or null"),
    ("train.feasible_tail_slack", lambda v: math.isfinite(v) and v >= 0, "a number of nats >= 0"),
    ("train.lr", lambda v: math.isfinite(v) and v > 0, "a number > 0"),
    ("train.warmup", lambda v: v >= 0, "an integer >= 0"),
    ("train.schedule", *_one_of(_listed(".train.step", "SCHEDULES"))),
    ("train.lr_final", lambda v: 0 <= v <= 1, "a fraction of train.lr in [0, 1]"),
    ("train.weight_decay", lambda v: math.isfinite(v) and v >= 0, "a number >= 0"),
    ("train.grad_clip", lambda v: math.isfinite(v) and v > 0, "a number > 0"),
    ("train.grad_accum", lambda v: v >= 1, "an integer >= 1"),
    ("train.distill", lambda v: math.isfinite(v) and v >= 0, "a number >= 0"),
    ("train.lora_rank", lambda v: v >= 0, "an integer >= 0"),
    ("train.lora_alpha", lambda v: math.isfinite(v) and v > 0, "a number > 0"),
    ("train.seed", lambda v: 0 <= v < 2**31, "an integer in [0, 2**31)"),
    ("train.log_every", lambda v: v >= 1, "an integer >= 1"),
    ("train.eval_every", lambda v: v >= 0, "an integer >= 0 (0: only at the end)"),
    ("train.checkpoint_every", lambda v: v >= 0, "an integer >= 0 (0: only at the end)"),
    ("train.keep", lambda v: v >= 1, "an integer >= 1"),
    ("train.max_bad_steps", lambda v: v >= 1, "an integer >= 1"),
    ("train.export_shard_mb", lambda v: math.isfinite(v) and v >= 0, "a number of MiB >= 0 (0: one file)"),
    ("mesh.data", lambda v: v >= 1, "an integer >= 1"),
    ("mesh.fsdp", lambda v: v >= 1, "an integer >= 1"),
    ("mesh.tensor", lambda v: v >= 1, "an integer >= 1"),
)


def validate(cfg: RunConfig) -> RunConfig:
    """Check every value's range and the cross-field rules; one error listing every problem."""
    problems = []
    # the shared rules, then every registered controller's option rules (whatever the method, as the keys exist)
    options = [(f"constraint.{name}", ok, what) for name, ok, what in _controllers.option_rules()]
    for key, ok, what in (*_RULES, *options):
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        try:
            good = bool(ok(value))
        except TypeError:
            good = False
        if not good:
            problems.append(f"{key}={value!r} must be {what(value) if callable(what) else what}")
    c, g = cfg.constraint, cfg.gate
    ctrl = _controllers.CONTROLLERS.get(c.method)  # None: an unknown method, refused above
    if ctrl is not None and g.enabled and ctrl.constrains and c.sense in _controllers.SENSES:
        if c.sense == "density" and c.density_target is None:
            problems.append("constraint.sense=density needs constraint.density_target (e.g. 0.01)")
        if c.sense not in ctrl.senses:
            problems.append(f"constraint.sense={c.sense} works with constraint.method="
                            f"{_or(_controllers.supporting(c.sense))}")
    if ctrl is not None and c.guard and g.enabled and not (ctrl.guards and c.sense == "density" and c.anneal_steps):
        problems.append("constraint.guard=true (a guarded density curriculum) needs constraint.method="
                        f"{_or(_controllers.supporting('guards'))}, constraint.sense=density and "
                        "constraint.anneal_steps > 0")
    if c.tau_data in ("batch", "control") and g.enabled:
        ref = "the dense model" if c.tau_data == "batch" else "a dense control"
        if c.tau is not None:
            problems.append(f"constraint.tau={c.tau} fixes the CE target, constraint.tau_data={c.tau_data} measures it "
                            f"on each batch ({ref}'s CE + slack): drop one of the two")
        if c.tau_gates != "dense":
            problems.append(f"constraint.tau_data={c.tau_data} measures {ref} on each batch: set "
                            "constraint.tau_gates=dense")
        if c.sense == "ce" and not c.slack > 0:
            problems.append(f"constraint.tau_data={c.tau_data} targets the gap to {ref} on each batch, "
                            f"constraint.slack={c.slack}: it must be > 0 (e.g. constraint.slack=0.01)")
        if c.sense == "ce" and c.anneal_steps and c.anneal_from is not None and not c.anneal_from > c.slack:
            problems.append(f"constraint.anneal_from={c.anneal_from} must be above constraint.slack={c.slack}: with "
                            f"constraint.tau_data={c.tau_data} the annealed target is the CE gap to {ref}, falling "
                            "from anneal_from to the slack (e.g. constraint.anneal_from=0.1)")
    if cfg.data.aside and g.enabled and not (c.tau_data in ("batch", "control") and c.measure == "deterministic"
                                             and (c.sense == "ce" or c.guard)):
        problems.append(f"data.aside={cfg.data.aside} holds training rows aside to measure the multiplier's CE gap on: "
                        "a gated run needs constraint.tau_data=batch or control, constraint.measure="
                        "deterministic and either constraint.sense=ce or a guarded density curriculum "
                        "(constraint.guard=true) (or data.aside=0; a dense run only never trains on them)")
    if c.tau_data == "control" and g.enabled and (cfg.train.lora_rank > 0 or cfg.train.distill > 0):
        problems.append("constraint.tau_data=control trains a dense control of the whole model beside the sparse one: "
                        "it needs full fine-tuning without distillation (train.lora_rank=0, train.distill=0); "
                        "with LoRA or a teacher use constraint.tau_data=batch")
    annealing = _controllers.supporting("anneals")
    if ctrl is not None and c.anneal_steps and ctrl.constrains and not ctrl.anneals:
        problems.append(f"constraint.anneal_steps works with constraint.method={_or(annealing)}, not {c.method}: set "
                        f"constraint.method={annealing[0]} or constraint.anneal_steps=0")
    if ctrl is not None and c.anneal_steps and c.sense == "ce" and c.anneal_from is None and ctrl.anneals:
        problems.append("constraint.anneal_steps in CE-target mode needs constraint.anneal_from (the CE target to "
                        "start from, e.g. the dense CE)")
    if c.anneal_steps and c.sense == "density" and c.density_target is not None and c.anneal_from is not None \
            and not c.anneal_from > c.density_target:
        problems.append(f"constraint.anneal_from={c.anneal_from} must be above constraint.density_target="
                        f"{c.density_target} (the target falls from one to the other)")
    if g.penalty_floor is not None and g.penalty_knee is not None and not g.penalty_floor < g.penalty_knee:
        problems.append(f"gate.penalty_floor={g.penalty_floor} must be below gate.penalty_knee={g.penalty_knee} (the "
                        "penalty's gradient is 0 under the floor and constant over the knee)")
    if g.noise_anneal + g.noise_zero > 1:
        problems.append(f"gate.noise_anneal={g.noise_anneal} + gate.noise_zero={g.noise_zero} is more than the whole "
                        "run: the two shares of train.steps must sum to at most 1")
    if g.noise_floor and not g.noise_anneal:
        problems.append(f"gate.noise_floor={g.noise_floor} needs gate.noise_anneal > 0 (the steps over which the "
                        "noise falls to it)")
    if g.noise_zero and not g.noise_anneal:
        problems.append(f"gate.noise_zero={g.noise_zero} needs gate.noise_anneal > 0 (the steps over which the noise "
                        "falls to 0 first)")
    if g.noise_recover and not (g.noise_anneal and c.sense == "ce" and c.slack > 0 and ctrl is not None
                                and ctrl.constrains):
        problems.append("gate.noise_recover=true raises an annealed noise while the CE is over tau: it needs "
                        "gate.noise_anneal > 0, constraint.sense=ce, constraint.slack > 0 and a controller with a "
                        f"target (constraint.method={_or(_controllers.supporting('ce'))})")
    if cfg.train.final == "feasible" and not (g.enabled and ctrl is not None and ctrl.constrains
                                               and cfg.train.eval_every > 0):
        problems.append("train.final=feasible picks the last evaluated model meeting the constraint: it needs a "
                        "gated run with a target (constraint.method="
                        f"{_or(_controllers.supporting('ce'))}) and train.eval_every > 0; or set train.final=last "
                        "(model/ the last step's model)")
    if g.noise_anneal and cfg.train.attention == "pallas":
        problems.append("gate.noise_anneal scales the gate noise, which the fused kernel does not: set "
                        "train.attention=chunked (or auto, which picks it) or gate.noise_anneal=0")
    if g.enabled and not g.learnable and g.bias_lr is not None:
        problems.append(f"gate.bias_lr={g.bias_lr} has no effect while gate.learnable=false: set "
                        f"gate.learnable=true (learn the gate bias at that rate) or gate.bias_lr=null")
    if g.bias_max is not None and not g.learnable and g.enabled:
        problems.append(f"gate.bias_max={g.bias_max} bounds a learnt gate bias: set gate.learnable=true or "
                        f"gate.bias_max=null")
    if cfg.data.bos and (cfg.data.backend != "array" or cfg.data.repeat):
        problems.append("data.bos=true (a BOS token first in every row) is built for data.backend=array without "
                        "repeated passages: set data.bos=false, or data.backend=array and data.repeat=0")
    if cfg.data.repeat and cfg.data.kind != "text":
        problems.append(f"data.repeat={cfg.data.repeat} (repeated passages) applies to text data only: set "
                        "data.repeat=0 or data.kind=text")
    problems += _controllers.check_section(c)  # the selected controller's own checks, other controllers' options
    if problems:
        raise ValueError("invalid run config:\n  " + "\n  ".join(problems))
    return cfg


def to_dict(cfg: RunConfig) -> dict:
    return dataclasses.asdict(cfg)


def describe(cfg: RunConfig | None = None) -> list[tuple[str, str, object, str]]:
    """``(key, type, value, what it must be)`` for every key of the run config, in section order, from the
    dataclasses and the rules ``validate`` checks (``sparsejax config PRESET --keys`` prints it)."""
    cfg = cfg if cfg is not None else RunConfig()
    rules = {key: what for key, _, what in _RULES}
    rules.update({f"constraint.{name}": what for name, _, what in _controllers.option_rules()})
    out = []
    for section in dataclasses.fields(cfg):
        obj = getattr(cfg, section.name)
        hints = _hints(type(obj))
        for f in dataclasses.fields(obj):
            key, value = f"{section.name}.{f.name}", getattr(obj, f.name)
            what = rules.get(key, "")
            hint = hints[f.name]
            name = getattr(hint, "__name__", None) if not typing.get_args(hint) else None
            out.append((key, name or str(hint).replace("typing.", ""), value,
                        what(value) if callable(what) else what))
    return out
