"""``jaxood detectors``: the registered detectors, what they need, and their hyperparameter
tables (default, APS grid, consuming stage, static or traced)."""

from __future__ import annotations

import json

from jaxood.cli.common import add_import_argument
from jaxood.fsutil import plain


def add_arguments(parser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.add_argument("names", nargs="*", help="show only these detectors (with hparam docs)")
    add_import_argument(parser)


def describe(det) -> dict:
    """A JSON-plain description of one detector."""
    return plain({
        "name": det.name,
        "needs": sorted(det.needs),
        "fit_on": list(det.fit_splits),
        "stream": det.stream,
        "version": det.version,
        "hparams": {
            k: {"default": hp.default, "sweep": hp.sweep, "role": hp.role, "static": hp.static,
                "doc": hp.doc}
            for k, hp in det.hparams.items()
        },
        "reference": det.reference,
    })


def main(args) -> int:
    from jaxood import detectors

    names = args.names or detectors.names()
    rows = [describe(detectors.get(n)) for n in names]
    aliases = detectors.aliases()
    if args.json:
        print(json.dumps({"detectors": rows, "aliases": aliases}, indent=2))
        return 0
    for r in rows:
        grid = 1
        for hp in r["hparams"].values():
            grid *= max(1, len(hp["sweep"]))
        print(f"{r['name']:<14} needs={','.join(r['needs']):<22} fit_on="
              f"{','.join(r['fit_on']) or '-':<6} grid={grid:<4}"
              + ("  (stream)" if r["stream"] else ""))
        for k, hp in r["hparams"].items():
            flags = hp["role"] + (", static" if hp["static"] else "")
            sweep = f" sweep={hp['sweep']}" if hp["sweep"] else ""
            doc = f"  # {hp['doc']}" if args.names and hp["doc"] else ""
            print(f"    {k:<22} {json.dumps(hp['default']):<16} [{flags}]{sweep}{doc}")
    if aliases and not args.names:
        print("aliases: " + ", ".join(f"{a} -> {t}" for a, t in sorted(aliases.items())))
    return 0
