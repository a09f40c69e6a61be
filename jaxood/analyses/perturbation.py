"""The perturbation itself: which elements (paper Table 9) and how much (Table 10).

These change AdaSCALE's perturbed features, so each setting is a new extraction pass; they
run on a fixed random subset of every split (``ctx.subset`` images per split, seed
``ctx.seed``; splits already that small are used whole, sharing the full runs' cache) and on
every model (option ``max_runs`` to use only the first ones). The percentile pair is the base
choice made on the subset with the method's perturbation (trivial, o = 5 %, eps = 0.5); the
eCDF is re-fitted on the subset's ID-val for every setting.
Options: ``regions`` (list of ``[region, o]``), ``eps`` (values).
"""

from __future__ import annotations

import time

import numpy as np

from jaxood.analyses import verdicts as V
from jaxood.analyses.common import (
    MAIN_METRICS,
    AdaScorer,
    Context,
    base_percentile,
    chunked_q,
    default_arrays,
    fit_stats,
    keep,
)
from jaxood.analyses.output import Outcome, Table, aggregate, find, mean_of_groups

REGIONS = [(r, o) for r in ("random", "trivial", "significant") for o in (0.01, 0.05, 0.10, 0.50)]
REGIONS += [("all", 1.0)]
EPS = (0.1, 0.25, 0.5, 1.0)
#: Paper Table 9 (ResNet-50): region -> o -> (near FPR, near AUROC, far FPR, far AUROC).
PAPER_REGIONS = {
    "random": {1: (61.73, 78.15, 19.44, 95.74), 5: (59.97, 78.67, 18.14, 96.06),
               10: (60.27, 78.02, 18.45, 96.00), 50: (62.81, 76.27, 19.95, 95.70)},
    "trivial": {1: (61.77, 78.29, 19.28, 95.77), 5: (58.97, 78.98, 17.84, 96.14),
                10: (60.24, 78.17, 17.94, 96.08), 50: (66.43, 74.10, 21.58, 95.29)},
    "significant": {1: (69.43, 75.13, 22.62, 95.17), 5: (67.31, 75.78, 21.24, 95.44),
                    10: (65.65, 76.20, 20.39, 95.62), 50: (64.54, 75.39, 20.48, 95.61)},
    "all": {100: (67.37, 73.08, 22.93, 95.01)},
}
#: Paper Table 10: eps -> (near FPR, near AUROC, far FPR, far AUROC).
PAPER_EPS = {0.1: (63.76, 77.50, 19.26, 95.85), 0.5: (58.97, 78.98, 17.84, 96.14),
             1.0: (61.60, 76.96, 19.31, 95.84)}


def _variants(ctx: Context, settings: list[dict], labels):
    """Rows (one per setting and run) with metrics, the mean shift Q on ID-val and the wall
    time of each setting (extraction + scoring); the base pair per run; subset sizes."""
    runs = list(ctx.models)[:int(ctx.option("max_runs", len(ctx.models)))]
    rows, pairs, sizes = [], [], {}
    for i, model in enumerate(runs):
        run = ctx.run_data(model, subset=ctx.subset)
        sizes = run.sizes()
        base = AdaScorer(run, default_arrays(run))
        pair, source = base_percentile(ctx, base, fit_stats(*base.arrays["id_val"]))
        pairs.append({"model": model, "percentile": pair, "source": source})
        for hp in settings:
            t0 = time.perf_counter()
            scorer = AdaScorer(run, default_arrays(run, **hp), share=base)
            f, ft = scorer.arrays["id_val"]
            q = chunked_q(f, ft, 1.0, k1=1.0, k2=5.0, form="q")
            row = keep(scorer.evaluate(fit_stats(f, ft), [pair])[0])
            rows.append({**labels(hp), "run": i, **row, "Q mean (ID val)": float(q.mean()),
                         "Q max (ID val)": float(np.abs(q).max()),
                         "wall s": time.perf_counter() - t0})
            ctx.log(f"  {labels(hp)}: near AUROC {row['near_AUROC']:.2f}, "
                    f"far AUROC {row['far_AUROC']:.2f} ({rows[-1]['wall s']:.0f} s)")
    return rows, pairs, sizes


def _mean_auroc(row) -> float:
    return (row["near_AUROC"] + row["far_AUROC"]) / 2


def region(ctx: Context):
    """Table 9."""
    grid = [tuple(v) for v in ctx.option("regions", REGIONS)]
    settings = [{"region": r, "o": float(o)} for r, o in grid]
    rows, pairs, sizes = _variants(
        ctx, settings, lambda hp: {"region": hp["region"], "o %": round(100 * hp["o"], 4)})
    cols = [*MAIN_METRICS, "Q mean (ID val)", "wall s"]
    table = Table("region", "AdaSCALE-A by perturbed region and fraction o (eps = 0.5)",
                  ["region", "o %"], cols, rows,
                  f"Fixed random subset per split: {sizes}. Percentile: {pairs}.", digits=2)
    agg = aggregate(table)
    score = {(r["region"], r["o %"]): _mean_auroc(r) for r in agg.rows}
    best = max(score, key=score.get)
    runs = {f"{r} {o:g}%": mean_of_groups(table.rows, region=r, **{"o %": o})
            for r, o in score}
    verdicts = []
    if ("trivial", 5.0) in score and len(score) > 1:
        verdicts.append(V.best("trivial (lowest |grad|) at o = 5 % is the best setting (mean "
                               "of near and far)", "yes (Table 9)", runs, ["trivial 5%"]))
    for o in sorted(o for (r, o) in score if r == "trivial" and ("significant", o) in score):
        verdicts.append(V.better(f"trivial beats significant at o = {o:g} % (mean of near and "
                                 "far)", "yes at o <= 10 %; at 50 % significant is better "
                                 "on near-OOD", runs[f"trivial {o:g}%"],
                                 runs[f"significant {o:g}%"], names=("trivial", "significant")))
    for o in sorted(o for (r, o) in score if r == "random" and o <= 10 and ("trivial", o) in score):
        auroc = {k: {"mean_AUROC": v["mean_AUROC"]} for k, v in runs.items()}
        verdicts.append(V.within(f"random at o = {o:g} % is within 1 AUROC point of trivial "
                                 "(mean of near and far)", "yes (within ~0.7 near AUROC)",
                                 auroc[f"random {o:g}%"], auroc[f"trivial {o:g}%"], 1.0))
    return Outcome([table], {"regions": grid, "eps": 0.5, "subset": ctx.subset,
                             "subset_sizes": sizes, "percentile": pairs,
                             "paper_table9": PAPER_REGIONS},
                   {"mean_AUROC": {f"{r} {o:g}%": v for (r, o), v in score.items()},
                    "best": list(best)}, [], {}, verdicts)


def epsilon(ctx: Context):
    """Table 10."""
    values = [float(v) for v in ctx.option("eps", EPS)]
    rows, pairs, sizes = _variants(ctx, [{"eps": v} for v in values],
                                   lambda hp: {"eps": hp["eps"]})
    cols = [*MAIN_METRICS, "Q mean (ID val)", "Q max (ID val)", "wall s"]
    table = Table("eps", "AdaSCALE-A by perturbation size eps (trivial, o = 5 %)", ["eps"],
                  cols, rows, f"Fixed random subset per split: {sizes}. Percentile: {pairs}.",
                  digits=3)
    agg = aggregate(table)
    score = {r["eps"]: _mean_auroc(r) for r in agg.rows if r["eps"] > 0}
    verdicts = []
    runs = {f"eps={e:g}": mean_of_groups(table.rows, eps=e) for e in score}
    if 0.5 in score and len(score) > 1:
        verdicts.append(V.best("eps = 0.5 is best (mean of near and far)", "yes (Table 10)",
                               runs, ["eps=0.5"]))
    zero = find(agg, eps=0.0)
    if zero is not None:
        verdicts.append(V.exact("eps = 0 gives no shift (Q = 0)", "by definition",
                                f"max Q = {zero['Q max (ID val)']:.3g}",
                                zero["Q max (ID val)"] == 0.0))
    return Outcome([table], {"eps": values, "region": "trivial", "o": 0.05,
                             "subset": ctx.subset, "subset_sizes": sizes, "percentile": pairs,
                             "paper_table10": {str(k): list(v) for k, v in PAPER_EPS.items()}},
                   {"mean_AUROC": score}, [], {}, verdicts)
