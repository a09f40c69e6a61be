"""``jaxood detectors``: list registered detectors, what they need, and their APS grids."""

from __future__ import annotations

import json


def add_arguments(parser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")


def main(args) -> int:
    from jaxood import detectors

    rows = []
    for name, det in detectors.all_detectors().items():
        rows.append(
            {
                "name": name,
                "needs": sorted(det.needs),
                "fit_on": list(det.fit_splits),
                "defaults": {k: _plain(v) for k, v in det.defaults.items()},
                "sweep": {k: [_plain(v) for v in vs] for k, vs in det.sweep.items()},
                "reference": det.reference,
            }
        )
    rows.sort(key=lambda r: r["name"])
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        n_grid = 1
        for vs in r["sweep"].values():
            n_grid *= len(vs)
        print(
            f"{r['name']:<16} needs={','.join(r['needs']):<28} fit_on={','.join(r['fit_on']) or '-':<10}"
            f" grid={n_grid:<4} defaults={r['defaults']}"
        )
    return 0


def _plain(v):
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if hasattr(v, "item"):
        return v.item()
    return v
