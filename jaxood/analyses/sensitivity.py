"""Sensitivity of AdaSCALE-A to k1, k2 (Fig. 6a) and lambda (Fig. 6b), from cached features.

The percentile pair is fixed at the base choice (APS over the published grid with the
method's settings, or the published default without APS) and the eCDF is re-fitted on ID-val
for every setting. Options: ``k1`` / ``k2`` (percent of D), ``lmbda`` (values).
"""

from __future__ import annotations

import os

import matplotlib.pyplot as plt
import numpy as np

from jaxood.analyses.common import (
    MAIN_METRICS,
    AdaScorer,
    Context,
    base_percentile,
    default_arrays,
    fit_stats,
    keep,
)
from jaxood.analyses.output import Outcome, Table, aggregate, band, find, heatmap, save
from jaxood.analyses.report import verdict

K1_GRID = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0)
K2_GRID = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)
LAMBDA_GRID = (0.0, 1.0, 5.0, 10.0, 20.0, 50.0, 100.0)


def prepare(ctx: Context, model: str):
    """``(run, scorer, default stats, base pair, source)`` of one model."""
    run = ctx.run_data(model)
    scorer = AdaScorer(run, default_arrays(run))
    stats = fit_stats(*scorer.arrays["id_val"])
    pair, source = base_percentile(ctx, scorer, stats)
    return run, scorer, stats, pair, source


def k1_k2(ctx: Context):
    """Fig. 6a."""
    k1s, k2s = ctx.option("k1", K1_GRID), ctx.option("k2", K2_GRID)
    rows, pairs, d = [], [], None
    for i, model in enumerate(ctx.models):
        run, scorer, _, pair, source = prepare(ctx, model)
        pairs.append({"model": model, "percentile": pair, "source": source})
        d = run.feature_dim
        for k1 in k1s:
            for k2 in k2s:
                row = {"k1 %": k1, "k2 %": k2, "k1'": int(d * k1 / 100),
                       "k2'": int(d * k2 / 100), "run": i}
                try:
                    stats = fit_stats(*scorer.arrays["id_val"], k1=k1, k2=k2)
                except ValueError:  # k1' or k2' rounds to 0 for this D
                    rows.append({**row, **{m: float("nan") for m in MAIN_METRICS}})
                    continue
                rows.append({**row, **keep(scorer.evaluate(stats, [pair])[0])})
    table = Table("k1_k2", "AdaSCALE-A over k1 x k2 (percent of D)", ["k1 %", "k2 %", "k1'", "k2'"],
                  MAIN_METRICS, rows, f"Percentile fixed per run: {pairs}; lambda = 10.")
    agg = aggregate(table)
    grid = np.array([[find(agg, **{"k1 %": a, "k2 %": b})["val_AUROC"] for b in k2s]
                     for a in k1s])
    near = np.array([[find(agg, **{"k1 %": a, "k2 %": b})["near_AUROC"] for b in k2s]
                     for a in k1s])
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 3.4))
    for ax, vals, title in ((axes[0], grid, "validation AUROC"), (axes[1], near,
                                                                   "near-OOD AUROC (test)")):
        heatmap(ax, vals, [f"{b:g}" for b in k2s], [f"{a:g}" for a in k1s], xlabel="k2 (% of D)",
                ylabel="k1 (% of D)", title=f"AdaSCALE-A {title}")
    fig.tight_layout()
    plot = save(fig, os.path.join(ctx.out_dir, "fig6a_k1k2.png"))
    best = np.unravel_index(np.nanargmax(grid), grid.shape)
    default = find(agg, **{"k1 %": 1.0, "k2 %": 5.0})
    spread_k1 = float(np.nanmean(np.nanmax(grid, 0) - np.nanmin(grid, 0)))
    spread_k2 = float(np.nanmean(np.nanmax(grid, 1) - np.nanmin(grid, 1)))
    summary = {"best": {"k1 %": k1s[best[0]], "k2 %": k2s[best[1]],
                        "val_AUROC": float(grid[best])},
               "default_val_AUROC": None if default is None else default["val_AUROC"],
               "val_AUROC_range_over_k1": spread_k1, "val_AUROC_range_over_k2": spread_k2}
    at_default = summary["default_val_AUROC"]
    known = at_default is not None and np.isfinite(at_default)
    verdicts = [
        verdict("k1 ~ 1 %, k2 ~ 5 % is near-optimal (within 0.5 validation AUROC of the best)",
                "optimum k1 ~ 1 %, k2 ~ 5 % (ResNet-50)",
                f"best k1 = {k1s[best[0]]:g} %, k2 = {k2s[best[1]]:g} % ({grid[best]:.2f}); "
                f"(1 %, 5 %): " + (f"{at_default:.2f}" if known else "not in the grid"),
                grid[best] - at_default < 0.5 if known else None),
        verdict("k1 matters more than k2", "yes", f"mean AUROC range over k1 {spread_k1:.2f} "
                f"vs over k2 {spread_k2:.2f}", spread_k1 > spread_k2),
    ]
    return Outcome([table], {"k1": list(k1s), "k2": list(k2s), "lmbda": 10.0,
                             "feature_dim": d, "percentile": pairs}, summary, [plot], {},
                   verdicts)


def lmbda(ctx: Context):
    """Fig. 6b."""
    values = ctx.option("lmbda", LAMBDA_GRID)
    rows, pairs = [], []
    for i, model in enumerate(ctx.models):
        _, scorer, _, pair, source = prepare(ctx, model)
        pairs.append({"model": model, "percentile": pair, "source": source})
        for lam in values:
            stats = fit_stats(*scorer.arrays["id_val"], lmbda=lam)
            rows.append({"lambda": lam, "run": i, **keep(scorer.evaluate(stats, [pair])[0])})
    table = Table("lambda", "AdaSCALE-A over lambda", ["lambda"], MAIN_METRICS, rows,
                  f"Percentile fixed per run: {pairs}; k1 = 1 %, k2 = 5 %.")
    agg = aggregate(table)
    fig, axes = plt.subplots(1, 2, figsize=(7.0, 2.6))
    x = np.arange(len(values))
    for ax, metric in ((axes[0], "FPR@95"), (axes[1], "AUROC")):
        for group in ("near", "far"):
            band(ax, x, [r[f"{group}_{metric}"] for r in agg.rows],
                 [r[f"{group}_{metric}_std"] for r in agg.rows], f"{group}-OOD", marker="o")
        ax.set_xticks(x, [f"{v:g}" for v in values], fontsize=7)
        ax.set_xlabel("lambda", fontsize=8)
        ax.set_ylabel(f"{metric} (%)", fontsize=8)
        ax.legend(fontsize=7)
    fig.suptitle(f"AdaSCALE-A, band = ± std over {len(ctx.models)} run(s)", fontsize=8)
    plot = save(fig, os.path.join(ctx.out_dir, "fig6b_lambda.png"))
    mean_fpr = [(r["near_FPR@95"] + r["far_FPR@95"]) / 2 for r in agg.rows]
    best = values[int(np.argmin(mean_fpr))]
    at10 = mean_fpr[list(values).index(10.0)] if 10.0 in values else None
    summary = {"best_lambda_mean_FPR": best, "mean_FPR_by_lambda": dict(zip(values, mean_fpr))}
    verdicts = [verdict("FPR@95 is lowest near lambda = 10", "optimum lambda ~ 10 (Fig. 6b)",
                        f"lowest mean near/far FPR@95 at lambda = {best:g} "
                        f"({min(mean_fpr):.2f}; at 10: {at10:.2f})" if at10 is not None else
                        f"lowest at lambda = {best:g}", best in (5.0, 10.0, 20.0))]
    return Outcome([table], {"lmbda": list(values), "k1": 1.0, "k2": 5.0, "percentile": pairs},
                   summary, [plot], {}, verdicts)
