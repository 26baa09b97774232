"""The ``sparsejax`` command. Subcommands are added as the library grows (posttrain, eval, report, ...)."""
from __future__ import annotations

import argparse
import sys


def _info(args) -> int:
    import jax

    import sparsejax
    from sparsejax.attention import IMPLEMENTATIONS

    print(f"sparsejax {sparsejax.__version__}  jax {jax.__version__}")
    print(f"devices: {', '.join(str(d) for d in jax.devices())}")
    print(f"attention implementations: {', '.join(sorted(IMPLEMENTATIONS))} (auto -> chunked)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from sparsejax import __version__

    parser = argparse.ArgumentParser(prog="sparsejax", description="Extremely sparse attention by post-training "
                                     "(arXiv 2512.05865), in JAX.")
    parser.add_argument("--version", action="version", version=f"sparsejax {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    info = sub.add_parser("info", help="versions, devices and attention implementations")
    info.set_defaults(func=_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
