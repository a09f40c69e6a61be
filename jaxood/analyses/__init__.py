"""The AdaSCALE paper's analyses as experiments: ``jaxood experiment <name>``.

Each experiment is one small module function ``run(ctx) -> Outcome`` registered in
:data:`EXPERIMENTS` with the paper's figure/table and claim. :func:`run_experiment` runs
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

import importlib
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from jaxood.analyses.common import Context
from jaxood.analyses.covariate import fsood_unavailable
from jaxood.analyses.output import (
    Table,
    aggregate,
    earlier_runs,
    markdown_table,
    table_json,
    write_record,
)

__all__ = ["Context", "Experiment", "Outcome", "EXPERIMENTS", "get", "names", "run_experiment",
           "unavailable"]


class Outcome(NamedTuple):
    """What an experiment returns.

    Attributes:
      tables: rows per run/draw (aggregated by :func:`run_experiment`).
      settings: what was used (grids, percentiles and where they came from, subset sizes).
      summary: key numbers for the report and the claim checks.
      plots: PNG file names written into ``ctx.out_dir``.
      data: extra JSON-only data (e.g. curves).
      verdicts: the paper's claims checked on this data (:func:`jaxood.analyses.report.verdict`).
    """

    tables: list[Table]
    settings: dict
    summary: dict
    plots: list[str] = []
    data: dict = {}
    verdicts: list[dict] = []


class Experiment(NamedTuple):
    """One analysis: ``module:function`` run lazily, the paper item and its claim.

    ``kind``: ``"features"`` (cached default features only), ``"perturb"`` (new extraction
    passes on a fixed subset), ``"bench"`` (runner tables) or ``"standalone"`` (no model).
    """

    name: str
    paper: str
    title: str
    claim: str
    kind: str
    target: str

    def function(self) -> Callable[[Context], Outcome]:
        module, func = self.target.split(":")
        return getattr(importlib.import_module(f"jaxood.analyses.{module}"), func)


_E = Experiment
EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in (
    _E("headline", "Tables 1/5", "Headline table: MSP, EBO, ReAct, SCALE, AdaSCALE-A/L, KNN, MDS, "
       "OODD over all models (mean ± std)", "AdaSCALE-A/L give the best near- and far-OOD "
       "AUROC", "bench", "bench_tables:headline"),
    _E("fig3_shift", "Fig. 3", "Activation shift |a - a^eps| by clean activation rank, ID vs OOD",
       "the shift at the highest-ranked activations is larger for OOD than for ID",
       "features", "activations:shift_by_rank"),
    _E("fig4_q_ratio", "Fig. 4", "Q_OOD/Q_ID and Q'_OOD/Q'_ID per OOD set",
       "Q is higher for OOD than ID (ratio > 1) on the OOD sets", "features",
       "activations:q_ratio"),
    _E("fig5_perturbed", "Fig. 5", "Perturbed activation a^eps by clean activation rank, ID vs "
       "OOD", "perturbed activations are higher for ID than OOD, most at the top ranks",
       "features", "activations:perturbed_by_rank"),
    _E("fig6a_k1k2", "Fig. 6a", "k1 x k2 heatmap of validation AUROC", "k1 ~ 1 % and k2 ~ 5 % "
       "are near-optimal and k1 matters more than k2", "features", "sensitivity:k1_k2"),
    _E("fig6b_lambda", "Fig. 6b", "lambda sensitivity (near/far FPR@95)",
       "FPR@95 is lowest near lambda = 10", "features", "sensitivity:lmbda"),
    _E("table6_qprime", "Table 6", "Forms of Q': Q; C_o; lambda Q + C_o; sum max_k(a); "
       "lambda Q + sum max_k(a)", "lambda Q + C_o is best and Q is the critical component",
       "features", "qforms:q_forms"),
    _E("fig7_pgrid", "Fig. 7", "p_min x p_max grid (diagonal = SCALE)", "adaptive percentiles "
       "(off-diagonal) beat every fixed percentile (diagonal)", "features", "pgrid:p_grid"),
    _E("table7_nval", "Table 7", "eCDF fitted on n_val ID-val samples (random draws)",
       "as few as 10 ID samples suffice (metrics barely change with n_val)", "features",
       "nval:n_val"),
    _E("table9_region", "Table 9", "Perturbation region x o (fixed subset per split)",
       "perturbing trivial (lowest |grad|) elements at o = 5 % is best; random small regions "
       "are close", "perturb", "perturbation:region"),
    _E("table10_eps", "Table 10", "Perturbation size eps (fixed subset per split)",
       "eps ~ 0.5 is best", "perturb", "perturbation:epsilon"),
    _E("table11_latency", "Table 11", "Latency of fixed (SCALE) vs variable (AdaSCALE) "
       "percentile, post-feature arithmetic, jitted", "variable percentile costs a few times "
       "more and the ratio falls as D grows", "standalone", "latency:latency"),
    _E("table4_training", "Table 4", "Training methods (CE, LogitNorm, ELogitNorm, CE + ISH) x "
       "EBO, SCALE, AdaSCALE-A/L", "AdaSCALE keeps its advantage over SCALE after regularised "
       "training", "bench", "bench_tables:training_methods"),
    _E("stability", "beyond the paper", "Score stability: input jitter and float32 vs "
       "float64 attribution (selected elements, scores, decisions; fixed subset per split)",
       "not a claim of the paper: which elements AdaSCALE perturbs, and so its score, depends "
       "on float32 rounding and on tiny input changes", "perturb",
       "stability:score_stability"),
    _E("table3_fsood", "Table 3", "Full-spectrum OOD (ID test + covariate-shifted ID sets)",
       "FS-OOD is much harder for every method; AdaSCALE stays best", "bench",
       "bench_tables:full_spectrum"),
)}


def names() -> list[str]:
    return list(EXPERIMENTS)


def get(name: str) -> Experiment:
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; valid names: {', '.join(EXPERIMENTS)}")
    return EXPERIMENTS[name]


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
    from jaxood import __version__
    from jaxood.analyses import report

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
