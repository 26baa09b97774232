"""Where a run's records go: the :class:`Tracker` interface, the run folder's two (``metrics.jsonl`` and
TensorBoard), a composite, and a function adapter.

A tracker is any object with ``log(record)`` and ``close()``; pass your own to the trainer, no library edit:

    class Wandb:                                   # e.g. Weights & Biases
        def __init__(self, **init):
            import wandb
            self.run = wandb.init(**init)
        def log(self, record):                     # a sparsejax.train.records.Record (a mapping of its fields)
            self.run.log({k: v for k, v in record.items() if isinstance(v, (int, float))}, step=record.step)
        def close(self):
            self.run.finish()

    Trainer(cfg, "runs/x", trackers=[Wandb(project="sparse")]).fit()   # beside metrics.jsonl and TensorBoard

``log`` gets every record of the run (:mod:`sparsejax.train.records`: training, start, evaluation, final), on
every process of a multi-process run (the file trackers write on process 0 only); ``close`` is called at the end
of each ``fit`` (a later ``fit`` logs to the same tracker again). The loop rewrites ``metrics.jsonl`` itself when
a fit starts (:meth:`RunDir.reset_records`); the trackers only append.
"""
from __future__ import annotations

import json
from typing import Callable, Iterable, Protocol, runtime_checkable

from .records import Record
from .rundir import RunDir

__all__ = ["CompositeTracker", "FunctionTracker", "JsonlTracker", "TensorBoardTracker", "Tracker",
           "default_trackers"]


@runtime_checkable
class Tracker(Protocol):
    """Receives every record of a run."""

    def log(self, record: Record) -> None: ...

    def close(self) -> None: ...


def _main() -> bool:
    from ..distributed import is_main

    return is_main()


class JsonlTracker:
    """Appends each record to ``metrics.jsonl`` as one JSON line (process 0 only; flushed per line, so a killed
    run loses at most a truncated last line, which the readers skip). The file is opened at the first record."""

    def __init__(self, run_dir):
        self.run_dir = RunDir.of(run_dir)
        self.file = None

    def log(self, record: Record) -> None:
        if not _main():
            return
        if self.file is None:
            self.file = self.run_dir.metrics.open("a")
        self.file.write(json.dumps(record.to_dict()) + "\n")
        self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


class TensorBoardTracker:
    """Each numeric field of each record as a TensorBoard scalar under ``tensorboard/`` (process 0 only), and the
    per-layer densities as one scalar per layer (``edge_density_layer_0``, ...). One event file per ``fit``,
    created at its first record."""

    PER_LAYER = ("edge_density_per_layer", "train_edge_density_per_layer")

    def __init__(self, run_dir):
        self.run_dir = RunDir.of(run_dir)
        self.board = None

    def log(self, record: Record) -> None:
        if not _main():
            return
        if self.board is None:
            from tensorboardX import SummaryWriter

            self.board = SummaryWriter(str(self.run_dir.tensorboard))
        rec = record.to_dict()
        for k, v in rec.items():
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                self.board.add_scalar(k, v, rec["step"])
        for key in self.PER_LAYER:
            for l, v in enumerate(rec.get(key, [])):
                self.board.add_scalar(f"{key.removesuffix('_per_layer')}_layer_{l}", v, rec["step"])

    def close(self) -> None:
        if self.board is not None:
            self.board.close()
            self.board = None


class FunctionTracker:
    """A function ``fn(record_dict)`` as a tracker (what ``Trainer.fit(callbacks=...)`` takes): called with each
    record's JSON line as a plain dict."""

    def __init__(self, fn: Callable[[dict], None]):
        self.fn = fn

    def log(self, record: Record) -> None:
        self.fn(record.to_dict())

    def close(self) -> None:
        pass


class CompositeTracker:
    """Several trackers as one: each record to each, in order; ``close`` closes every one (the first error is
    raised after all were closed)."""

    def __init__(self, trackers: Iterable[Tracker] = ()):
        self.trackers = list(trackers)

    def log(self, record: Record) -> None:
        for t in self.trackers:
            t.log(record)

    def close(self) -> None:
        error = None
        for t in self.trackers:
            try:
                t.close()
            except Exception as e:  # close the others, then raise
                error = error or e
        if error is not None:
            raise error


def default_trackers(run_dir) -> list[Tracker]:
    """The run folder's own: ``metrics.jsonl`` (what the report and a resume read) and TensorBoard."""
    return [JsonlTracker(run_dir), TensorBoardTracker(run_dir)]
