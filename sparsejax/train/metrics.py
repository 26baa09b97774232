"""Run metrics: one JSON record per line in ``metrics.jsonl`` and the same scalars to TensorBoard."""
from __future__ import annotations

import json
from pathlib import Path


def read_records(path: Path) -> list[dict]:
    """The records of a metrics file; a truncated last line (a killed writer) is ignored."""
    out = []
    if not Path(path).exists():
        return out
    for line in Path(path).read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


class MetricsWriter:
    """Appends records to ``run_dir/metrics.jsonl`` and TensorBoard event files under ``run_dir/tensorboard``.

    ``resume_step``: keep only the records of steps ``<= resume_step`` already in the file (a resumed run
    re-runs the steps after its last checkpoint; each step is logged once). ``None``: start a new file.
    """

    def __init__(self, run_dir: Path, resume_step: int | None = None):
        from tensorboardX import SummaryWriter

        self.path = Path(run_dir) / "metrics.jsonl"
        kept = [r for r in read_records(self.path) if r.get("step", 0) <= resume_step] if resume_step else []
        from .checkpointing import atomic_write_text

        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self.file = self.path.open("a")
        self.board = SummaryWriter(str(Path(run_dir) / "tensorboard"))

    def write(self, rec: dict):
        self.file.write(json.dumps(rec) + "\n")
        self.file.flush()
        for k, v in rec.items():
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                self.board.add_scalar(k, v, rec["step"])
        for key in ("edge_density_per_layer", "train_edge_density_per_layer"):
            for l, v in enumerate(rec.get(key, [])):
                self.board.add_scalar(f"{key.removesuffix('_per_layer')}_layer_{l}", v, rec["step"])

    def close(self):
        self.file.close()
        self.board.close()
