"""Pieces shared by several subcommands."""

from __future__ import annotations

import argparse
import json
import math
import os
import re


def bounded(parse, minimum: float, *, strict: bool, what: str):
    """An argparse type: ``parse(text)`` (int or float) that must be finite and >= ``minimum``
    (> with ``strict``); the message names the rule and the text given."""
    rule = f"must be {what} {'>' if strict else '>='} {minimum:g}"

    def check(text: str):
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{rule}, got {text!r}") from None
        if not math.isfinite(value) or value < minimum or (strict and value == minimum):
            raise argparse.ArgumentTypeError(f"{rule}, got {text!r}")
        return value

    return check


positive_int = bounded(int, 1, strict=False, what="an integer")  # batch sizes, counts
nonnegative_int = bounded(int, 0, strict=False, what="an integer")  # 0 switches off
positive_float = bounded(float, 0, strict=True, what="a finite number")  # lr, temperatures
nonnegative_float = bounded(float, 0, strict=False, what="a finite number")


# Flags whose value is a comma-separated number list that may start with "-" (an error the
# flag's type should report): argparse would take "-1,2" for an unknown option instead.
NUMBER_LIST_FLAGS = ("--classes", "--mean", "--std")


def attach_number_lists(argv: list[str]) -> list[str]:
    """``["--classes", "-1,2"]`` -> ``["--classes=-1,2"]`` (for :data:`NUMBER_LIST_FLAGS`)."""
    out, i = [], 0
    while i < len(argv):
        tok = argv[i]
        nxt = argv[i + 1] if i + 1 < len(argv) else ""
        if tok in NUMBER_LIST_FLAGS and re.match(r"-[\d.]", nxt):
            out.append(f"{tok}={nxt}")
            i += 2
        else:
            out.append(tok)
            i += 1
    return out


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
    from jaxood import fitted
    from jaxood.fitted import io

    if model is None:
        model = io.read_manifest(directory).get("model_dir")
        if not model or not os.path.isdir(model):
            raise ValueError(
                f"{directory} does not record a model directory that exists here ({model!r}); "
                "pass --model DIR"
            )
    return fitted.load_detector(directory, model, batch_size=batch_size)


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
