"""How noisy is the multiplier's input? The batch-to-batch spread of ``measured_ce`` — in CE-target mode with
``constraint.tau_data=control`` the gap between the exported gates' model and its dense control on one held-aside
batch — over a run's logged training steps (issue J, twenty-eighth round: on SmolLM2 it is 70x the slack).

    python experiments/gap_noise.py docs/results/zoo_round28/smollm2_ce/metrics.jsonl --from 100
    python experiments/gap_noise.py docs/results/zoo_shakespeare_aside/evals.json --run ce_preset_d0_s3 --from 400

A source is a run's ``metrics.jsonl`` or a records file of ``experiments/control_gap.py`` (``--run NAME``: its
``train`` rows, logged every 100 steps).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def rows(path: str, run: str | None = None) -> list[dict]:
    """The logged training rows of a ``metrics.jsonl``, or of record ``run`` in a control_gap.py records file."""
    p = Path(path)
    if p.suffix == ".jsonl":
        if run is not None:
            raise SystemExit("--run names a record of a control_gap.py records file, not of a metrics.jsonl")
        return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
    records = json.loads(p.read_text())
    if run not in records:
        raise SystemExit(f"{path} holds no record {run!r}; it holds: {', '.join(records)} (give one with --run)")
    return records[run]["train"]


def spread(train: list[dict], start: int = 0) -> dict:
    """Count, mean and standard deviation (ddof 0) of ``measured_ce`` over the rows at step >= ``start``; where
    the rows log the multiplier, also its 10th, 50th and 90th percentiles over them (``beta``)."""
    import numpy as np

    x = np.array([r["measured_ce"] for r in train if "measured_ce" in r and r["step"] >= start])
    if x.size == 0:
        raise SystemExit(f"no logged measured_ce at step >= {start}: a run of constraint.sense=ce logs it")
    out = {"rows": int(x.size), "mean": float(x.mean()), "std": float(x.std())}
    beta = np.array([r["beta"] for r in train if "beta" in r and r["step"] >= start])
    if beta.size:  # the multiplier over the same rows: where the input held it
        out["beta"] = dict(zip(("p10", "median", "p90"), map(float, np.percentile(beta, [10, 50, 90]))))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="a metrics.jsonl or a control_gap.py records file")
    p.add_argument("--run", help="the record's name in a records file")
    p.add_argument("--from", dest="start", type=int, default=0, help="only steps from this one on")
    a = p.parse_args(argv)
    s = spread(rows(a.source, a.run), a.start)
    print(f"{a.source}{'' if a.run is None else ' ' + a.run}: measured_ce over {s['rows']} logged steps from step "
          f"{a.start}: mean {s['mean']:+.4f}, standard deviation {s['std']:.4f}"
          + ("" if "beta" not in s else "; beta median {median:.3g} (10-90%: {p10:.3g}-{p90:.3g})".format(**s["beta"])))


if __name__ == "__main__":
    main()
