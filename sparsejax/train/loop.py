"""The host loop: batches in, one jitted step per batch, the NaN guard, and the trainer's hooks between steps.

Everything numeric happens in the pure step (``step.py``); what happens between steps (logging, evaluation, the
best-feasible copy, checkpoints, export) is the trainer's hooks (``hooks.py``), and where records go is its
trackers (``trackers.py``). The host reads the previous step's counters while the device runs the next step, so
it does not stall the device every step.
"""
from __future__ import annotations

import jax

from .. import controllers
from ..data import batch_at
from ..distributed import is_main
from ..seeds import step_noise
from ..sharding import place_batch
from . import checkpointing
from .hooks import StepInfo
from .records import Record, TrainRecord
from .trackers import CompositeTracker, FunctionTracker


class NonFiniteError(RuntimeError):
    pass


step_seed = step_noise  # the old name of sparsejax.seeds.step_noise


def fit(run, *, progress: bool = True, callbacks=()) -> dict | None:
    """Train ``run`` (a :class:`sparsejax.train.Trainer`) from its state to ``cfg.train.steps``, calling its
    hooks (``run.hooks``) and logging to its trackers (``run.trackers``); returns the final evaluation (``None``
    when the ``evaluate`` hook was removed). ``callbacks``: functions ``f(record_dict)`` called with every logged
    record, as extra trackers for this fit."""
    cfg = run.cfg
    t = cfg.train
    mgr = checkpointing.manager(run.dir, t.keep)
    run.state, resumed = checkpointing.restore_latest(mgr, run.state)
    start = int(run.state["step"])
    main = is_main()  # only process 0 writes files (multi-process runs: sparsejax.distributed)
    if resumed is not None and main:
        print(f"resumed {run.dir} from step {start} (checkpoint {resumed})")
    if main:  # a resumed run keeps the records up to its checkpoint, a new one starts an empty file
        run.dir.reset_records(start if resumed is not None else None)
    trackers = CompositeTracker([*run.trackers, *map(FunctionTracker, callbacks)])

    bar = None
    if progress and main:
        from tqdm.auto import tqdm

        bar = tqdm(total=t.steps, initial=start, desc="post-train" if run.spec.gate is not None else "train",
                   dynamic_ncols=True)
    multiplier = controllers.get(cfg.constraint.method).multiplier  # its metric name, shown on the progress bar

    def log(rec: Record):
        trackers.log(rec)
        if bar is not None and isinstance(rec, TrainRecord):
            bar.set_postfix({k: f"{rec[k]:.3g}" for k in ("ce", "train_edge_density", multiplier) if k in rec})

    def info(step: int, **kw) -> StepInfo:
        return StepInfo(run, step, log, resumed=resumed, checkpoints=mgr, **kw)

    shard = run.batch_sharding
    pending = None
    try:
        run.hooks.start(info(start))
        with jax.set_mesh(run.mesh):
            for step in range(start, t.steps):
                batch = place_batch(lambda rows: train_rows(run, step, rows), cfg.data.batch_size, shard)
                run.state, out = run.step_fn(run.state, run.frozen, batch, step_noise(t.seed, step))
                # the previous step's counter is ready by now while the device runs this one; after a bad step,
                # check every step at once so that the run stops exactly at max_bad_steps
                if pending is not None and _check_bad(pending, t.max_bad_steps):
                    _check_bad((step, out["bad_steps"]), t.max_bad_steps)
                pending = (step, out["bad_steps"])
                done = step + 1
                if done % t.log_every == 0 or done == t.steps:  # where the records read the step: checked first
                    _check_bad(pending, t.max_bad_steps)
                run.hooks.step(info(done, last=done == t.steps, outputs=out))
                if bar is not None:
                    bar.update(1)
            if pending is not None:
                _check_bad(pending, t.max_bad_steps)
        end = info(int(run.state["step"]), last=True)
        run.hooks.end(end)
    finally:
        trackers.close()
        if bar is not None:
            bar.close()
    return None if end.evaluation is None else end.evaluation.to_dict()


def train_rows(run, step: int, rows: slice = slice(None)) -> dict:
    """The step's training batch; with ``data.aside``, also the step's batch of held-aside rows (``aside_tokens``,
    ``aside_mask``), which the multiplier's CE gap is measured on."""
    d = run.cfg.data
    batch = batch_at(run.train_src, step, d.batch_size, d.seed, rows=rows)
    if run.aside_src is not None:
        batch.update({f"aside_{k}": v for k, v in batch_at(run.aside_src, step, d.batch_size, d.seed,
                                                            rows=rows).items()})
    return batch


def _check_bad(pending, max_bad: int) -> bool:
    """Raise after ``max_bad`` consecutive non-finite steps; returns whether the step was non-finite."""
    step, bad = pending
    bad = int(bad)
    if bad >= max_bad:
        raise NonFiniteError(f"{max_bad} consecutive non-finite steps (last at step {step}); lower train.lr or check "
                             "the data")
    return bad > 0
