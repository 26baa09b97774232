"""The records of a run: one typed class per kind of line in ``metrics.jsonl``, shared by the loop and the trackers
that write them and the report that reads them.

| class | ``kind`` | written |
|---|---|---|
| :class:`TrainRecord` | ``train`` | every ``train.log_every`` steps and at the last step: the training batch |
| :class:`StartRecord` | ``start`` | before the first step of a gated run: the gated and the dense model |
| :class:`EvalRecord` | ``eval`` | every ``train.eval_every`` steps (not at the last): a held-out evaluation |
| :class:`FinalRecord` | ``final`` | after the last step: the final held-out evaluation (and ``tau``) |

A record is a frozen dataclass: its typed fields, then ``extra`` (the constraint controller's numbers under the
names it logs, ``beta`` / ``ce_ema`` / ``tau`` / ..., and any field a later version or a user adds). It is also a
read-only mapping of its JSON line (``rec["ce"]``, ``"beta" in rec``, ``rec.get(...)``), so code written against
the plain dictionaries keeps working. :meth:`Record.to_dict` is the line, keys in the order they have always been
written; fields that are ``None`` are left out. The lines carry no ``kind`` key (the files are as before);
:func:`parse` tells the kind from the fields, the one place that knows how (an explicit ``"kind"`` key, if a line
has one, wins). Every evaluation (start, eval, final) is an :class:`EvalRecord`.
"""
from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

__all__ = ["EvalRecord", "FinalRecord", "KINDS", "Record", "StartRecord", "TrainRecord", "last_per_step", "parse",
           "read_json_lines"]


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class Record(Mapping):
    """One line of ``metrics.jsonl``: the step it belongs to and its fields (a line of no known kind is one of
    these, its fields in ``extra``)."""

    kind: ClassVar[str] = "record"
    step: int
    extra: dict = dataclasses.field(default_factory=dict)  # fields beyond the typed ones, in file order

    def to_dict(self) -> dict:
        """The JSON line: ``step``, the typed fields that are set, then ``extra`` (a copy)."""
        return dict(self._dict)

    @functools.cached_property
    def _dict(self) -> dict:
        out = {"step": self.step}
        for f in dataclasses.fields(self):
            if f.name not in ("step", "extra") and getattr(self, f.name) is not None:
                out[f.name] = getattr(self, f.name)
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, d: Mapping) -> "Record":
        """A record of this class from a line's fields (unknown fields go to ``extra``)."""
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in d.items() if k in names},
                   extra={k: v for k, v in d.items() if k not in names})

    def __getitem__(self, key: str) -> Any:
        return self._dict[key]

    def __iter__(self):
        return iter(self._dict)

    def __len__(self) -> int:
        return len(self._dict)

    def __eq__(self, other) -> bool:
        if isinstance(other, Record):
            return self.kind == other.kind and self._dict == other._dict
        return isinstance(other, Mapping) and self._dict == dict(other)

    __hash__ = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._dict!r})"


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class TrainRecord(Record):
    """The training batch at a logged step: the loss, its CE (sampled gates), the expected density (the
    regulariser), throughput, the skipped non-finite steps so far, and for gated runs the batch's deterministic
    edge density overall and per layer; the controller's numbers are in ``extra``. A field an older run did not
    log is ``None``."""

    kind: ClassVar[str] = "train"
    loss: float | None = None
    ce: float
    expected_density: float | None = None
    tokens_per_s: float | None = None
    skipped_steps: int | None = None
    train_edge_density: float | None = None
    train_edge_density_per_layer: list[float] | None = None


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class EvalRecord(Record):
    """A held-out evaluation: CE and, for a gated model, the deterministic edge density overall, per layer and per
    (layer, head)."""

    kind: ClassVar[str] = "eval"
    eval_ce: float
    edge_density: float | None = None
    edge_density_per_layer: list[float] | None = None
    edge_density_per_head: list[list[float]] | None = None

    def summary(self) -> dict:
        """The line without its per-head table (what ``best.json`` holds and the CLI prints)."""
        return {k: v for k, v in self.items() if k != "edge_density_per_head"}


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class StartRecord(EvalRecord):
    """Step 0 of a gated run that did not resume: the gated model before post-training and the dense model's
    held-out CE on the same batches."""

    kind: ClassVar[str] = "start"
    dense_eval_ce: float | None = None


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class FinalRecord(EvalRecord):
    """The evaluation after the last step, with the run's target ``tau`` when it has one, and ``eval_tau`` where
    the held-out CE has another target (``constraint.tau_data=train``: ``tau`` is measured on training batches,
    ``eval_tau`` is the dense held-out CE + slack; ``control``: the control's held-out CE + slack, in every
    evaluation record)."""

    kind: ClassVar[str] = "final"
    tau: float | None = None
    eval_tau: float | None = None
    final: bool = True


KINDS: dict[str, type[Record]] = {c.kind: c for c in (Record, TrainRecord, EvalRecord, StartRecord, FinalRecord)}


def kind_of(d: Mapping) -> type[Record]:
    """The record class of a line's fields: its ``kind`` key when it has one, else by what the loop writes (``ce``:
    training; ``final``: the final evaluation; ``dense_eval_ce`` or step 0: the start; ``eval_ce``: an evaluation)."""
    if d.get("kind") in KINDS:
        return KINDS[d["kind"]]
    if "ce" in d:
        return TrainRecord
    if "eval_ce" in d:
        if d.get("final"):
            return FinalRecord
        if "dense_eval_ce" in d or d.get("step") == 0:
            return StartRecord
        return EvalRecord
    return Record


def parse(d: Mapping) -> Record | None:
    """The typed record of one line (``None`` for a line without a ``step``)."""
    if not isinstance(d, Mapping) or "step" not in d:
        return None
    cls = kind_of(d)
    try:
        return cls.from_dict(d)
    except TypeError:  # a required field of its kind missing (a hand-written line): kept untyped
        return Record.from_dict(d)


def read_json_lines(path: Path) -> list[dict]:
    """The JSON objects of a ``.jsonl`` file, in order; a line that does not parse (a killed writer's truncated
    last line) is skipped; a missing file has none."""
    out = []
    if not Path(path).exists():
        return out
    for line in Path(path).read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def last_per_step(records) -> list:
    """The last record of each step, sorted by step (a run resumed by an older version logged some steps twice)."""
    by_step = {}
    for r in records:
        by_step[r["step"]] = r
    return [by_step[k] for k in sorted(by_step)]
