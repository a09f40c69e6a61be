"""The ``jaxood`` command line: a thin dispatcher; the logic lives in importable modules.

Each subcommand module defines ``add_arguments(parser)`` and ``main(args) -> int``, and
imports the library inside ``main`` (deferred: JAX, orbax, matplotlib, TFDS load only for the
command that runs, so ``jaxood --help`` and usage errors stay fast).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from jaxood.cli.common import attach_number_lists, init_distributed, load_imports
from jaxood.hostmem import reuse_host_memory

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "detectors": ("jaxood.cli.detectors", "list the registered detectors and their APS grids"),
    "convert": ("jaxood.cli.convert", "convert a torchvision .pth/.safetensors file to a jaxood model"),
    "train": ("jaxood.cli.train", "train a CIFAR-style classifier (OpenOOD recipe), resumable"),
    "demo": ("jaxood.cli.demo", "train a small model on 8x8 digits and benchmark every detector"),
    "bench": ("jaxood.cli.bench", "full OOD benchmark table for a checkpoint (cached, APS, resumable)"),
    "fit": ("jaxood.cli.fit", "fit (and calibrate) a detector for a model; save it for `jaxood score`"),
    "score": ("jaxood.cli.score", "score images (folder, image list, .npz) with a saved detector -> CSV"),
    "export": ("jaxood.cli.export", "export a saved detector as a jax.export artifact (needs only jax)"),
    "experiment": ("jaxood.cli.experiment", "the AdaSCALE paper's analyses (figures/tables) as experiments"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxood",
        description="Post-hoc OOD detection in JAX: AdaSCALE, baselines, OpenOOD benchmarks.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        module = importlib.import_module(module_name)
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs one subcommand; returns the exit code (2 for a usage or user error, with one
    line on stderr; argparse's own errors included, so in-process callers get a code too).

    As the ``jaxood`` command (``argv`` None) it owns its process and keeps freed host
    memory for reuse (:mod:`jaxood.hostmem`); in-process callers keep their settings."""
    command = argv is None
    try:
        argv = attach_number_lists(sys.argv[1:] if argv is None else list(argv))
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # argparse: usage errors (2) and --help (0), already printed
        return int(e.code or 0)
    try:
        init_distributed(args)  # before plugins: JAX must not start its backend first
        if command and args.command not in ("detectors", "convert"):
            reuse_host_memory()  # a reason not to is not an error: defaults stay
        load_imports(args)
        return int(args._module.main(args) or 0)
    except (ValueError, OSError, ImportError) as e:
        # Expected user errors (bad values, missing/unwritable files, broken plugins): one
        # clear line, no traceback. OSError covers FileNotFoundError, PermissionError,
        # FileExistsError, NotADirectoryError, disk full.
        print(f"jaxood {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
