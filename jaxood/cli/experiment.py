"""``jaxood experiment``: the AdaSCALE paper's analyses (figures and tables) as experiments.

Examples::

  jaxood experiment --list
  jaxood experiment fig7_pgrid --benchmark fashion-openset --model runs/wrn_s0/best \\
      --data-root ../shared/data --out runs/analyses
  jaxood experiment all --benchmark fashion-openset --model runs/wrn_s{0,1,2}/best \\
      --method-model ce=runs/ce/best --method-model logitnorm=runs/ln/best \\
      --data-root ../shared/data --out runs/analyses --cache runs/cache
  jaxood experiment report --out runs/analyses        # REPORT.md from the records

Each experiment writes ``<out>/<name>.json`` / ``.md`` (+ PNGs) and ``<out>/REPORT.md`` is
rebuilt from every record in ``<out>`` (also when an experiment fails). ``all`` skips, with a
line saying why, the experiments whose data or models are absent (``table3_fsood`` without
covariate-shifted ID sets, ``table4_training`` without ``--method-model``). Features come from the runner's cache
(``--cache``, shared with ``jaxood bench``): running again does not re-run the network.
"""

from __future__ import annotations

import json
import shlex
import sys

from jaxood import fsutil
from jaxood.cli.common import add_import_argument, nonnegative_int, positive_int


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def add_arguments(parser) -> None:
    a = parser.add_argument
    a("names", nargs="*", metavar="NAME",
      help="experiment name(s) (see --list), 'all', or 'report' (rebuild REPORT.md only)")
    a("--list", action="store_true", help="describe the experiments and exit")
    a("--benchmark", help="benchmark name (see `jaxood bench --help`)")
    a("--model", nargs="+", default=[], metavar="DIR",
      help="saved-model dir(s) / train workdirs, one per seed: every analysis runs on all "
      "(mean ± std, per-run values in the JSON, verdicts on paired per-run differences)")
    a("--method-model", action="append", default=[], metavar="LABEL=DIR[,DIR...]",
      help="the model(s) of one training method for table4_training, one dir per seed "
      "(repeatable; 'all' skips table4_training without it)")
    a("--data-root", default=None, help="data root / folder of .npz files")
    a("--out", default="runs/experiments", help="results (JSON, MD, PNG, REPORT.md)")
    a("--work", default=None, help="runner result store (default <out>/work)")
    a("--cache", default=None, help="feature cache (default <work>/cache)")
    a("--batch-size", type=positive_int, default=256)
    a("--subset", type=positive_int, default=2000,
      help="images per split for the perturbation experiments (fixed random subset)")
    a("--seed", type=nonnegative_int, default=0, help="seed of subsets and random draws")
    a("--no-aps", action="store_true",
      help="published per-benchmark defaults instead of APS (recorded in the results)")
    a("--published-like", default=None, metavar="BENCHMARK",
      help="with --no-aps: borrow this benchmark's published values when none exist")
    a("--option", action="append", default=[], metavar="KEY=JSON",
      help='experiment option, e.g. --option \'eps=[0.1, 0.5]\' (see each module)')
    a("--discussion", default=None, metavar="FILE.md",
      help="a hand-written Markdown file put at the top of REPORT.md under the heading "
      "'Discussion (hand-written)', above the verdicts computed from the records")
    a("--quiet", action="store_true", help="no progress bars or log lines")
    add_import_argument(parser)


def list_text() -> str:
    from jaxood.analyses import EXPERIMENTS

    lines = []
    for e in EXPERIMENTS.values():
        lines.append(f"{e.name:<16} {e.paper:<10} [{e.kind}] {e.title}")
        lines.append(f"{'':<16} claim: {e.claim}")
    return "\n".join(lines)


def context(args):
    from jaxood.analyses import Context

    if not args.benchmark:
        raise ValueError("--benchmark is required")
    if not args.model:
        raise ValueError("--model is required (one saved-model directory per run)")
    check_outputs(args)
    options = {}
    for text in args.option:
        key, value = _key_value(text)
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError as e:
            raise ValueError(f"--option {key}: {value!r} is not JSON ({e.msg})") from None
    return Context(
        benchmark=args.benchmark, models=list(args.model), data_root=args.data_root,
        out_dir=args.out, work_dir=args.work, cache_dir=args.cache,
        batch_size=args.batch_size, aps=not args.no_aps, subset=args.subset, seed=args.seed,
        progress=not args.quiet, method_models=dict(_key_value(t) for t in args.method_model),
        published_like=args.published_like, options=options,
        command=_command_line(),
    )


def check_outputs(args) -> None:
    """--out/--work/--cache may not lie in a model folder the experiments read, nor be the
    --discussion file."""
    models = list(args.model) + [_key_value(t)[1] for t in args.method_model]
    reads = [args.discussion] if args.discussion else []
    for flag in ("out", "work", "cache"):
        path = getattr(args, flag)
        if path:
            fsutil.check_not_read(path, reads, models, f"--{flag}")


def _command_line() -> str:
    """This invocation as a shell command (``jaxood experiment ...``), for the records."""
    argv = sys.argv[1:]
    if "experiment" not in argv:  # called through cli.main(argv) from Python
        return "(jaxood.cli.main from Python)"
    return "jaxood " + " ".join(shlex.quote(a) for a in argv[argv.index("experiment"):])


def selected(names) -> list[str]:
    """Experiment names in order; ``all`` = every experiment; ``report`` is not one."""
    from jaxood import analyses

    out = []
    for name in names:
        if name == "all":
            out += analyses.names()
        elif name != "report":
            analyses.get(name)  # unknown names fail here, listing the valid ones
            out.append(name)
    return list(dict.fromkeys(out))


def run_selected(names: list[str], ctx, explicit: set[str]) -> dict[str, str]:
    """Runs the experiments; ``{name: reason}`` of those skipped because their data or models
    are absent (an experiment named explicitly is not skipped: it fails with the reason)."""
    from jaxood import analyses

    skipped = {}
    for name in names:
        reason = analyses.unavailable(name, ctx)
        if reason is not None and name not in explicit:
            print(f"[experiment] {name}: skipped, {reason}", flush=True)
            skipped[name] = reason
            continue
        if reason is not None:
            raise ValueError(f"{name}: {reason}")
        analyses.run_experiment(name, ctx)
    return skipped


def main(args) -> int:
    from jaxood.analyses.report import write_report

    if args.list or not args.names:
        print(list_text())
        return 0
    names = selected(args.names)
    skipped: dict[str, str] = {}
    # Invalid arguments fail here, before anything is run or written (the report included).
    ctx = context(args) if names else None
    try:
        if names:
            skipped = run_selected(names, ctx, set(args.names) - {"all"})
    finally:  # REPORT.md always reflects what is recorded, also after a failing experiment
        path = write_report(args.out, discussion=args.discussion, skipped=skipped)
        print(f"report: {path}")
    return 0 if len(skipped) < len(names) or not names else 1
