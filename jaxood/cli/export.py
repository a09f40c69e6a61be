"""``jaxood export``: a saved detector -> a ``jax.export`` artifact that needs only jax.

Example::

    jaxood export det/adascale -o det.jaxexport --batch-size 32
    python det.jaxexport/score.py images.npy        # anywhere with jax + numpy installed
"""

from __future__ import annotations

from jaxood import fsutil
from jaxood.cli.common import add_import_argument, load_saved_detector, positive_int


def add_arguments(parser) -> None:
    a = parser.add_argument
    a("detector", help="a saved detector directory")
    a("-o", "--out", required=True, help="artifact directory (e.g. det.jaxexport)")
    a("--model", help="the model directory (default: the one recorded in the detector)")
    a("--batch-size", type=positive_int, default=None, help="fixed padded batch (default: saved)")
    a("--platforms", nargs="+", default=["cpu"], choices=["cpu", "cuda", "rocm", "tpu"],
      help="lowering platforms: cpu cuda rocm tpu")
    a("--no-symbolic", action="store_true", help="skip the symbolic-batch program")
    a("--overwrite", action="store_true")
    add_import_argument(parser)


def main(args) -> int:
    from jaxood.fitted import export

    fsutil.check_replaceable(args.out, overwrite=args.overwrite, marker=export.METADATA)
    fsutil.check_can_create(args.out, "-o")
    fitted = load_saved_detector(args.detector, args.model, args.batch_size)
    path = fitted.export(
        args.out, batch_size=args.batch_size, platforms=tuple(args.platforms),
        symbolic=not args.no_symbolic, overwrite=args.overwrite,
    )
    from jaxood.fitted.export import read_metadata

    meta = read_metadata(path)
    sym = "yes" if meta["symbolic_batch"] else f"no ({meta['symbolic_error']})"
    print(f"exported {fitted.name} -> {path} (batch {meta['batch_size']}, symbolic batch: "
          f"{sym}, platforms {meta['platforms']}); run it with: python {path}/score.py x.npy")
    return 0
