"""The post-training loop: configs, a short run, NaN guard, resume after SIGKILL, sharded == unsharded, bad input."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from sparsejax.config import load_config
from sparsejax.data import Rows
from sparsejax.train import NonFiniteError, Trainer

TINY = ["model.family=llama", "model.d_model=32", "model.n_layers=2", "model.n_heads=4", "model.d_ff=64", "data.batch_size=16",
        "data.eval_batches=2", "train.log_every=1"]
REPO = Path(__file__).resolve().parents[1]


def records(run_dir):
    """The last metrics record logged for each training step (a resumed run logs some steps twice)."""
    out = {}
    for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if "ce" in r:
            out[r["step"]] = r
    return out


def test_config_errors_name_the_fix(tmp_path):
    with pytest.raises(ValueError, match=r"unknown config key 'train.stpes'; did you mean train.steps"):
        load_config("toy_addition_pretrain", ["train.stpes=3"])
    with pytest.raises(ValueError, match="not a valid int"):
        load_config(None, ["train.steps=abc"])
    with pytest.raises(FileNotFoundError, match="presets: .*toy_addition_posttrain"):
        load_config("no_such_preset")
    cfg = load_config("toy_addition_posttrain", ["gate.bias=2", "gate.stretch=[-0.2, 1.2]"])
    assert cfg.gate.bias == 2.0 and cfg.gate.stretch == (-0.2, 1.2) and cfg.constraint.method == "pi"  # issue H default
    (tmp_path / "c.yaml").write_text("train: {steps: 7}\nmodle: {}\n")
    with pytest.raises(ValueError, match="'modle'; did you mean model"):
        load_config(tmp_path / "c.yaml")


def test_pretrain_then_posttrain_short(tmp_path):
    pre = load_config("toy_addition_pretrain", TINY + ["train.steps=30", "train.lr=3e-3"])
    dense_trainer = Trainer(pre, tmp_path / "dense", progress=False)
    dense_trainer.fit()
    recs = records(tmp_path / "dense")
    assert recs[30]["ce"] < recs[1]["ce"]
    assert dense_trainer.step_fn._cache_size() == 1  # the state's layout is the same in and out of a step: one compilation
    assert (tmp_path / "dense" / "model" / "model.safetensors").exists()
    post = load_config("toy_addition_posttrain", TINY + ["train.steps=12", f"model.checkpoint={tmp_path / 'dense' / 'model'}",
                                                         "gate.learnable=true", "train.distill=0.5"])
    trainer = Trainer(post, tmp_path / "sparse", progress=False)
    dense_ce = trainer.evaluate(dense=True)["eval_ce"]
    assert trainer.tau == pytest.approx(dense_ce + post.constraint.slack)
    result = trainer.fit()
    r = records(tmp_path / "sparse")
    assert set(r[12]) >= {"ce", "expected_density", "beta", "ce_ema", "tau", "violation", "tokens_per_s"}
    assert 0 < result["edge_density"] <= 1 and len(result["edge_density_per_layer"]) == 2
    assert (tmp_path / "sparse" / "model" / "sparsejax_gate.json").exists()
    events = list((tmp_path / "sparse" / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1 and b"expected_density" in events[0].read_bytes() and b"beta" in events[0].read_bytes()
    import sparsejax as sj
    model = sj.from_pretrained(tmp_path / "sparse" / "model")
    assert model.gate.bias.shape == (2, 4)
    assert not np.allclose(model.gate.bias, 3.0)  # learnable bias moved
    # the saved model evaluated from its folder alone gives the trainer's final numbers; with every gate opened
    # (bias variants are data) it is the dense model: the trainer's dense evaluation of the same weights
    from sparsejax.train.evaluate import checkpoint_evaluator, evaluate_checkpoint
    saved = evaluate_checkpoint(post, tmp_path / "sparse" / "model")
    assert saved["eval_ce"] == pytest.approx(result["eval_ce"], rel=1e-6)
    assert saved["edge_density"] == pytest.approx(result["edge_density"], abs=1e-9)
    with checkpoint_evaluator(post, tmp_path / "sparse" / "model") as (run, loaded):
        opened = run(np.full((2, 4), 1e4))
        assert opened["edge_density"] == 1.0
        assert opened["eval_ce"] == pytest.approx(trainer.evaluate(dense=True)["eval_ce"], rel=1e-5)
        assert run(loaded.gate.bias)["eval_ce"] == saved["eval_ce"]  # the same batches on every call
    # per batch: each batch's CE, in the order of the trainer's own evaluation batches
    per = evaluate_checkpoint(post, tmp_path / "sparse" / "model", per_batch=True)["eval_ce_per_batch"]
    assert len(per) == min(post.data.eval_batches, len(trainer.val_src) // post.data.batch_size)
    assert np.mean(per) == pytest.approx(saved["eval_ce"], rel=1e-6)
    # split="aside": the last share of the training rows (counted here by hand), which the config must name
    with pytest.raises(ValueError, match="data.aside is 0"):
        evaluate_checkpoint(post, tmp_path / "sparse" / "model", split="aside")
    aside_cfg = load_config("toy_addition_pretrain", TINY + ["data.aside=0.25"])  # the same data, rows held aside
    full = trainer.train_src
    cut = len(full) - round(0.25 * len(full))
    aside = evaluate_checkpoint(aside_cfg, tmp_path / "sparse" / "model", split="aside", per_batch=True)
    by_hand = trainer.evaluate(src=Rows(full, cut, len(full)), per_batch=True)
    assert aside["eval_ce_per_batch"] == pytest.approx(by_hand["eval_ce_per_batch"], rel=1e-6)
    assert aside["eval_ce"] != pytest.approx(saved["eval_ce"], rel=1e-4)  # other rows than the validation split
    # split="train": the training rows less those held aside (by hand: the first cut rows), in the evaluation order
    rest = evaluate_checkpoint(aside_cfg, tmp_path / "sparse" / "model", split="train", per_batch=True)
    by_hand = trainer.evaluate(src=Rows(full, 0, cut), per_batch=True)
    assert rest["eval_ce_per_batch"] == pytest.approx(by_hand["eval_ce_per_batch"], rel=1e-6)
    assert rest["eval_ce"] != pytest.approx(aside["eval_ce"], rel=1e-4)

    lora = load_config("toy_addition_posttrain", TINY + ["train.steps=5", f"model.checkpoint={tmp_path / 'dense' / 'model'}",
                                                         "train.lora_rank=2", "train.lora_modules=attn.q,attn.v",
                                                         "gate.learnable=false", "gate.bias_lr=null", "gate.bias_max=null"])
    trainer = Trainer(lora, tmp_path / "lora", progress=False)
    trainer.fit()
    assert set(trainer.state["trainable"]) == {"lora"}
    assert np.abs(np.asarray(trainer.state["trainable"]["lora"]["attn.q"]["b"])).max() > 0
    base, adapted = sj.from_pretrained(tmp_path / "dense" / "model"), sj.from_pretrained(tmp_path / "lora" / "model")
    for name in ("q", "v"):  # adapted kernels moved; everything else is the frozen base
        assert not np.allclose(adapted.params["layers"]["attn"][name]["kernel"], base.params["layers"]["attn"][name]["kernel"])
    np.testing.assert_array_equal(adapted.params["layers"]["attn"]["k"]["kernel"], base.params["layers"]["attn"]["k"]["kernel"])
    np.testing.assert_array_equal(adapted.params["layers"]["mlp"]["up"]["kernel"], base.params["layers"]["mlp"]["up"]["kernel"])


def test_non_finite_steps_are_skipped_then_stop(tmp_path):
    cfg = load_config("toy_addition_pretrain", TINY + ["train.steps=20", "train.lr=1e30", "train.grad_clip=1e30",
                                                       "train.max_bad_steps=3"])
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    with pytest.raises(NonFiniteError, match="3 consecutive non-finite steps"):
        trainer.fit()
    assert int(trainer.state["total_bad_steps"]) == 3
    params = trainer.state["trainable"]["params"]
    assert all(np.isfinite(np.asarray(x)).all() for x in __import__("jax").tree.leaves(params))  # bad steps skipped


def test_gradient_accumulation_updates_every_k_steps(tmp_path):
    cfg = load_config("toy_addition_pretrain", TINY + ["train.steps=3", "train.grad_accum=2", "train.warmup=0"])
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    import jax
    snapshots = [jax.device_get(trainer.state["trainable"]["params"]["embed"]["tokens"])]
    for steps in (1, 2, 3):
        trainer.cfg.train.steps = steps
        trainer.fit()
        snapshots.append(jax.device_get(trainer.state["trainable"]["params"]["embed"]["tokens"]))
    np.testing.assert_array_equal(snapshots[0], snapshots[1])  # first micro-batch: accumulated, not applied
    assert not np.array_equal(snapshots[1], snapshots[2])      # second: the update lands
    np.testing.assert_array_equal(snapshots[2], snapshots[3])


def _train_cmd(run_dir, *extra):
    code = ("import sys; from sparsejax.config import load_config; from sparsejax.train import Trainer; "
            "Trainer(load_config('toy_addition_pretrain', sys.argv[2:]), sys.argv[1], progress=False).fit()")
    return [sys.executable, "-c", code, str(run_dir), *TINY, *extra]


def test_resume_after_sigkill_matches_uninterrupted(tmp_path):
    extra = ["train.steps=40", "train.checkpoint_every=10", "train.keep=10"]
    subprocess.run(_train_cmd(tmp_path / "full", *extra), check=True, cwd=REPO)
    proc = subprocess.Popen(_train_cmd(tmp_path / "killed", *extra), cwd=REPO)
    ckpts = tmp_path / "killed" / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and not (ckpts.exists() and any(p.name == "20" for p in ckpts.iterdir())):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    steps_before = max(records(tmp_path / "killed"))
    assert steps_before < 40, "the run finished before it could be killed"
    subprocess.run(_train_cmd(tmp_path / "killed", *extra), check=True, cwd=REPO)
    full, resumed = records(tmp_path / "full"), records(tmp_path / "killed")
    assert sorted(full) == sorted(resumed) == list(range(1, 41))
    for step in full:
        assert full[step]["ce"] == resumed[step]["ce"], step


def _sharded_run(tmp_path, devices, mesh):
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"}
    run = tmp_path / f"mesh{'x'.join(map(str, mesh))}"
    subprocess.run(_train_cmd(run, "train.steps=5", "model.n_kv_heads=2", f"mesh.data={mesh[0]}",
                              f"mesh.fsdp={mesh[1]}", f"mesh.tensor={mesh[2]}"), check=True, cwd=REPO, env=env)
    from safetensors.numpy import load_file
    return records(run), load_file(str(run / "model" / "model.safetensors"))


def test_sharded_training_equals_single_device(tmp_path):
    ref_rec, ref_w = _sharded_run(tmp_path, 1, (1, 1, 1))
    for mesh in ((2, 2, 2), (1, 2, 4)):  # pure data parallelism: tests/test_multihost.py (data x fsdp)
        rec, w = _sharded_run(tmp_path, 8, mesh)
        for step in ref_rec:
            np.testing.assert_allclose(rec[step]["ce"], ref_rec[step]["ce"], rtol=1e-5, err_msg=str(mesh))
        for k in ref_w:
            np.testing.assert_allclose(w[k], ref_w[k], atol=2e-5, err_msg=f"{mesh} {k}")


def test_bad_input_clear_errors_nothing_written(tmp_path):
    run = tmp_path / "run"
    cases = [
        (["model.checkpoint=" + str(tmp_path / "missing")], FileNotFoundError, "does not exist"),
        (["data.batch_size=20000"], ValueError, "fewer than one batch"),
        (["model.max_position=8"], ValueError, "longer than the model's max_position=8"),
        (["mesh.data=3"], ValueError, "does not match the 1 available devices"),
        (["model.vocab_size=8"], ValueError,
         "the addition task has 12 tokens but the model.s embedding has 8; set model.vocab_size=12"),
    ]
    for extra, err, message in cases:
        with pytest.raises(err, match=message):
            Trainer(load_config("toy_addition_pretrain", TINY + extra), run, progress=False)
        assert not run.exists()
    corpus = tmp_path / "tiny.txt"
    corpus.write_text("a tiny corpus. " * 40)
    with pytest.raises(ValueError, match="shorter than one row"):
        Trainer(load_config(None, TINY + ["data.kind=text", f"data.path={corpus}", "data.bpe_vocab=300",
                                          "data.seq_len=16", "model.vocab_size=300", "model.max_position=16"]),
                run, progress=False)
    assert not run.exists()
