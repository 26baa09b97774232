"""Hooks: what the host loop does between steps, as an ordered list of named hooks the trainer owns.

A hook is a function ``fn(info)`` called after every ``every``-th step (steps ``every``, ``2 * every``, ...;
``every=0``: never during the loop; ``last=True``: also after the run's last step), with a :class:`StepInfo`. A
hook that keeps state across a fit subclasses :class:`Callback`: ``on_start(info)`` once per ``fit`` before the
first step, ``on_step(info)`` on its steps, ``on_end(info)`` once per ``fit`` after the loop (also when there was
no step left to run). Hooks run in order, every process of a multi-process run runs them all (collectives inside
evaluation, checkpointing and export need every process).

The loop's own work is five hooks (six with ``train.final=feasible``), registered in this order by :func:`default_hooks` (the order the loop did it
in before it had hooks, so the files are the same; the one change of timing: at the end the final record is logged
before ``best`` looks at the final evaluation, where it was logged just after):

| name | every | ``on_step`` / ``on_start``, ``on_end`` |
|---|---|---|
| ``log`` | ``train.log_every`` + last | the training record (:class:`~sparsejax.train.records.TrainRecord`) |
| ``evaluate`` | ``train.eval_every`` | an evaluation record (not at the last step) / the start record, the final one |
| ``best`` | 1 (acts on evaluations) | ``best_model/``, ``best.json`` if sparsest with ``CE <= tau`` (density mode: lowest CE under the target) / the same, final |
| ``select`` | 1 (acts on evaluations; only with ``train.final=feasible``) | ``feasible_model/``, ``feasible.json`` if it meets the constraint on training batches / the same, final |
| ``checkpoint`` | ``train.checkpoint_every`` | an orbax checkpoint / one of the last step if there is none |
| ``export`` | 0 | / ``model/`` |

``trainer.add_hook(fn, every=N)`` appends one (``before="checkpoint"`` inserts it), ``trainer.remove_hook(name)``
takes one out, ``trainer.hooks["evaluate"].every = 50`` changes a cadence.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import time
from typing import TYPE_CHECKING, Any, Callable

import jax
import numpy as np

from .. import controllers
from ..files import atomic_directory, atomic_write_text
from . import checkpointing
from .records import EvalRecord, FinalRecord, Record, StartRecord, TrainRecord

if TYPE_CHECKING:
    from . import Trainer

__all__ = ["Callback", "Hook", "Hooks", "StepInfo", "default_hooks", "train_record"]


@dataclasses.dataclass
class StepInfo:
    """What a hook sees: the trainer (its ``state``, ``evaluate()``, ``export()``, ``dir``), the number of steps
    done, and, after a step, that step's outputs. One object is shared by the hooks of one step, so a hook sees
    what an earlier one left (``evaluation``)."""

    trainer: "Trainer"
    step: int                            # steps done (the train state's step counter)
    log: Callable[[Record], None]        # send a record to every tracker (metrics.jsonl, TensorBoard, yours)
    last: bool = False                   # step == cfg.train.steps (also set in on_end)
    outputs: dict | None = None          # the step's outputs (device arrays: loss, ce, density, edges, ...);
    #                                      None in on_start / on_end
    evaluation: EvalRecord | None = None  # the held-out evaluation made at this step (the "evaluate" hook)
    resumed: int | None = None           # the checkpoint step this fit resumed from (None: a fresh start)
    checkpoints: Any = None              # this fit's orbax CheckpointManager (checkpointing.py)

    @property
    def state(self) -> dict:
        return self.trainer.state

    @property
    def cfg(self):
        return self.trainer.cfg


class Callback:
    """A hook with a start and an end: override what you need (each is a no-op here)."""

    def on_start(self, info: StepInfo) -> None:
        pass

    def on_step(self, info: StepInfo) -> None:
        pass

    def on_end(self, info: StepInfo) -> None:
        pass


@dataclasses.dataclass
class Hook:
    """A registered hook: its name, the function or :class:`Callback`, its cadence."""

    name: str
    fn: Callable[[StepInfo], None] | Callback
    every: int = 1       # after steps every, 2 * every, ...; 0: never during the loop
    last: bool = False   # also after the run's last step

    def due(self, info: StepInfo) -> bool:
        return bool(self.every and info.step % self.every == 0) or (self.last and info.last)

    def _call(self, method: str, info: StepInfo) -> None:
        if isinstance(self.fn, Callback) or hasattr(self.fn, "on_step"):
            f = getattr(self.fn, method, None)
            if f is not None:
                f(info)
        elif method == "on_step":
            self.fn(info)


class Hooks:
    """The ordered, named hooks of a trainer."""

    def __init__(self, hooks=()):
        self._hooks: list[Hook] = []
        for h in hooks:
            self._insert(h, None)

    def add(self, fn, every: int = 1, *, name: str | None = None, last: bool = False,
            before: str | None = None) -> Hook:
        """Register ``fn`` (a function ``fn(info)`` or a :class:`Callback`) to run after every ``every``-th step
        (and after the last step when ``last``); appended, or inserted before the hook named ``before``. ``name``:
        default the function's (or the callback's class) name; names are unique. ``fn`` may be a :class:`Hook`
        (one taken out with :meth:`remove`): put back as it was."""
        if isinstance(fn, Hook):
            return self._insert(fn, before)
        if isinstance(every, bool) or not isinstance(every, int) or every < 0:
            raise ValueError(f"every must be an integer >= 0 (0: never during the loop), got {every!r}")
        if name is None:
            name = getattr(fn, "__name__", None) or type(fn).__name__
        return self._insert(Hook(name, fn, every, last), before)

    def _insert(self, hook: Hook, before: str | None) -> Hook:
        if hook.name in self:
            raise ValueError(f"a hook named {hook.name!r} is already registered ({', '.join(self.names())}); pass "
                             "another name= or remove it first")
        at = len(self._hooks) if before is None else self.names().index(self[before].name)
        self._hooks.insert(at, hook)
        return hook

    def remove(self, name: str) -> Hook:
        """Take the hook named ``name`` out (returned, to add back later)."""
        hook = self[name]
        self._hooks.remove(hook)
        return hook

    def names(self) -> list[str]:
        return [h.name for h in self._hooks]

    def __getitem__(self, name: str) -> Hook:
        for h in self._hooks:
            if h.name == name:
                return h
        raise KeyError(f"no hook named {name!r}; the hooks are {', '.join(self.names()) or '(none)'}")

    def __contains__(self, name: str) -> bool:
        return any(h.name == name for h in self._hooks)

    def __iter__(self):
        return iter(list(self._hooks))

    def __len__(self) -> int:
        return len(self._hooks)

    def __repr__(self) -> str:
        return "Hooks(" + ", ".join(f"{h.name}@{h.every}{'+last' if h.last else ''}" for h in self._hooks) + ")"

    # the loop calls these
    def start(self, info: StepInfo) -> None:
        for h in self:
            h._call("on_start", info)

    def step(self, info: StepInfo) -> None:
        for h in self:
            if h.due(info):
                h._call("on_step", info)

    def end(self, info: StepInfo) -> None:
        for h in self:
            h._call("on_end", info)


# ------------------------------------------------------------------------------------------------ the defaults
def train_record(run: "Trainer", out: dict, step: int, tokens_per_s: float) -> TrainRecord:
    """The training record of a step's outputs: loss, CE, expected density, throughput, skipped steps, the batch's
    deterministic edge density (gated runs), then what the controller logs under its names."""
    out = jax.device_get(out)
    edges = {}
    if run.spec.gate is not None:  # deterministic edge density of this training batch (counted on device)
        per_layer = np.asarray(out["edges"]).mean(1)
        edges = dict(train_edge_density=float(per_layer.mean()), train_edge_density_per_layer=per_layer.tolist())
    # what the controller logs, under its names (in density mode the estimate and the target are the density's),
    # then measured_ce: the CE the multiplier saw (constraint.measure=deterministic), then what a guarded curriculum
    # adds (its CE's EMA, where its annealed target stands)
    logged = controllers.get(run.cfg.constraint.method).record_names
    names = {**logged(run.spec.sense, False), "measured_ce": "measured_ce", **logged(run.spec.sense, run.spec.guard),
             "noise_scale": "noise_scale",  # gate.noise_anneal: the gate noise's scale at this step
             "control_ce": "control_ce",  # constraint.tau_data=control: the dense control's CE on the batch
             "gate_bias_max": "gate_bias_max"}  # gate.learnable: the largest learnt gate bias after the step
    extra = {}
    for k, name in names.items():
        if k in out:
            extra[name] = float(out[k])
    return TrainRecord(step=step, loss=float(out["loss"]), ce=float(out["ce"]),
                       expected_density=float(out["density"]), tokens_per_s=tokens_per_s,
                       skipped_steps=int(out["total_bad_steps"]), **edges, extra=extra)


class LogTraining(Callback):
    """``log``: the training record of the step, with the tokens per second since the previous one."""

    def on_start(self, info):
        self.t0, self.since = time.perf_counter(), info.step

    def on_step(self, info):
        run = info.trainer
        now = time.perf_counter()
        tokens_per_step = run.cfg.data.batch_size * run.train_src.seq_len
        rec = train_record(run, info.outputs, info.step, tokens_per_step * (info.step - self.since) /
                           max(now - self.t0, 1e-9))
        self.t0, self.since = now, info.step
        info.log(rec)


class Evaluate(Callback):
    """``evaluate``: held-out CE and edge density; the start record before a gated run's first step, an evaluation
    record on its steps (not the last: the final evaluation follows the loop), the final record at the end."""

    def on_start(self, info):
        run = info.trainer
        if info.resumed is None and run.spec.gate is not None:  # the starting point: gated and dense held-out CE
            info.log(StartRecord.from_dict({"step": 0, **run.evaluate(),
                                            "dense_eval_ce": run.evaluate(dense=True)["eval_ce"]}))

    @staticmethod
    def held_out(run) -> dict:
        """The held-out evaluation; with a dense control (``constraint.tau_data=control``) also its CE and, in CE
        mode, the held-out target at this evaluation, ``eval_tau``: the control's CE + the slack (what
        ``best_model/`` and the notice of a missed target compare the held-out CE with)."""
        if not run.spec.control:
            return run.evaluate()
        control = run.evaluate({"params": run.state["control"]["params"]}, dense=True)["eval_ce"]
        c = run.cfg.constraint
        target = {"eval_tau": control + c.slack} if c.sense == "ce" and run.tau is not None else {}
        return {**run.evaluate(), "control_eval_ce": control, **target}

    def on_step(self, info):
        if info.last:
            return
        info.evaluation = EvalRecord.from_dict({"step": info.step, **self.held_out(info.trainer)})
        info.log(info.evaluation)

    def on_end(self, info):
        run = info.trainer
        final = {"step": int(run.state["step"]), **self.held_out(run)}
        if run.tau is not None:
            final["tau"] = float(run.tau)
        if run.eval_tau != run.tau:  # tau_data=train: the held-out target beside the training batches' one
            final["eval_tau"] = float(run.eval_tau)
        info.evaluation = EvalRecord.from_dict(final)  # what fit() returns and best.json keeps (no "final" key)
        info.log(FinalRecord.from_dict({**final, "final": True}))


class KeepBest(Callback):
    """``best``: keep the evaluation of this step (or the final one) when it is the sparsest meeting
    ``CE <= tau`` so far (density-target mode: the lowest CE at density <= the target), as ``best_model/`` and
    ``best.json``. Runs every step and acts where a hook before it left
    an evaluation (``info.evaluation``), so it follows the ``evaluate`` hook's cadence, whatever it is."""

    def on_step(self, info):
        if info.evaluation is not None:
            checkpointing.keep_best(info.trainer.dir, info.evaluation, info.trainer.eval_tau, info.trainer.export,
                                     info.trainer.cfg.constraint.sense)

    on_end = on_step


class SelectFeasible(Callback):
    """``select`` (``train.final=feasible``): at each evaluation (and the final one) the model's CE and edge density
    on ``data.eval_batches`` training batches (one fixed draw); when it meets the constraint there — CE <= the dense
    model's CE on the same batches + ``constraint.slack`` (or ``constraint.tau`` when given); density mode: density
    <= the target; with ``train.feasible_tail``, also the tail: the mean CE of that share of the sequences with the
    highest CE <= the dense model's tail on the same batches + ``train.feasible_tail_slack`` — it is kept as
    ``feasible_model/`` with ``feasible.json`` (its training-batch numbers and its held-out evaluation), and the
    ``export`` hook makes the last one kept ``model/``: the final model, or, when a late step broke the constraint,
    the last evaluated model before that still met it. Held-out data never decides, so the chosen model's held-out
    numbers are a fair measurement of the run's output. (The latest, not the sparsest: the sparsest model that
    passes on a few hundred training rows is the one nearest the edge, and passes partly by chance;
    docs/controllers.md, fourteenth round. The tail: a toy model that loses a whole class of problems moves the
    mean CE by about the slack but its tail by 10-100x; the fifteenth round.)"""

    def on_start(self, info):
        run = info.trainer
        c, self.share = run.cfg.constraint, run.cfg.train.feasible_tail
        dense = run.evaluate(dense=True, src=run.train_src, tail=self.share)  # the batches the choice is made on
        self.tau = float(run.tau) if c.sense == "density" or c.tau is not None else dense["eval_ce"] + c.slack
        self.tail_tau = None if self.share is None else dense["tail_ce"] + run.cfg.train.feasible_tail_slack

    def on_step(self, info):
        if info.evaluation is None:
            return
        run = info.trainer
        train = run.evaluate(src=run.train_src, tail=self.share)
        if checkpointing.overshoot(train, self.tau, run.cfg.constraint.sense) > 0:
            return
        if self.share is not None and train["tail_ce"] > self.tail_tau:
            return
        run.export(run.dir.feasible_model)
        from ..distributed import is_main

        if is_main():
            ev = info.evaluation
            tail = {} if self.share is None else {"tail_share": self.share, "tail_tau": self.tail_tau,
                                                  "train_tail_ce": train["tail_ce"]}
            atomic_write_text(run.dir.feasible, json.dumps(
                {"step": ev["step"], "tau": self.tau, "train_eval_ce": train["eval_ce"],
                 "train_edge_density": train["edge_density"], **tail, "eval_ce": ev["eval_ce"],
                 "edge_density": ev["edge_density"]}))

    on_end = on_step


class Checkpoint(Callback):
    """``checkpoint``: an orbax checkpoint of the train state; at the end, one of the last step if not saved."""

    def on_step(self, info):
        checkpointing.save(info.checkpoints, info.step, info.trainer.state)

    def on_end(self, info):
        step = int(info.trainer.state["step"])
        if step not in (info.checkpoints.all_steps() or []):
            checkpointing.save(info.checkpoints, step, info.trainer.state)


class Export(Callback):
    """``export``: the final model as a Hugging Face directory, ``model/`` (``train.final=feasible``: a copy of
    ``feasible_model/``, or the last model when no evaluation met the constraint on the training batches); with
    ``constraint.tau_data=control`` also the dense control as ``control_model/``."""

    def on_end(self, info):
        run = info.trainer
        if run.spec.control:
            checkpointing.export(run.config, run.state["control"]["params"], None, run.dir.control_model,
                                 tokenizer=run.tokenizer)
        if run.cfg.train.final == "feasible" and run.dir.feasible_model.exists():
            from ..distributed import is_main

            if is_main():
                atomic_directory(run.dir.model, lambda tmp: shutil.copytree(run.dir.feasible_model, tmp,
                                                                             dirs_exist_ok=True))
            return
        run.export(run.dir.model)


def default_hooks(cfg) -> Hooks:
    """The loop's work as hooks, in its order, at the cadences of ``cfg.train`` (read once, here)."""
    t = cfg.train
    return Hooks([Hook("log", LogTraining(), t.log_every, last=True),
                  Hook("evaluate", Evaluate(), t.eval_every),
                  Hook("best", KeepBest(), 1),
                  *([Hook("select", SelectFeasible(), 1)] if t.final == "feasible" else []),
                  Hook("checkpoint", Checkpoint(), t.checkpoint_every),
                  Hook("export", Export(), 0)])
