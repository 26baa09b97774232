"""What a run trains: model, gate, the train state (built from weights or from shapes alone), shardings (the data:
``data.py``).

The train state is a pytree ``{"trainable", "opt_state", "mult_state", "step", "bad_steps", "total_bad_steps"}``
(with ``constraint.tau_data=control`` also ``"control": {"params", "opt_state"}``, the dense control trained beside);
the frozen arrays a step reads but never changes (the LoRA base, the distillation teacher, a fixed gate bias) are a
separate pytree, so that the step can donate the state and still be lowered from ``jax.ShapeDtypeStruct``s.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from .. import seeds, sharding
from ..checkpoints import Model, from_pretrained
from ..config import RunConfig, model_config
from ..gates import Gate
from ..models import ModelConfig, init_params
from .data import build_data  # noqa: F401  (moved to data.py; kept importable from here)


@dataclasses.dataclass(frozen=True)
class StepSpec:
    """The static description of a training/eval step (hashable; no arrays)."""

    config: ModelConfig
    gate: Gate | None = None          # the gate's static part (bias=None); None = dense
    lora_alpha: float | None = None   # None = full fine-tuning
    distill: float = 0.0
    sense: str = "ce"                 # what the multiplier constrains: "ce" or "density"
    measure: str = "deterministic"    # the CE the multiplier sees: under "sampled" or "deterministic" gates
    measure_every: int = 1            # deterministic: measured every this many steps (held between)
    guard: bool = False               # density mode: the annealed target waits while the measured CE is over tau
    relative: bool = False            # the measured CE minus the dense starting model's on the batch (tau_data=batch)
    control: bool = False             # ... minus a dense control's, trained in the same step (tau_data=control)
    aside: bool = False               # both measured on held-aside rows the batch carries (data.aside)
    beta: float = 0.0                 # fixed density weight when there is no multiplier (penalty mode)
    attention: str = "auto"           # sparse_attention implementation (auto | chunked | pallas | reference)
    noise_anneal: tuple[int, int] | None = None  # (first step, steps): the gate noise's scale 1 -> 0 (noise_steps)
    noise_recover: float | None = None  # the slack: the scale is at least the multiplier's violation over it
    noise_floor: float = 0.0          # the scale the annealing ends at (gate.noise_floor)
    rules: tuple = sharding.DEFAULT_RULES  # logical axis -> mesh axes, for parameters and activations


def params_of(spec: StepSpec, trainable: dict, frozen: dict, *, merged: bool = False) -> dict:
    """The model's parameters: the trained ones, or the frozen base with the LoRA adapters attached beside their
    kernels (the forward's low-rank branch: no gradient of the frozen kernels is formed) or, ``merged``, folded into
    them (a plain parameter tree, for export)."""
    if spec.lora_alpha is None:
        return trainable["params"]
    from .. import lora

    return (lora.merge if merged else lora.attach)(frozen["base"], trainable["lora"], spec.lora_alpha)


def teacher_of(frozen: dict) -> dict:
    """The frozen dense starting model: the distillation teacher and the reference of ``constraint.tau_data=batch``
    (under LoRA the frozen base)."""
    return frozen["teacher"] if "teacher" in frozen else frozen["base"]


def gate_of(spec: StepSpec, trainable: dict, frozen: dict, noise=None) -> Gate | None:
    """The gate of the step: the static part with the (trained or frozen) bias and the scale of its noise
    (``noise``: the training step's, :func:`step_noise`; ``None``: the full noise)."""
    if spec.gate is None:
        return None
    bias = trainable["gate_bias"] if "gate_bias" in trainable else frozen["gate_bias"]
    return dataclasses.replace(spec.gate, bias=bias, noise=noise)


def step_noise(spec: StepSpec, step, violation=None):
    """The gate noise's scale at training ``step`` under ``spec.noise_anneal`` (:func:`noise_scale`; under
    ``spec.noise_recover`` at least the multiplier's ``violation`` over the slack); ``None`` without annealing."""
    if spec.noise_anneal is None:
        return None
    scale = noise_scale(spec.noise_anneal, step, spec.noise_floor)
    if spec.noise_recover is not None and violation is not None:
        scale = recovered_noise(scale, violation, spec.noise_recover)
    return scale


def recovered_noise(scale, violation, slack: float):
    """``gate.noise_recover``: the annealed ``scale``, or more while the CE is over its target: ``violation``
    (the controller's CE estimate minus tau) over ``slack``, clipped to [0, 1]."""
    return jnp.maximum(scale, jnp.clip(jnp.asarray(violation, jnp.float32) / slack, 0.0, 1.0))


def noise_steps(cfg: RunConfig) -> tuple[int, int]:
    """``(first step, steps)`` of the noise annealing: ``gate.noise_anneal`` and ``gate.noise_zero`` are shares of
    ``train.steps`` (rounded; at least one step of annealing)."""
    n = cfg.train.steps
    zero = round(cfg.gate.noise_zero * n)
    length = min(max(1, round(cfg.gate.noise_anneal * n)), n - zero)
    return n - zero - length, length


def noise_scale(anneal: tuple[int, int], step, floor: float = 0.0):
    """The gate noise's scale at training ``step`` (0-based, traced): 1 until ``anneal = (first, length)``'s first
    step, then linearly down to ``floor`` at step ``first + length - 1`` and ``floor`` after it (``gate.noise_zero``
    steps): at ``floor`` 0 those updates train the deterministic gates."""
    first, length = anneal
    done = (jnp.asarray(step, jnp.float32) - first + 1.0) / float(length)
    return floor + (1.0 - floor) * jnp.clip(1.0 - done, 0.0, 1.0)


# ------------------------------------------------------------------------------------------------ model
def build_model(cfg: RunConfig, mesh=None, rules=None) -> Model:
    """The checkpoint (``model.checkpoint``; only dtype/remat apply; streamed onto ``mesh`` by the logical-axis
    ``rules`` when given) or a fresh model of ``model.family``."""
    m = cfg.model
    if m.checkpoint is not None:
        model = from_pretrained(m.checkpoint, mesh=mesh, rules=rules)
        model.config = model.config.replace(dtype=m.dtype, remat=m.remat)
        return model
    config = model_config(m)
    return Model(config, init_params(config, seeds.params_key(cfg.train.seed)))


def check_data_fits(cfg: RunConfig, config: ModelConfig, train_src, val_src, tokenizer):
    from ..data import addition

    vocab_needed = addition.vocab(bool(cfg.data.bos)) if tokenizer is None else tokenizer.get_vocab_size()
    fixed = cfg.model.checkpoint is not None
    if vocab_needed > config.vocab_size:
        if tokenizer is None:  # the addition task
            with_bos = " with data.bos=true" * bool(cfg.data.bos)
            fix = (f"set model.vocab_size={vocab_needed}" if not fixed else
                   "a model trained without the BOS token cannot read it: set data.bos=false" if with_bos else
                   "use a model trained on the addition task")
            raise ValueError(f"the addition task{with_bos} has {vocab_needed} tokens but the model's embedding has "
                             f"{config.vocab_size}; {fix}")
        fix = (f"use the checkpoint's own tokenizer (data.tokenizer=...) or one with <= {config.vocab_size} tokens"
               if fixed else f"set model.vocab_size >= {vocab_needed} or data.bpe_vocab <= {config.vocab_size}")
        raise ValueError(f"the tokenizer has {vocab_needed} tokens but the model's embedding has "
                         f"{config.vocab_size}; {fix}")
    seq = train_src.seq_len
    if seq > config.max_position:
        fix = "lower data.seq_len" if fixed else "lower data.seq_len or raise model.max_position"
        raise ValueError(f"data.seq_len={seq} is longer than the model's max_position={config.max_position}; {fix}")
    for name, src in (("training", train_src), ("validation", val_src)):
        if len(src) < cfg.data.batch_size:
            raise ValueError(f"the {name} data has {len(src)} rows, fewer than one batch of {cfg.data.batch_size}; "
                             "use a smaller data.batch_size or more data")


# ------------------------------------------------------------------------------------------------ gate & state
_BIAS_SHAPES = {"model": lambda c: (), "layer": lambda c: (c.n_layers,), "head": lambda c: (c.n_layers, c.n_heads)}
GATE_PER = tuple(_BIAS_SHAPES)  # gate.per: one gate bias for the model, one per layer or one per head


def gate_bias_init(cfg: RunConfig, config: ModelConfig):
    if cfg.gate.per not in _BIAS_SHAPES:
        raise ValueError(f"gate.per must be {', '.join(map(repr, GATE_PER[:-1]))} or {GATE_PER[-1]!r}, got "
                         f"{cfg.gate.per!r}")
    shape = _BIAS_SHAPES[cfg.gate.per](config)
    return jnp.full(shape, cfg.gate.bias, jnp.float32)


def step_spec(cfg: RunConfig, model: Model) -> StepSpec:
    g = cfg.gate
    gate = None
    if g.enabled:
        # a checkpoint's own gate (sparsejax_gate.json) wins over the config's kind
        gate = dataclasses.replace(model.gate, bias=None, penalty_knee=g.penalty_knee, penalty_floor=g.penalty_floor,
                                   shared_noise=g.shared_noise) if model.gate is not None \
            else Gate(None, kind=g.kind, temperature=g.temperature, stretch=tuple(g.stretch),
                      penalty_knee=g.penalty_knee, penalty_floor=g.penalty_floor, shared_noise=g.shared_noise)
    beta = cfg.constraint.beta_init if g.enabled else 0.0
    return StepSpec(config=model.config, gate=gate,
                    lora_alpha=cfg.train.lora_alpha if cfg.train.lora_rank > 0 else None,
                    distill=cfg.train.distill, sense=cfg.constraint.sense, measure=cfg.constraint.measure,
                measure_every=cfg.constraint.measure_every, guard=cfg.constraint.guard, beta=beta,
                    relative=g.enabled and cfg.constraint.tau_data in ("batch", "control"),
                    control=g.enabled and cfg.constraint.tau_data == "control",
                    aside=g.enabled and cfg.data.aside > 0,
                attention=cfg.train.attention,
                    noise_anneal=noise_steps(cfg) if g.enabled and g.noise_anneal else None,
                    noise_recover=cfg.constraint.slack if g.enabled and g.noise_recover else None,
                    noise_floor=g.noise_floor, rules=sharding.parse_rules(cfg.mesh.rules))


def split_params(cfg: RunConfig, spec: StepSpec, model: Model) -> tuple[dict, dict]:
    """``(trainable, frozen)`` initial pytrees from a loaded model."""
    t = cfg.train
    frozen = {}
    if spec.lora_alpha is not None:  # LoRA: the base weights are frozen, only the adapters (and maybe the bias) train
        from .. import lora

        frozen["base"] = model.params
        trainable = {"lora": lora.init_lora(model.params, t.lora_modules, t.lora_rank, seeds.lora_key(t.seed))}
    else:
        trainable = {"params": model.params}
    if spec.gate is not None:
        bias = model.gate.bias if model.gate is not None else gate_bias_init(cfg, model.config)
        (trainable if cfg.gate.learnable else frozen)["gate_bias"] = jnp.asarray(bias, jnp.float32)
    if (spec.distill > 0 or (spec.relative and not spec.control)) and spec.lora_alpha is None:
        # the frozen dense teacher (distillation; the reference of tau_data=batch): its own buffers (the trainable
        # ones are donated to each step). Under LoRA the frozen base *is* the dense teacher, so the step reads
        # frozen["base"] and no copy is made.
        frozen["teacher"] = jax.tree.map(lambda x: jnp.array(x, copy=True), model.params)
    return trainable, frozen


def holds_probe(spec: StepSpec, multiplier) -> bool:
    """Whether the state carries ``probe_ce``: the last deterministic CE, measured every ``measure_every`` steps."""
    return (multiplier is not None and spec.measure == "deterministic" and spec.measure_every > 1
            and (spec.sense == "ce" or spec.guard))


def init_state(trainable: dict, optimizer, multiplier, probe: bool = False, control: bool = False) -> dict:
    """The train state; ``control`` (``constraint.tau_data=control``): with a dense control that starts as a copy of
    ``trainable["params"]`` (its own buffers) under an optimiser state of its own."""
    zero = lambda: jnp.zeros((), jnp.int32)  # separate buffers: the state is donated to each step
    state = {"trainable": trainable, "opt_state": optimizer.init(trainable),
             "mult_state": multiplier.init(None) if multiplier is not None else {},
             "step": zero(), "bad_steps": zero(), "total_bad_steps": zero()}
    if probe:
        state["probe_ce"] = jnp.zeros((), jnp.float32)
    if control:
        params = jax.tree.map(lambda x: jnp.array(x, copy=True), trainable["params"])
        state["control"] = {"params": params, "opt_state": optimizer.init({"params": params})}
    return state


def abstract_state(trainable_shapes: dict, optimizer, multiplier, probe: bool = False, control: bool = False) -> dict:
    """The train state as ``jax.ShapeDtypeStruct``s, from the shapes of the trainable tree alone."""
    return jax.eval_shape(lambda t: init_state(t, optimizer, multiplier, probe, control), trainable_shapes)

