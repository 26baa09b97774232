"""Orbax checkpoints of the train state, the exported model and the best-feasible copy (paths from ``RunDir``)."""
from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

from ..checkpoints import Model, save_pretrained
from ..files import atomic_write_text  # noqa: F401  (the one atomic write; kept importable from here)
from .rundir import RunDir


def manager(run_dir: Path, keep: int):
    import orbax.checkpoint as ocp

    return ocp.CheckpointManager(RunDir.of(run_dir).checkpoints.absolute(),
                                 options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))


def save(mgr, step: int, state) -> None:
    import orbax.checkpoint as ocp

    mgr.save(step, args=ocp.args.StandardSave(state))
    mgr.wait_until_finished()


def restore_latest(mgr, state):
    """``(state, step)`` from the newest checkpoint (restored onto ``state``'s shapes and shardings), or
    ``(state, None)`` when there is none."""
    import orbax.checkpoint as ocp

    latest = mgr.latest_step()
    if latest is None:
        return state, None
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    return mgr.restore(latest, args=ocp.args.StandardRestore(abstract)), latest


def export(config, params, gate, path: Path, tokenizer=None, max_shard_bytes: int | None = None) -> None:
    """A Hugging Face directory (float32, plus ``sparsejax_gate.json`` when gated and ``tokenizer.json`` when
    the run has a tokenizer), written atomically; ``max_shard_bytes``: sharded files, written shard by shard.
    Tensors reach the host one at a time (gathered across processes: every process takes part, process 0
    writes)."""
    from ..checkpoints.hf import iter_export_tensors
    from ..distributed import gather, is_main

    gate = gather(gate)
    fetch = lambda x: np.asarray(gather(x))
    config = config.replace(dtype="float32", remat="none")
    if not is_main():
        for _ in iter_export_tensors(config, params, fetch):  # the same collectives as process 0's writer
            pass
        return
    save_pretrained(Model(config, params, gate), path, tokenizer=tokenizer, max_shard_bytes=max_shard_bytes,
                    fetch=fetch)


def overshoot(rec, tau: float, sense: str = "ce") -> float:
    """How far an evaluation ``rec`` ends over its target: ``eval_ce - tau`` (``sense="ce"``; the record's own
    ``eval_tau`` instead where it has one: the control's held-out CE + slack at that evaluation) or ``edge_density -
    tau`` (``"density"``, ``tau`` the density target); <= 0 meets it."""
    if sense == "ce":
        return rec["eval_ce"] - (rec["eval_tau"] if rec.get("eval_tau") is not None else tau)
    return rec["edge_density"] - tau


def keep_best(run_dir, rec, tau: float | None, export_fn, sense: str = "ce") -> bool:
    """If ``rec`` (an evaluation) meets the constraint and beats ``best.json``, call ``export_fn(run_dir.best_model)``
    and record it. ``sense="ce"``: feasible is ``eval_ce <= tau``, better is sparser; ``sense="density"`` (``tau`` the
    density target): feasible is ``edge_density <= tau``, better is a lower held-out CE. Returns whether it became
    the best."""
    if tau is None or "edge_density" not in rec:
        return False
    better = {"ce": lambda r, b: r["edge_density"] < b["edge_density"],
              "density": lambda r, b: r["eval_ce"] < b["eval_ce"]}[sense]
    if overshoot(rec, tau, sense) > 0:
        return False
    run_dir = RunDir.of(run_dir)
    best = run_dir.best_record()
    if best is not None and not better(rec, best):
        return False
    export_fn(run_dir.best_model)
    from ..distributed import is_main

    if is_main():  # the other processes read it back at the next evaluation, after collectives in between
        run_dir.write_best(rec)
    return True
