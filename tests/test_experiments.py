"""The toy reproduction script end to end, at smoke-test size (the real run is the README's main job)."""
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_toy_addition_script_writes_figures_and_numbers(tmp_path):
    subprocess.run([sys.executable, "experiments/toy_addition.py", "--out", str(tmp_path), "--pretrain-steps", "40",
                    "--posttrain-steps", "10", "--no-progress"], check=True, cwd=REPO, capture_output=True)
    results = json.loads((tmp_path / "results.json").read_text())
    assert 0 <= results["dense_exact_match"] <= 1 and 0 < results["edge_density"] <= 1
    assert results["posttrain_steps"] == 10
    assert (tmp_path / "report.html").read_text().count("data:image/png;base64") >= 4
    for name in ("attention_graphs.png", "training_dynamics.png", "attention_maps.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


def test_compose_flax_example_runs():
    out = subprocess.run([sys.executable, "experiments/compose_flax.py", "--steps", "3"], check=True, cwd=REPO,
                         capture_output=True, text=True).stdout
    assert "final: eval-mode expected density" in out
