"""The host loop: batches in, one jitted step per batch, NaN guard, logging, evaluation, checkpoints, export.

Everything numeric happens in the pure step (``step.py``); this file only schedules it. The host reads the
previous step's counters while the device runs the next step, so it does not stall the device every step.
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from .. import controllers
from ..data import batch_at
from ..distributed import is_main
from ..sharding import place_batch
from . import checkpointing
from .metrics import MetricsWriter


class NonFiniteError(RuntimeError):
    pass


def step_seed(seed: int, step: int):
    return jnp.uint32((seed * 1_000_003 + step) % 2**32)


def fit(run, *, progress: bool = True, callbacks=()) -> dict:
    """Train ``run`` (a :class:`sparsejax.train.Trainer`) from its state to ``cfg.train.steps``; returns the
    final evaluation. ``callbacks``: functions ``f(record)`` called with every logged record."""
    cfg, run_dir = run.cfg, run.run_dir
    t = cfg.train
    mgr = checkpointing.manager(run_dir, t.keep)
    run.state, resumed = checkpointing.restore_latest(mgr, run.state)
    start = int(run.state["step"])
    main = is_main()  # only process 0 writes files (multi-process runs: sparsejax.distributed)
    if resumed is not None and main:
        print(f"resumed {run_dir} from step {start} (checkpoint {resumed})")
    writer = MetricsWriter(run_dir, resume_step=start if resumed is not None else None) if main else None

    def emit(rec: dict):
        if writer is not None:
            writer.write(rec)
        for cb in callbacks:
            cb(rec)

    bar = None
    if progress and main:
        from tqdm.auto import tqdm

        bar = tqdm(total=t.steps, initial=start, desc="post-train" if run.spec.gate is not None else "train",
                   dynamic_ncols=True)
    shard = run.batch_sharding
    tokens_per_step = cfg.data.batch_size * run.train_src.seq_len
    multiplier = controllers.get(cfg.constraint.method).multiplier  # its metric name, shown on the progress bar
    t0, last, pending = time.perf_counter(), start, None
    try:
        if resumed is None and run.spec.gate is not None:  # the starting point: gated and dense held-out CE
            emit({"step": 0, **run.evaluate(), "dense_eval_ce": run.evaluate(dense=True)["eval_ce"]})
        with jax.set_mesh(run.mesh):
            for step in range(start, t.steps):
                batch = place_batch(lambda rows: batch_at(run.train_src, step, cfg.data.batch_size, cfg.data.seed,
                                                          rows=rows), cfg.data.batch_size, shard)
                run.state, out = run.step_fn(run.state, run.frozen, batch, step_seed(t.seed, step))
                # the previous step's counter is ready by now while the device runs this one; after a bad step,
                # check every step at once so that the run stops exactly at max_bad_steps
                if pending is not None and _check_bad(pending, t.max_bad_steps):
                    _check_bad((step, out["bad_steps"]), t.max_bad_steps)
                pending = (step, out["bad_steps"])
                done = step + 1
                if done % t.log_every == 0 or done == t.steps:
                    _check_bad(pending, t.max_bad_steps)
                    now = time.perf_counter()
                    rec = _record(run, out, done, tokens_per_step * (done - last) / max(now - t0, 1e-9))
                    t0, last = now, done
                    emit(rec)
                    if bar is not None:
                        bar.set_postfix({k: f"{rec[k]:.3g}" for k in ("ce", "train_edge_density", multiplier)
                                         if k in rec})
                if t.eval_every and done % t.eval_every == 0 and done != t.steps:
                    rec = {"step": done, **run.evaluate()}
                    emit(rec)
                    checkpointing.keep_best(run_dir, rec, run.tau, run.export)
                if t.checkpoint_every and done % t.checkpoint_every == 0:
                    checkpointing.save(mgr, done, run.state)
                if bar is not None:
                    bar.update(1)
            if pending is not None:
                _check_bad(pending, t.max_bad_steps)
        final = {"step": int(run.state["step"]), **run.evaluate()}
        if run.tau is not None:
            final["tau"] = float(run.tau)
            checkpointing.keep_best(run_dir, final, run.tau, run.export)
        emit({**final, "final": True})
    finally:
        if writer is not None:
            writer.close()
        if bar is not None:
            bar.close()
    if int(run.state["step"]) not in (mgr.all_steps() or []):
        checkpointing.save(mgr, int(run.state["step"]), run.state)
    run.export(run_dir / "model")
    return final


def _check_bad(pending, max_bad: int) -> bool:
    """Raise after ``max_bad`` consecutive non-finite steps; returns whether the step was non-finite."""
    step, bad = pending
    bad = int(bad)
    if bad >= max_bad:
        raise NonFiniteError(f"{max_bad} consecutive non-finite steps (last at step {step}); lower train.lr or check "
                             "the data")
    return bad > 0


def _record(run, out: dict, step: int, tokens_per_s: float) -> dict:
    out = jax.device_get(out)
    rec = {"step": step, "loss": float(out["loss"]), "ce": float(out["ce"]),
           "expected_density": float(out["density"]), "tokens_per_s": tokens_per_s,
           "skipped_steps": int(out["total_bad_steps"])}
    if run.spec.gate is not None:  # deterministic edge density of this training batch (counted on device)
        per_layer = np.asarray(out["edges"]).mean(1)
        rec.update(train_edge_density=float(per_layer.mean()), train_edge_density_per_layer=per_layer.tolist())
    # what the controller logs, under its names (in density mode the estimate and the target are the density's),
    # then measured_ce: the CE the multiplier saw (constraint.measure=deterministic), then what a guarded curriculum
    # adds (its CE's EMA, where its annealed target stands)
    logged = controllers.get(run.cfg.constraint.method).record_names
    names = {**logged(run.spec.sense, False), "measured_ce": "measured_ce", **logged(run.spec.sense, run.spec.guard)}
    for k, name in names.items():
        if k in out:
            rec[name] = float(out[k])
    return rec
