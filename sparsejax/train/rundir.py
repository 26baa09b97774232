"""The run folder: every file name a run writes, defined once, how its files are written (atomically) and read back.

    RUN_DIR/
      config.yaml        the run's configuration (a resumed run must match it)
      metrics.jsonl      one JSON record per line (records.py: training, start, evaluation, final)
      tensorboard/       the same scalars as TensorBoard event files
      checkpoints/       orbax checkpoints of the train state (resume from the newest)
      model/             the exported Hugging Face directory (+ sparsejax_gate.json, tokenizer.json)
      best_model/        the sparsest evaluated model meeting CE <= tau (density-target mode: the lowest CE at
                         density <= the target), and best.json its evaluation
      feasible_model/    train.final=feasible: the last evaluated model meeting the constraint on training batches
                         (feasible.json: its training-batch and held-out numbers); copied to model/ at the end
      control_model/     constraint.tau_data=control: the dense control trained beside the sparse model (no gate)
      tokenizer.json     text runs: the tokenizer (trained on the corpus, or the checkpoint's)
      tfds/              data.backend=tfds: the prepared array_record data
      report.html, dynamics.png, report_*.png, report_attention_viewer.html   what ``sparsejax report`` writes

An experiment's folder holds run folders (``dense/``, ``sparse/``, ``name/seedN/``) and its ``results.json``.
Every module that reads or writes these files asks :class:`RunDir` for the path.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..checkpoints.hf import TOKENIZER_FILE
from ..files import atomic_directory, atomic_write_bytes, atomic_write_text
from . import records as _records
from .records import EvalRecord, Record

__all__ = ["RunDir", "atomic_directory", "atomic_write_bytes", "atomic_write_text"]


class RunDir:
    """One run folder (it need not exist yet): the paths of its files and reading / writing them."""

    CONFIG = "config.yaml"
    METRICS = "metrics.jsonl"
    TENSORBOARD = "tensorboard"
    CHECKPOINTS = "checkpoints"
    MODEL = "model"
    BEST_MODEL = "best_model"
    BEST = "best.json"
    FEASIBLE_MODEL = "feasible_model"
    CONTROL_MODEL = "control_model"
    FEASIBLE = "feasible.json"
    TOKENIZER = TOKENIZER_FILE  # "tokenizer.json", the name an exported model/ carries it under too
    TFDS = "tfds"
    # what the report writes into a run folder (or the folder it is given)
    REPORT = "report.html"
    DYNAMICS = "dynamics.png"
    HEAD_DENSITY = "report_head_density.png"
    ATTENTION_MAPS = "report_attention_maps.png"
    ATTENTION_MAPS_ALL = "report_attention_maps_all.png"
    ATTENTION_VIEWER = "report_attention_viewer.html"
    RESULTS = "results.json"  # an experiment folder's numbers

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    @classmethod
    def of(cls, where: "str | os.PathLike | RunDir") -> "RunDir":
        """``where`` as a :class:`RunDir`: a run folder, or its ``metrics.jsonl`` (as the older functions took)."""
        if isinstance(where, RunDir):
            return where
        path = Path(where)
        return cls(path.parent if path.name == cls.METRICS else path)

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, RunDir) and self.path == other.path

    def __hash__(self) -> int:
        return hash(self.path)

    # ---------------------------------------------------------------------------------------------- the layout
    config = property(lambda self: self.path / self.CONFIG, doc="``config.yaml``")
    metrics = property(lambda self: self.path / self.METRICS, doc="``metrics.jsonl``")
    tensorboard = property(lambda self: self.path / self.TENSORBOARD, doc="``tensorboard/``")
    checkpoints = property(lambda self: self.path / self.CHECKPOINTS, doc="``checkpoints/`` (orbax)")
    model = property(lambda self: self.path / self.MODEL, doc="``model/``: the exported model")
    best_model = property(lambda self: self.path / self.BEST_MODEL, doc="``best_model/``: the best feasible model")
    best = property(lambda self: self.path / self.BEST, doc="``best.json``: the best feasible model's evaluation")
    feasible_model = property(lambda self: self.path / self.FEASIBLE_MODEL,
                              doc="``feasible_model/``: the last model feasible on training batches (train.final)")
    feasible = property(lambda self: self.path / self.FEASIBLE, doc="``feasible.json``: its numbers")
    control_model = property(lambda self: self.path / self.CONTROL_MODEL,
                             doc="``control_model/``: the dense control trained beside (constraint.tau_data=control)")
    tokenizer = property(lambda self: self.path / self.TOKENIZER, doc="``tokenizer.json``")
    tfds = property(lambda self: self.path / self.TFDS, doc="``tfds/``: prepared TFDS data")
    report = property(lambda self: self.path / self.REPORT, doc="``report.html``")
    dynamics = property(lambda self: self.path / self.DYNAMICS, doc="the report's training-dynamics figure")
    head_density = property(lambda self: self.path / self.HEAD_DENSITY, doc="the report's per-head density figure")
    attention_maps = property(lambda self: self.path / self.ATTENTION_MAPS, doc="the report's attention maps")
    attention_maps_all = property(lambda self: self.path / self.ATTENTION_MAPS_ALL,
                                  doc="the report's attention maps of every head")
    attention_viewer = property(lambda self: self.path / self.ATTENTION_VIEWER, doc="the report's attention viewer")
    results = property(lambda self: self.path / self.RESULTS, doc="an experiment folder's ``results.json``")

    REPORT_FILES = (REPORT, DYNAMICS, HEAD_DENSITY, ATTENTION_MAPS, ATTENTION_MAPS_ALL, ATTENTION_VIEWER)

    def is_run(self) -> bool:
        """Whether a run has started here (it has a ``metrics.jsonl``)."""
        return self.metrics.exists()

    def has_checkpoints(self) -> bool:
        return self.checkpoints.is_dir() and any(self.checkpoints.iterdir())

    @classmethod
    def find(cls, root: str | os.PathLike) -> list["RunDir"]:
        """``root`` itself when it holds a run, else the run folders one or two levels below (an experiment's
        ``dense/``, ``sparse/``, ``name/seedN/``); never a deeper walk."""
        root = cls.of(root)
        if root.is_run():
            return [root]
        found = {m.parent for pattern in (f"*/{cls.METRICS}", f"*/*/{cls.METRICS}") for m in root.path.glob(pattern)}
        return [cls(p) for p in sorted(found)]

    # ---------------------------------------------------------------------------------------------- reading
    def records(self, kind: str | type | None = None) -> list[Record]:
        """The typed records of ``metrics.jsonl`` in file order (:mod:`sparsejax.train.records`). ``kind``: only
        those of this kind or a more specific one (``"train"``; ``"eval"``: every evaluation, start and final
        included; ``"start"``; ``"final"``; or a record class). A truncated last line is skipped; no file, no
        records."""
        cls = _records.KINDS[kind] if isinstance(kind, str) else kind
        out = [r for r in map(_records.parse, _records.read_json_lines(self.metrics)) if r is not None]
        return out if cls is None else [r for r in out if isinstance(r, cls)]

    def best_record(self) -> EvalRecord | None:
        """``best.json``: the evaluation of the best feasible model (``None`` until there is one)."""
        if not self.best.exists():
            return None
        return EvalRecord.from_dict(json.loads(self.best.read_text()))

    def feasible_record(self) -> dict | None:
        """``feasible.json`` (``train.final=feasible``): the step, ``train_eval_ce`` / ``train_edge_density`` (the
        training batches that chose it) and its held-out ``eval_ce`` / ``edge_density``; ``None`` until there is one."""
        return json.loads(self.feasible.read_text()) if self.feasible.exists() else None

    def model_record(self) -> EvalRecord | None:
        """The held-out evaluation of the model in ``model/``: the final evaluation, or with ``train.final=feasible``
        that of the step ``feasible.json`` names (the last evaluation of that step: the final one when it is the last
        step); ``None`` before the run has evaluated."""
        evals, chosen = self.records("eval"), self.feasible_record()
        if chosen is not None:
            evals = [r for r in evals if r.step == chosen["step"]]
        return evals[-1] if evals else None

    def config_text(self) -> str | None:
        """``config.yaml`` as written (``None`` when absent)."""
        return self.config.read_text() if self.config.exists() else None

    def config_dict(self) -> dict | None:
        """``config.yaml`` as a nested dict (``None`` when absent)."""
        import yaml

        text = self.config_text()
        return None if text is None else yaml.safe_load(text)

    def load_config(self, overrides=()):
        """The run's :class:`sparsejax.config.RunConfig` (with ``key=value`` overrides)."""
        from ..config import load_config

        return load_config(str(self.config), list(overrides))

    # ---------------------------------------------------------------------------------------------- writing
    def write_config(self, cfg_dict: dict) -> None:
        """``config.yaml`` from the config as a dict (:func:`sparsejax.config.to_dict`), key order kept."""
        import yaml

        atomic_write_text(self.config, yaml.safe_dump(cfg_dict, sort_keys=False))

    def write_best(self, record) -> None:
        """``best.json``: an evaluation without its per-head table."""
        summary = record.summary() if isinstance(record, EvalRecord) else \
            {k: v for k, v in record.items() if k != "edge_density_per_head"}
        atomic_write_text(self.best, json.dumps(summary))

    def reset_records(self, keep_through: int | None) -> None:
        """Start this fit's ``metrics.jsonl``: keep only the lines of steps ``<= keep_through`` (a resumed run
        re-runs the steps after its last checkpoint, and each step is logged once); ``None`` or 0: empty."""
        kept = [d for d in _records.read_json_lines(self.metrics)
                if d.get("step", 0) <= keep_through] if keep_through else []
        atomic_write_text(self.metrics, "".join(json.dumps(d) + "\n" for d in kept))
