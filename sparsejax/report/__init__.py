"""Figures and the HTML report of a run: training dynamics, per-head attention maps, numbers.

``sparsejax report RUN_DIR`` gathers every ``metrics.jsonl`` under RUN_DIR (curves), every PNG already there
(e.g. attention graphs) and ``results.json`` / final metrics (numbers) into ``RUN_DIR/report.html`` (images
embedded, one self-contained file). A run is read through :class:`sparsejax.train.rundir.RunDir` (its files) and
its typed records (:mod:`sparsejax.train.records`).

Three rooms, every name importable from here as before (``from sparsejax.report import write_report``):

- ``runs.py``: a run's records (``read_metrics``), the runs under a folder (``find_runs``), the summary table
  (``summary_rows``);
- ``figures.py``: ``plot_dynamics``, ``head_maps``, ``nontrivial_heads``, ``pick_heads``, ``plot_attention_maps``,
  ``plot_head_density``, ``draw_circuit``, ``circuitsvis_patterns``, ``attention_html`` (the attention viewer page);
- ``page.py``: the HTML page, ``write_report`` and its sections.
"""
from . import figures, page
from .figures import READER_COLOURS, attention_html, circuitsvis_patterns, draw_circuit, head_maps, \
    nontrivial_heads, pick_heads, plot_attention_maps, plot_dynamics, plot_head_density
from .page import MAX_MAP_HEADS, MAX_RUNS, write_report
from .runs import find_runs, read_metrics, summary_rows

# the private helpers other code reaches for (experiments/shakespeare.py: ``report._plt()``)
_plt, _img, _table, _fmt = figures._plt, page._img, page._table, page._fmt

__all__ = ["MAX_MAP_HEADS", "MAX_RUNS", "READER_COLOURS", "attention_html", "circuitsvis_patterns", "draw_circuit",
           "find_runs", "head_maps", "nontrivial_heads", "pick_heads", "plot_attention_maps", "plot_dynamics",
           "plot_head_density", "read_metrics", "summary_rows", "write_report"]
