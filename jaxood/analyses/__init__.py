"""The AdaSCALE paper's analyses as experiments: ``jaxood experiment <name>``.

Each experiment is one small module function ``run(ctx) -> Outcome`` registered in
:data:`~jaxood.analyses.registry.EXPERIMENTS` with the paper's figure/table and claim. :func:`run_experiment` runs
one on a :class:`~jaxood.analyses.common.Context` and writes ``<name>.json`` (settings,
aggregated tables, per-claim verdicts, wall time, network passes) and ``<name>.md`` (+ PNGs)
into ``ctx.out_dir``. :func:`jaxood.analyses.report.write_report` collects the records into
``REPORT.md``.

Python API::

    from jaxood import analyses
    ctx = analyses.Context("fashion-openset", ["runs/wrn_s0/best"], data_root="../shared/data",
                           out_dir="runs/analyses")
    record = analyses.run_experiment("fig7_pgrid", ctx)
"""

from __future__ import annotations

import time
from typing import Any

from jaxood.analyses import report
from jaxood.analyses.common import Context
from jaxood.analyses.covariate import fsood_unavailable
from jaxood.analyses.output import (
    Outcome,
    aggregate,
    earlier_runs,
    markdown_table,
    table_json,
    write_record,
)
from jaxood.analyses.registry import EXPERIMENTS, Experiment, get, names
from jaxood.version import __version__

__all__ = ["Context", "Experiment", "Outcome", "EXPERIMENTS", "get", "names", "run_experiment",
           "unavailable"]


def unavailable(name: str, ctx: Context) -> str | None:
    """Why experiment ``name`` cannot run with this context's data and models (``None`` when
    it can): what ``jaxood experiment all`` reports when it skips one."""
    if name == "table4_training" and not ctx.method_models:
        return "needs a model per training method (--method-model LABEL=DIR)"
    if name == "table3_fsood":
        return fsood_unavailable(ctx.benchmark, ctx.data_root)
    return None


def run_experiment(name: str, ctx: Context) -> dict[str, Any]:
    """Runs one experiment and writes its record; returns the record (JSON-plain)."""
    exp = get(name)
    t0, passes0 = time.perf_counter(), ctx.passes()
    ctx.log(f"[experiment] {name}: {exp.title}")
    outcome = exp.function()(ctx)
    tables = [aggregate(t) for t in outcome.tables]
    record = {
        "experiment": name, "paper": exp.paper, "title": exp.title, "claim": exp.claim,
        "kind": exp.kind, "benchmark": ctx.benchmark, "models": list(ctx.models),
        "aps": ctx.aps, "command": ctx.command, "options": dict(ctx.options),
        "settings": outcome.settings, "summary": outcome.summary,
        "tables": {t.name: table_json(t, raw) for t, raw in zip(tables, outcome.tables)}, "plots": list(outcome.plots),
        "data": outcome.data, "wall_s": time.perf_counter() - t0,
        "network_passes": ctx.passes() - passes0, "jaxood_version": __version__,
    }
    record["verdicts"] = list(outcome.verdicts)
    record["earlier_runs"] = earlier_runs(ctx.out_dir, name)
    md = report.experiment_markdown(record, [markdown_table(t) for t in tables])
    write_record(ctx.out_dir, name, record, md)
    ctx.log(f"[experiment] {name}: done in {record['wall_s']:.1f} s "
            f"({record['network_passes']} network passes)")
    return record
