"""Two processes on this machine, joined by jax.distributed over loopback (gloo collectives, 2 CPU devices each),
train the same model as one process with the same 4-device mesh: same per-step CE, same exported weights; each
process read only its half of every batch, and only process 0 wrote the run directory."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TINY = ["model.family=llama", "model.d_model=32", "model.n_layers=2", "model.n_heads=4", "model.n_kv_heads=2", "model.d_ff=64",
        "data.batch_size=16", "data.eval_batches=2", "train.log_every=1", "train.steps=4", "train.eval_every=2",
        "mesh.data=2", "mesh.fsdp=2"]


def _env(devices):
    return {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"}


def _cmd(run, *flags):
    return [sys.executable, "-m", "sparsejax.cli", *flags, "posttrain", "toy_addition_posttrain", str(run), *TINY,
            "model.checkpoint=null", "--no-progress"]


def _records(run):
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in recs if "ce" in r], [r for r in recs if "eval_ce" in r]


def test_two_processes_train_like_one(tmp_path):
    from safetensors.numpy import load_file

    subprocess.run(_cmd(tmp_path / "one"), check=True, cwd=REPO, env=_env(4), capture_output=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    flags = lambda i: ["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i)]
    procs = [subprocess.Popen(_cmd(tmp_path / "two", *flags(i)) + ["train.export_shard_mb=0.02"], cwd=REPO, env=_env(2), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    (train1, eval1), (train2, eval2) = _records(tmp_path / "one"), _records(tmp_path / "two")
    assert [r["step"] for r in train2] == [1, 2, 3, 4]  # each step once: only process 0 wrote metrics
    for a, b in zip(train1, train2):
        np.testing.assert_allclose(b["ce"], a["ce"], rtol=1e-5)
    for a, b in zip(eval1, eval2):
        np.testing.assert_allclose(b["eval_ce"], a["eval_ce"], rtol=1e-5)
        np.testing.assert_allclose(b.get("edge_density", 1), a.get("edge_density", 1), atol=1e-6)
    w1 = load_file(str(tmp_path / "one" / "model" / "model.safetensors"))
    # the two-process run exported in sharded files (train.export_shard_mb), each tensor gathered on its own
    index = json.loads((tmp_path / "two" / "model" / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2
    w2 = {k: v for f in shards for k, v in load_file(str(tmp_path / "two" / "model" / f)).items()}
    assert set(w1) == set(w2)
    for k in w1:
        np.testing.assert_allclose(w2[k], w1[k], atol=2e-5, err_msg=k)

