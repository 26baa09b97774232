"""A run's records as the report reads them: its training records and evaluations, the runs under a folder, the
summary table. Everything goes through :class:`sparsejax.train.rundir.RunDir` (the run folder's files) and the typed
records of :mod:`sparsejax.train.records`; nothing else of ``sparsejax.train``."""
from __future__ import annotations

from pathlib import Path

from ..train.records import EvalRecord, StartRecord, TrainRecord, last_per_step
from ..train.rundir import RunDir


def read_metrics(run) -> tuple[list[TrainRecord], list[EvalRecord]]:
    """``(training records, evaluations)`` of a run (its folder, a :class:`RunDir` or its ``metrics.jsonl``), each
    sorted by step, the last record per step kept; evaluations are the start, the periodic and the final ones. A
    truncated last line (a killed run) is skipped."""
    run = RunDir.of(run)
    return last_per_step(run.records("train")), last_per_step(run.records("eval"))


def find_runs(run_dir: Path) -> list[Path]:
    """``run_dir`` itself when it holds a ``metrics.jsonl``, else the run directories one or two levels below
    (an experiment's ``dense/``, ``sparse/``, ``name/seedN/``); never a deeper walk (:meth:`RunDir.find`)."""
    return [r.path for r in RunDir.find(run_dir)]


def summary_rows(run: Path) -> tuple[list[str], list[list]]:
    """The summary table of a run: dense model, initial gated model, final model, the model in ``model/`` when
    ``train.final=feasible`` made it an earlier one, best feasible checkpoint."""
    run = RunDir.of(run)
    _, evals = read_metrics(run)
    start = next((r for r in evals if isinstance(r, StartRecord)), None)
    dense = start.get("dense_eval_ce") if start else None
    header = ["model", "step", "held-out CE", "CE - dense", "edge density", "per layer"]
    rows = []
    if dense is not None:
        rows.append(["dense (the starting checkpoint)", 0, dense, 0.0, 1.0, ""])
    add = lambda name, r: rows.append([name, r["step"], r["eval_ce"], "" if dense is None else r["eval_ce"] - dense,
                                       r.get("edge_density", 1.0), r.get("edge_density_per_layer", "")])
    if start is not None and "edge_density" in start:
        add("gated, before post-training", start)
    last = evals[-1] if evals else None
    if last is not None and last is not start:
        add("final" if last.get("final") else "last evaluation (run unfinished)", last)
    chosen = run.feasible_record()  # train.final=feasible rolled model/ back to an earlier evaluation
    output = run.model_record() if chosen is not None and last is not None and chosen["step"] != last["step"] else None
    if output is not None:
        add(f"{run.MODEL}/ (train.final=feasible: the last model meeting the constraint on training batches)", output)
    best = run.best_record()
    if best is not None:
        add(f"best feasible ({run.BEST_MODEL}/)", best)
    return header, rows
