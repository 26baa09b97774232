"""Pure step factories: ``train_step(state, frozen, batch, seed)`` and ``eval_step(trainable, frozen, batch)``.

Neither closes over arrays: everything they read is an argument, so ``jax.jit(step).lower(...)`` works from
``jax.ShapeDtypeStruct``s alone (ahead-of-time compilation, memory planning). The optimiser and the multiplier are
optax transformations (functions only).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from .. import controllers, objective, seeds, sharding
from ..config import RunConfig
from ..models import forward
from .state import StepSpec, gate_of, params_of, step_noise, teacher_of


SCHEDULES = ("constant", "cosine", "linear")  # train.schedule: the learning rate after warm-up (lr_schedule)
MEASURES = ("sampled", "deterministic")  # constraint.measure: the gates of the CE the multiplier sees (train_step)


def lr_schedule(lr: float, warmup: int, steps: int, kind: str, final: float):
    """Linear warm-up from 0 over ``warmup`` steps, then constant / cosine / linear decay to ``lr * final``."""
    if kind not in SCHEDULES:
        raise ValueError(f"train.schedule must be {', '.join(map(repr, SCHEDULES[:-1]))} or {SCHEDULES[-1]!r}, "
                         f"got {kind!r}")
    decay_steps = max(steps - warmup, 1)
    after = {"constant": optax.constant_schedule(lr),
             "cosine": optax.cosine_decay_schedule(lr, decay_steps, alpha=final),
             "linear": optax.linear_schedule(lr, lr * final, decay_steps)}[kind]
    if not warmup:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), after], [warmup])


def make_optimizer(cfg: RunConfig) -> optax.GradientTransformation:
    """Clip, then AdamW with the run's schedule; a learnable gate bias may have its own learning rate
    (``gate.bias_lr``, same schedule shape, no weight decay): a dense model's near-uniform heads have logits near 0,
    so their gates only close once the bias itself has moved by ~b, which at the weights' lr takes thousands of
    steps."""
    t = cfg.train
    adam = lambda lr, wd: optax.adamw(lr_schedule(lr, t.warmup, t.steps, t.schedule, t.lr_final), weight_decay=wd)
    inner = adam(t.lr, t.weight_decay)
    if cfg.gate.learnable and cfg.gate.bias_lr is not None:
        label = lambda tree: {k: jax.tree.map(lambda _: "bias" if k == "gate_bias" else "rest", v)
                              for k, v in tree.items()}
        inner = optax.multi_transform({"rest": inner, "bias": adam(cfg.gate.bias_lr, 0.0)}, label)
    opt = optax.chain(optax.clip_by_global_norm(t.grad_clip), inner)
    if cfg.gate.learnable and cfg.gate.bias_max is not None:
        opt = optax.chain(opt, cap_gate_bias(cfg.gate.bias_max))
    return optax.MultiSteps(opt, t.grad_accum) if t.grad_accum > 1 else opt


def cap_gate_bias(cap: float) -> optax.GradientTransformation:
    """The last link of the optimiser under ``gate.bias_max``: the learnt gate bias's update is cut so that the
    bias ends at or under ``cap`` (``min(update, cap - bias)``; a bias above it returns to it in one step). Without
    it a head the model needs under the gate noise raises its bias (the CE's straight-through gradient keeps its
    sampled gates open) until every gate of the head sits where ``sigmoid'`` is ~0, and the density penalty can no
    longer close any of its edges (issue J, seventeenth round)."""
    def update(updates, state, params=None):
        if params is None or "gate_bias" not in updates:
            return updates, state
        return {**updates, "gate_bias": jnp.minimum(updates["gate_bias"], cap - params["gate_bias"])}, state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def make_multiplier(cfg: RunConfig, tau: float | None, target_start: float | None = None,
                    guard_tau: float | None = None):
    """The multiplier transformation of the run: the ``constraint.method`` controller's (None for ``penalty`` /
    ``none`` / dense runs); ``target_start``: where an annealed target starts (``constraint.anneal_from`` or, in
    density mode, the measured density); ``guard_tau``: the CE target of a guarded density curriculum
    (``constraint.guard``)."""
    c = cfg.constraint
    if c.guard and guard_tau is None and cfg.gate.enabled:
        raise ValueError("constraint.guard=true needs the CE target (guard_tau): the Trainer measures it as for "
                         "constraint.sense=ce (constraint.tau, or the dense CE + constraint.slack)")
    controller = controllers.get(c.method)
    if not cfg.gate.enabled:
        return None
    if c.tau_data in ("batch", "control"):  # the measured CE is the gap to the dense model / control on the batch:
        #                                     its target the slack
        tau = c.slack if c.sense == "ce" else tau
        guard_tau = c.slack if guard_tau is not None else None
    t = cfg.train  # the lr over its peak, per multiplier update (pi_ki_follow_lr: the integral's growth follows it)
    lr = lr_schedule(t.lr, t.warmup, t.steps, t.schedule, t.lr_final)
    setup = controllers.Setup(tau=tau, sense=c.sense, slack=c.slack, anneal_steps=c.anneal_steps,
                              target_start=target_start, guard_tau=guard_tau if c.guard else None,
                              lr_over_peak=lambda count: lr(count // t.grad_accum) / t.lr,
                              updates=t.steps * t.grad_accum)
    return controller.transform(controller.options(c), setup)


def _loss(spec: StepSpec, trainable, frozen, batch, seed, weights, noise=None):
    tokens = batch["tokens"]
    gate = gate_of(spec, trainable, frozen, noise)  # the step's noise scale under gate.noise_anneal (step_noise)
    logits, aux = forward(spec.config, params_of(spec, trainable, frozen), tokens[:, :-1], gate, mode="train",
                          seed=seed, implementation=spec.attention)
    ce = objective.cross_entropy(logits, tokens[:, 1:], batch["mask"])
    density = objective.density_penalty(aux) if gate is not None else jnp.zeros(())
    w_ce, w_density = weights
    loss = w_ce * ce + w_density * density
    reference = None  # the dense starting model's CE on the batch, when the teacher's forward runs anyway
    if spec.distill > 0:
        teacher_logits, _ = forward(spec.config, teacher_of(frozen), tokens[:, :-1], implementation=spec.attention)
        loss = loss + spec.distill * objective.distillation_kl(logits, teacher_logits)
        reference = jax.lax.stop_gradient(objective.cross_entropy(teacher_logits, tokens[:, 1:], batch["mask"]))
    # deterministic edge density of this batch per layer and head (counted inside the attention, no T x T array)
    return loss, (ce, density, aux["edge_density"].mean(1), reference)


def _batch_ce(spec: StepSpec, params, batch, gate=None):
    """The batch's CE under ``params`` with ``gate``'s deterministic (eval-mode) gates, or dense (no gradient)."""
    tokens = batch["tokens"]
    logits, _ = forward(spec.config, params, tokens[:, :-1], gate, mode="eval", implementation=spec.attention)
    return jax.lax.stop_gradient(objective.cross_entropy(logits, tokens[:, 1:], batch["mask"]))


def deterministic_ce(spec: StepSpec, trainable, frozen, batch):
    """The batch's CE under the deterministic (eval-mode) gates: the model that is exported (no gradient)."""
    return _batch_ce(spec, params_of(spec, trainable, frozen), batch, gate_of(spec, trainable, frozen))


def reference_ce(spec: StepSpec, frozen, batch):
    """The batch's CE under the dense starting model (``constraint.tau_data=batch``): the frozen teacher, or under
    LoRA the frozen base, gates off (no gradient)."""
    return _batch_ce(spec, teacher_of(frozen), batch)


def _probes(spec: StepSpec) -> bool:
    """Whether the multiplier's input is a CE under the deterministic gates: one more forward when measured."""
    return spec.measure == "deterministic" and (spec.sense == "ce" or spec.guard)


def measurement_forwards(spec: StepSpec) -> float:
    """Forward passes per step, averaged over ``measure_every``, that a constrained step spends on the multiplier's
    input beyond its loss: the deterministic-gate CE and, under ``spec.relative``, the dense reference on the same
    batch unless distillation's teacher forward gives it, and the dense control's step (``tau_data=control``: its
    forward and backward, three forwards) (``plan.analytic_flops`` counts them)."""
    # the dense reference's forward: distillation's teacher forward and the control's training forward are reused,
    # except on held-aside rows (data.aside), where the reference takes its own forward
    relative = spec.relative and (spec.aside or not (spec.distill > 0 or spec.control))
    control = 3.0 if spec.control else 0.0  # tau_data=control: the control's forward and backward, every step
    if _probes(spec):
        return (1 + relative) / spec.measure_every + control
    return float(relative) + control


def make_train_step(spec: StepSpec, optimizer, multiplier):
    """``train_step(state, frozen, batch, seed) -> (state, out)``; a non-finite loss or gradient skips the update
    (``bad_steps`` counts consecutive skips).

    The multiplier's input: in CE mode the batch's CE under the sampled gates (``spec.measure == "sampled"``) or
    under the deterministic gates (``"deterministic"``: one more forward, every ``spec.measure_every`` steps, the
    last value held in ``state["probe_ce"]`` between); in density mode the deterministic edge density of the batch,
    and for a guarded curriculum (``spec.guard``) the CE in the same two modes as the guard. Under ``spec.relative``
    (``constraint.tau_data=batch``) the CE minus the dense starting model's on the same batch (one more forward,
    measured with it; with distillation the teacher's forward in the loss gives it), so that the batches' own spread
    in difficulty does not reach the multiplier. With ``spec.control`` (``constraint.tau_data=control``) the reference
    is a dense control in ``state["control"]``, trained in the same step on the same batch with the same optimiser
    and schedule (its CE is measured before its update, as the sparse model's is), so that the target follows what
    further dense training alone would reach."""
    probe = multiplier is not None and _probes(spec)

    def control_step(state, batch):
        """The dense control's CE on the batch and its updated ``{"params", "opt_state"}``."""
        tokens = batch["tokens"]

        def ce_of(params):
            logits, _ = forward(spec.config, params, tokens[:, :-1], None, mode="train",
                                implementation=spec.attention)
            return objective.cross_entropy(logits, tokens[:, 1:], batch["mask"])

        ctl = state["control"]
        ce, grads = jax.value_and_grad(ce_of)(ctl["params"])
        updates, opt_state = optimizer.update({"params": grads}, ctl["opt_state"], {"params": ctl["params"]})
        params = optax.apply_updates({"params": ctl["params"]}, updates)["params"]
        finite = jnp.isfinite(ce) & jnp.all(jnp.stack([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
        return jax.lax.stop_gradient(ce), {"params": params, "opt_state": opt_state}, finite

    def measured_ce(state, frozen, batch, sampled_ce, reference):
        # tau_data=batch: minus the dense starting model's CE on the batch (the distillation teacher's, when the
        # loss computed it; else one more forward); tau_data=control: minus the control's (before its update)
        ref = (lambda: reference) if reference is not None else (lambda: reference_ce(spec, frozen, batch))
        if spec.aside:  # data.aside: both measured on the step's held-aside rows instead (config.py allows it only
            #             with measure=deterministic and a relative target), each when measured
            batch = {"tokens": batch["aside_tokens"], "mask": batch["aside_mask"]}
            ref = ((lambda: _batch_ce(spec, state["control"]["params"], batch)) if spec.control else
                   (lambda: reference_ce(spec, frozen, batch)))
        gap = (lambda ce: ce - ref()) if spec.relative else (lambda ce: ce)
        if not probe:
            return gap(sampled_ce), {}
        det = lambda: gap(deterministic_ce(spec, state["trainable"], frozen, batch))
        if spec.measure_every == 1:
            return det(), {}
        value = jax.lax.cond(state["step"] % spec.measure_every == 0, det, lambda: state["probe_ce"])
        return value, {"probe_ce": value}

    def train_step(state, frozen, batch, seed):
        violation = None
        if multiplier is None:
            weights = (jnp.ones(()), jnp.asarray(spec.beta, jnp.float32))
        else:
            weights = controllers.loss_weights(state["mult_state"])
            if spec.noise_recover is not None:
                violation = jax.lax.stop_gradient(controllers.metrics(state["mult_state"])["violation"])
        noise = step_noise(spec, state["step"], violation)
        (loss, (ce, density, edges, reference)), grads = jax.value_and_grad(
            lambda t: _loss(spec, t, frozen, batch, seed, weights, noise), has_aux=True)(state["trainable"])
        finite = jnp.isfinite(loss) & jnp.all(jnp.stack([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
        if spec.control:  # the dense control's step; its CE before the update is the reference
            reference, control, control_finite = control_step(state, batch)
            finite = finite & control_finite
        updates, opt_state = optimizer.update(grads, state["opt_state"], state["trainable"])
        trainable = optax.apply_updates(state["trainable"], updates)
        mult_state, held = state["mult_state"], {}
        if multiplier is not None:
            measured, held = measured_ce(state, frozen, batch, ce, reference)
            if spec.sense == "ce":
                _, mult_state = multiplier.update(None, mult_state, constraint=measured)
            else:
                guard = {"guard": measured} if spec.guard else {}
                _, mult_state = multiplier.update(None, mult_state, constraint=edges.mean(), **guard)
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)  # skip bad steps
        bad = jnp.where(finite, 0, state["bad_steps"] + 1)
        new = {"trainable": keep(trainable, state["trainable"]), "opt_state": keep(opt_state, state["opt_state"]),
               "mult_state": keep(mult_state, state["mult_state"]), "step": state["step"] + 1, "bad_steps": bad,
               "total_bad_steps": state["total_bad_steps"] + (~finite).astype(jnp.int32), **held}
        if spec.control:
            new["control"] = keep(control, state["control"])
        out = {"loss": loss, "ce": ce, "density": density, "edges": edges, "bad_steps": bad,
               "total_bad_steps": new["total_bad_steps"]}
        if noise is not None:
            out["noise_scale"] = noise
        if "gate_bias" in new["trainable"]:  # a learnt gate bias: its largest entry (gate.bias_max bounds it)
            out["gate_bias_max"] = new["trainable"]["gate_bias"].max()
        if spec.control:
            out["control_ce"] = reference  # the dense control's CE on this batch
        if multiplier is not None:
            out.update(controllers.metrics(mult_state))
            if probe or spec.relative:
                out["measured_ce"] = measured  # the multiplier's input (tau_data=batch: the gap to the dense model)
        return new, out

    def sharded_train_step(state, frozen, batch, seed):  # activations placed by the logical-axis rules
        with sharding.use_rules(spec.rules):
            return train_step(state, frozen, batch, seed)

    return sharded_train_step


def make_eval_step(spec: StepSpec, *, dense: bool = False, sampled: bool = False):
    """``eval_step(trainable, frozen, batch) -> {"ce", "sequence_ce" [B], "edge_counts" [L, H] int32}`` in eval
    mode: the batch's masked CE, each row's (sorted, whole on every device: the tail of the per-sequence loss,
    ``train.feasible_tail``) and the number of deterministic edges per layer and head summed over the batch (on
    device).
    ``sampled``: the CE under sampled (training-mode) gates instead, noise seed 0 (``constraint.tau_gates``); its
    edge counts are those of the sampled gates."""

    def eval_step(trainable, frozen, batch):
        tokens = batch["tokens"][:, :-1]
        gate = None if dense else gate_of(spec, trainable, frozen)
        mode = "train" if sampled and gate is not None else "eval"
        seed = seeds.sampled_eval_noise() if mode == "train" else None
        logits, aux = forward(spec.config, params_of(spec, trainable, frozen), tokens, gate, mode=mode, seed=seed,
                              implementation=spec.attention)
        ce = objective.cross_entropy(logits, batch["tokens"][:, 1:], batch["mask"])
        rows = sharding.replicate(jnp.sort(objective.sequence_cross_entropy(logits, batch["tokens"][:, 1:],
                                                                            batch["mask"])))
        t = tokens.shape[1]
        pairs = t * (t + 1) // 2
        counts = jnp.round(aux["edge_density"] * pairs).astype(jnp.int32).sum(1)  # exact: counts < 2**24
        return {"ce": ce, "sequence_ce": rows, "edge_counts": counts}

    def sharded_eval_step(trainable, frozen, batch):
        with sharding.use_rules(spec.rules):
            return eval_step(trainable, frozen, batch)

    return sharded_eval_step
