"""The (post-)training package: data -> model + gates -> objective -> constrained optimiser -> checkpoints.

``Trainer(cfg, run_dir).fit()`` runs ``cfg.train.steps`` steps of one jitted, pure step (``step.py``) on a
(data, fsdp, tensor) mesh, resuming from the newest orbax checkpoint in ``run_dir/checkpoints`` if there is one.
Pretraining is the same loop with ``gate.enabled=False`` and ``constraint.method="none"``. Writes
``run_dir/metrics.jsonl``, ``config.yaml``, ``tensorboard/``, ``model/`` (a Hugging Face directory, plus
``sparsejax_gate.json`` when gated), ``best_model/`` + ``best.json`` (the sparsest evaluated model meeting
``CE <= tau``) and, for text, the tokenizer; every name from ``rundir.RunDir``.

What happens between steps is the trainer's hooks (``trainer.add_hook(fn, every=N)``; logging, evaluation, the
best-feasible copy, checkpoints and export are the default ones), and where the records go its trackers
(``Trainer(..., trackers=[...])``; ``metrics.jsonl`` and TensorBoard by default).

Files: ``state.py`` (model, gate, train state from weights or shapes), ``data.py`` (the configured data),
``step.py`` (pure train/eval steps, optimiser, multiplier), ``loop.py`` (the host loop), ``hooks.py`` (the
hooks), ``records.py`` (the typed records), ``trackers.py`` (where they go), ``rundir.py`` (the run folder),
``evaluate.py`` (CE and edge counts summed on device), ``checkpointing.py`` (orbax, export, best-feasible copy).
"""
from __future__ import annotations

from pathlib import Path

import jax

from .. import controllers, sharding
from ..config import RunConfig, to_dict
from . import checkpointing, evaluate as _evaluate, loop, state as _state, step as _step
from .data import build_data
from .hooks import Callback, Hook, Hooks, StepInfo, default_hooks
from .loop import NonFiniteError
from .records import EvalRecord, FinalRecord, Record, StartRecord, TrainRecord
from .rundir import RunDir
from .state import StepSpec, build_model, gate_of, params_of
from .step import lr_schedule, make_eval_step, make_train_step
from .trackers import CompositeTracker, JsonlTracker, TensorBoardTracker, Tracker, default_trackers

__all__ = ["Callback", "CompositeTracker", "EvalRecord", "FinalRecord", "Hook", "Hooks", "JsonlTracker",
           "NonFiniteError", "Record", "RunDir", "StartRecord", "StepInfo", "StepSpec", "TensorBoardTracker",
           "Tracker", "TrainRecord", "Trainer", "build_data", "build_model", "lr_schedule", "make_eval_step",
           "make_train_step"]


# constraint.tau_data: the batches the dense CE behind tau is measured on; "batch": every measured training batch,
# the multiplier seeing that batch's CE minus the dense starting model's on it, against the slack (train_step);
# "control": the same against a dense control trained beside the sparse model, in step, on the same batches
TAU_DATA = ("validation", "train", "batch", "control")
TAU_GATES = ("dense", "sampled")  # constraint.tau_gates: tau from the dense model or the gated one, sampled gates

# changing these on resume does not change the trajectory so far
RESUMABLE_CHANGES = ("train.steps", "train.log_every", "train.eval_every", "train.checkpoint_every", "train.keep",
                     "train.attention",  # the same mathematics, e.g. chunked on CPU, the kernel on GPU
                     "data.eval_batches", "train.export_shard_mb")


def check_run_dir(run_dir: Path, cfg: RunConfig) -> None:
    """The run directory is usable, and a run that resumes keeps its trajectory: a changed learning rate, gate
    bias, batch, ... is an error (extending ``train.steps`` is fine)."""
    import os

    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"run directory {run_dir} exists and is not a directory; choose another path")
    parent = next((p for p in [run_dir, *run_dir.parents] if p.exists()), None)
    if parent is not None and not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write under {parent}; choose a run directory you can write to")
    saved = RunDir.of(run_dir)
    if not (saved.config.exists() and saved.has_checkpoints()):
        return
    old, new = _flat(saved.config_dict()), _flat(to_dict(cfg))
    default = _flat(to_dict(RunConfig()))  # a key the saved config predates had its default value
    changed = [k for k in sorted(set(old) | set(new)) if k not in RESUMABLE_CHANGES
               and _norm(old.get(k, default.get(k))) != _norm(new.get(k))]
    if changed:
        diff = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed)
        raise ValueError(f"{run_dir} holds a run with a different config ({diff}); resuming it would change its "
                         f"trajectory. Resume with the same values (only {', '.join(RESUMABLE_CHANGES)} may change) "
                         "or use a new run directory")


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _norm(v):
    return list(v) if isinstance(v, tuple) else v


class Trainer:
    """One run, assembled from the pure pieces: ``fit()`` trains, ``evaluate()`` measures held-out CE and edges.

    Construction loads data and weights, builds the mesh, the (sharded) train state and the jitted steps, and
    measures tau (the dense model's held-out CE + slack) for CE-target runs. Nothing is written before ``fit``.

    ``trackers``: where the records go besides the run folder's ``metrics.jsonl`` and TensorBoard (objects with
    ``log(record)`` and ``close()``, :mod:`sparsejax.train.trackers`); ``self.trackers`` is the whole list, yours
    to change. ``self.hooks``: what runs between steps (:mod:`sparsejax.train.hooks`), the defaults at the
    cadences ``cfg.train`` has now; :meth:`add_hook` / :meth:`remove_hook`. ``self.dir``: the run folder
    (:class:`~sparsejax.train.rundir.RunDir`).
    """

    def __init__(self, cfg: RunConfig, run_dir: str | Path, *, progress: bool = True, trackers=()):
        self.cfg, self.run_dir, self.progress = cfg, Path(run_dir), progress
        self.dir = RunDir(self.run_dir)
        check_run_dir(self.run_dir, cfg)
        self.trackers: list[Tracker] = [*default_trackers(self.dir), *trackers]
        self.hooks: Hooks = default_hooks(cfg)
        self.train_src, self.val_src, self.tokenizer = build_data(cfg, self.dir)
        self.aside_src = None  # data.aside: training rows never trained on, where the multiplier's gap is measured
        if cfg.data.aside:
            from ..data import hold_aside

            self.train_src, aside = hold_aside(self.train_src, cfg.data.aside)
            self.aside_src = aside if cfg.gate.enabled else None  # a dense run only leaves them out
        self.rules = sharding.parse_rules(cfg.mesh.rules)
        self.mesh = sharding.make_mesh(cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor)
        model = build_model(cfg, self.mesh, self.rules)  # a checkpoint streams onto its shardings
        self.config = model.config
        _state.check_data_fits(cfg, self.config, self.train_src, self.val_src, self.tokenizer)
        if cfg.data.batch_size % (cfg.mesh.data * cfg.mesh.fsdp):
            raise ValueError(f"data.batch_size={cfg.data.batch_size} must be divisible by mesh.data x mesh.fsdp")
        self.batch_sharding = sharding.batch_sharding(self.mesh, self.rules)
        self.spec = _state.step_spec(cfg, model)
        trainable, frozen = _state.split_params(cfg, self.spec, model)
        place = lambda tree: jax.device_put(tree, sharding.state_shardings(tree, self.mesh, self.rules))
        self.frozen = place(frozen)
        trainable = place(trainable)
        self._eval = {dense: jax.jit(make_eval_step(self.spec, dense=dense)) for dense in (False, True)}
        self.tau = self._measure_tau(trainable)
        self.eval_tau = self._held_out_target(trainable)
        self.optimizer = _step.make_optimizer(cfg)
        self.target_start = self._measure_target_start(trainable)
        self.guard_tau = self._ce_target(trainable) if cfg.constraint.guard and self.tau is not None else None
        self.multiplier = _step.make_multiplier(cfg, self.tau, self.target_start, self.guard_tau)
        state = _state.init_state(trainable, self.optimizer, self.multiplier,
                                  _state.holds_probe(self.spec, self.multiplier), self.spec.control)
        # one layout for the state in and out of every step: the step compiles once (left to XLA, its outputs'
        # shardings differ from the placed inputs', and the second step compiled again)
        layout = sharding.state_shardings(state, self.mesh, self.rules)
        self.state = jax.device_put(state, layout)
        self.step_fn = jax.jit(make_train_step(self.spec, self.optimizer, self.multiplier), donate_argnums=0,
                               out_shardings=(layout, None))

    def _measure_tau(self, trainable):
        c = self.cfg.constraint
        if self.spec.gate is None or not controllers.get(c.method).constrains:
            return None
        if c.sense == "density":  # config.validate has checked the target and the method
            return c.density_target
        return self._ce_target(trainable)

    def _held_out_target(self, trainable):
        """What the held-out CE is compared with (``best_model/``, the final record's ``eval_tau``, the missed-target
        notice): ``tau``, except with ``constraint.tau_data=train``, where ``tau`` is the dense CE on training batches
        (the multiplier's target) and its held-out counterpart is the dense held-out CE + slack."""
        c = self.cfg.constraint
        if self.tau is None or c.sense != "ce" or c.tau is not None or c.tau_data != "train":
            return self.tau
        return self._ce_target(trainable, src=self.val_src)

    def _ce_target(self, trainable, src=None):
        """The CE target: ``constraint.tau``, or the dense model's CE (on ``constraint.tau_data``, or ``src``;
        held-out for ``batch``) + slack (``constraint.tau_gates=sampled``: the gated starting model's CE under
        sampled gates + slack)."""
        c = self.cfg.constraint
        if c.tau is not None:
            return c.tau
        # tau_data=batch: the multiplier's target is the slack over the dense model on each batch (make_multiplier);
        # tau here, the dense held-out CE + slack, is what the records and best_model/ compare the held-out CE with
        if src is None:
            src = self.train_src if c.tau_data == "train" else self.val_src
        if c.tau_gates == "sampled":  # the gated model as it starts, under the training loss's sampled gates
            step = jax.jit(make_eval_step(self.spec, sampled=True))
            with jax.set_mesh(self.mesh):
                batches = _evaluate.eval_batches(src, self.cfg.data.batch_size, self.cfg.data.eval_batches, self.mesh)
                return _evaluate.evaluate(step, trainable, self.frozen, batches, gated=False)["eval_ce"] + c.slack
        return self.evaluate(trainable, dense=True, src=src)["eval_ce"] + c.slack

    def _measure_target_start(self, trainable):
        """Where an annealed target starts: ``constraint.anneal_from``, or the gated model's held-out density."""
        c = self.cfg.constraint
        if self.tau is None or not c.anneal_steps:
            return None
        if c.anneal_from is not None:
            return c.anneal_from
        start = self.evaluate(trainable)["edge_density"]
        if not start > self.tau:
            raise ValueError(f"the gated model starts at {start:.4g} edge density, already at or below "
                             f"constraint.density_target={self.tau}: drop constraint.anneal_steps or set "
                             "constraint.anneal_from")
        return start

    def evaluate(self, trainable=None, *, dense: bool = False, src=None, tail: float | None = None,
                 per_batch: bool = False) -> dict:
        """Held-out CE and (when gated) deterministic edge density overall / per layer / per head (``src``: other
        data than the validation split, e.g. the training split's first batches; ``tail``: also ``tail_ce``, the
        mean CE of that share of the sequences with the highest CE; ``per_batch``: also each batch's CE)."""
        trainable = self.state["trainable"] if trainable is None else trainable
        with jax.set_mesh(self.mesh):
            batches = _evaluate.eval_batches(self.val_src if src is None else src, self.cfg.data.batch_size,
                                             self.cfg.data.eval_batches, self.mesh)
            return _evaluate.evaluate(self._eval[dense], trainable, self.frozen, batches,
                                      gated=self.spec.gate is not None and not dense, tail=tail, per_batch=per_batch)

    def params(self) -> dict:
        """The model's parameters as a plain tree (LoRA adapters merged into their kernels)."""
        return params_of(self.spec, self.state["trainable"], self.frozen, merged=True)

    def gate(self):
        return gate_of(self.spec, self.state["trainable"], self.frozen)

    def export(self, path: Path):
        mb = self.cfg.train.export_shard_mb
        checkpointing.export(self.config, self.params(), self.gate(), path, tokenizer=self.tokenizer,
                             max_shard_bytes=int(mb * 2**20) if mb else None)

    def add_hook(self, fn, every: int = 1, *, name: str | None = None, last: bool = False,
                 before: str | None = None) -> Hook:
        """Call ``fn(info)`` (a :class:`~sparsejax.train.hooks.StepInfo`) after every ``every``-th step, and after
        the last step when ``last``; ``fn`` may be a :class:`~sparsejax.train.hooks.Callback` (``on_start`` /
        ``on_step`` / ``on_end``). Runs after the default hooks, or before the hook named ``before``."""
        return self.hooks.add(fn, every, name=name, last=last, before=before)

    def remove_hook(self, name: str) -> Hook:
        """Take out a hook by name (a default one too: ``log``, ``evaluate``, ``best``, ``checkpoint``,
        ``export``); returns it."""
        return self.hooks.remove(name)

    def add_tracker(self, tracker: Tracker) -> None:
        """Send every record to ``tracker`` too."""
        self.trackers.append(tracker)

    def fit(self, callbacks=()) -> dict:
        """Train to ``cfg.train.steps`` (resuming from the newest checkpoint); returns the final evaluation.
        ``callbacks``: functions ``f(record_dict)`` called with every record of this fit."""
        from ..distributed import is_main

        check_run_dir(self.run_dir, self.cfg)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if is_main():  # multi-process runs: process 0 writes the run directory
            if self.tokenizer is not None:
                self.tokenizer.save(str(self.dir.tokenizer))
            self.dir.write_config(to_dict(self.cfg))
        return loop.fit(self, progress=self.progress, callbacks=callbacks)
