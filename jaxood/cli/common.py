"""Pieces shared by several subcommands."""

from __future__ import annotations

import argparse
import json
import math
import os


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (batch sizes, counts)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def nonnegative_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (learning rates, temperatures)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def nonnegative_int(text: str) -> int:
    """argparse type: an integer >= 0 (sizes where 0 switches something off)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return value


def json_object(text: str) -> dict:
    """argparse type: a JSON object (keyword arguments), e.g. ``{"depth": 16}``."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"is not valid JSON ({e}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f'must be a JSON object such as \'{{"depth": 16}}\', got {text!r}')
    return value


def fraction(text: str) -> float:
    """argparse type: a number in (0, 1] (rates such as --tpr)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 < value <= 1.0:  # False for NaN too
        raise argparse.ArgumentTypeError(f"must be a fraction in (0, 1] (e.g. 0.95), got {text!r}")
    return value


def add_import_argument(parser: argparse.ArgumentParser) -> None:
    """``--import FILE_OR_MODULE`` (repeatable): user code registering detectors."""
    parser.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="FILE_OR_MODULE",
        help="a .py file or module that registers detectors (repeatable); installed packages "
        "can also register through the 'jaxood.detectors' entry-point group",
    )


def load_imports(args: argparse.Namespace) -> None:
    """Imports every ``--import`` given (before detector names are resolved)."""
    from jaxood import detectors

    for spec in getattr(args, "imports", []) or []:
        detectors.load_plugin(spec)


def load_saved_detector(directory: str, model: str | None, batch_size: int | None = None):
    """Loads a saved detector with ``model`` or, by default, the model directory it records."""
    import jaxood
    from jaxood.fitted import io

    if model is None:
        model = io.read_manifest(directory).get("model_dir")
        if not model or not os.path.isdir(model):
            raise ValueError(
                f"{directory} does not record a model directory that exists here ({model!r}); "
                "pass --model DIR"
            )
    return jaxood.load_detector(directory, model, batch_size=batch_size)


def add_distributed_arguments(parser: argparse.ArgumentParser) -> None:
    """``--distributed`` and the cluster flags (SLURM/MPI/TPU are auto-detected)."""
    a = parser.add_argument
    a("--distributed", action="store_true",
      help="multi-host run: one process per host, same --out/--workdir on shared storage "
      "(calls jax.distributed.initialize(); SLURM/MPI/TPU clusters are auto-detected)")
    a("--coordinator-address",
      help="with --distributed: host:port of process 0 (plain machines without SLURM/MPI)")
    a("--num-processes", type=int, help="with --distributed: total number of processes")
    a("--process-id", type=int, help="with --distributed: this process's index")


def init_distributed(args: argparse.Namespace) -> None:
    """Joins the cluster when ``--distributed`` was given (before any JAX computation)."""
    if getattr(args, "distributed", False):
        from jaxood import distributed

        distributed.initialize(args.coordinator_address, args.num_processes, args.process_id)
