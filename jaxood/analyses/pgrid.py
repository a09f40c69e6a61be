"""The ``p_min x p_max`` grid (paper Fig. 7), from cached features, on every run.

Every pair ``p_min <= p_max`` of the published percentile values. The diagonal
``p_min = p_max`` is a fixed percentile: AdaSCALE-A there is SCALE (with a ReLU before the
ratio, identical for post-ReLU features) and AdaSCALE-L is LTS. APS picks per run; the claims
are judged on the per-run differences. Option ``values``.

Beyond the paper (variant ``a-flip``, option ``flip_variant``, default on): AdaSCALE-A with
``lambda`` chosen per run so that ``lambda Q`` equals ``C_o`` on ID-val in the mean, and the
eCDF direction flipped (high Q' -> p near ``p_max``): what the adaptive percentile gives when
its statistic is read the way the data orders it.
"""

from __future__ import annotations

import os

import matplotlib.pyplot as plt
import numpy as np

from jaxood import metrics
from jaxood.analyses import verdicts as V
from jaxood.analyses.common import (
    AdaScorer,
    Context,
    chunked_q,
    default_arrays,
    fit_stats,
    valid_pairs,
)
from jaxood.analyses.output import Outcome, Table, aggregate, find, heatmap, save
from jaxood.detectors import adascale

NAMES = {"a": "AdaSCALE-A", "l": "AdaSCALE-L",
         "a-flip": "beyond the paper: AdaSCALE-A, lambda Q ~ C_o, eCDF flipped"}
METRICS = ["val_AUROC", "val_FPR@95", "near_AUROC", "near_FPR@95", "far_AUROC", "far_FPR@95"]


def _rows(scorer: AdaScorer, stats, pairs, variant: str) -> list[dict]:

    out = []
    evaluated = scorer.evaluate(stats, pairs, variant)
    val = {k: scorer.scores(stats, pairs, k, variant) for k in ("id_val", "ood_val")}
    for i, (pair, row) in enumerate(zip(pairs, evaluated)):
        row = dict(row)
        row["val_FPR@95"] = 100.0 * metrics.fpr_at_95(val["id_val"][i], val["ood_val"][i])
        out.append({"variant": variant, "p_min": pair[0], "p_max": pair[1],
                    "kind": "fixed (diagonal)" if pair[0] == pair[1] else "adaptive", **row})
    return out


def beats_both_ends(cells: list[dict], metric: str = "val_AUROC") -> tuple[int, int]:
    """How many adaptive cells ``(a, b)`` beat both fixed percentiles ``a`` and ``b`` (their
    diagonal ends) on ``metric`` (higher = better): ``(wins, adaptive cells)``."""
    fixed = {r["p_min"]: r[metric] for r in cells if r["p_min"] == r["p_max"]}
    adaptive = [r for r in cells if r["p_min"] != r["p_max"]
                and r["p_min"] in fixed and r["p_max"] in fixed]
    wins = sum(r[metric] > max(fixed[r["p_min"]], fixed[r["p_max"]]) for r in adaptive)
    return int(wins), len(adaptive)


def _best(rows: list[dict], kind: str) -> dict:
    """The APS choice among ``kind`` cells: the first maximum of validation AUROC."""
    cells = [r for r in rows if r["kind"] == kind]
    best = cells[0]
    for r in cells:
        if r["val_AUROC"] > best["val_AUROC"]:
            best = r
    return best


def _plot(ctx: Context, agg: Table, values, variant: str) -> str:
    fig, axes = plt.subplots(2, 3, figsize=(12.5, 6.6))
    for col, group in enumerate(("val", "near", "far")):
        for row, metric in enumerate(("AUROC", "FPR@95")):
            mat = np.full((len(values), len(values)), np.nan)
            for i, a in enumerate(values):
                for j, b in enumerate(values):
                    cell = find(agg, variant=variant, p_min=a, p_max=b)
                    if cell is not None:
                        mat[i, j] = cell[f"{group}_{metric}"]
            heatmap(axes[row, col], mat, values, values, xlabel="p_max", ylabel="p_min",
                    title=f"{group} {metric}", higher_better=metric == "AUROC")
    fig.suptitle(f"{NAMES[variant]}: diagonal = fixed percentile "
                 f"({'LTS' if variant == 'l' else 'SCALE'})", fontsize=10)
    fig.tight_layout()
    return save(fig, os.path.join(ctx.out_dir, f"fig7_pgrid_{variant}.png"))


def balanced_lambda(f, ft, k1: float = 1.0, k2: float = 5.0) -> float:
    """``mean C_o / mean Q`` of ID-val features: the lambda that makes the two terms of Q'
    equal in the mean (NaN when Q is 0)."""
    q = float(np.mean(chunked_q(f, ft, 1.0, k1=k1, k2=k2, form="q")))
    c_o = float(np.mean(chunked_q(f, ft, 1.0, k1=k1, k2=k2, form="c_o")))
    return c_o / q if q > 0 else float("nan")


def _run_rows(ctx: Context, i: int, model: str, all_pairs) -> tuple[list[dict], dict]:
    """Every cell of one run for each variant; the run's flip-variant settings."""
    run = ctx.run_data(model)
    scorer = AdaScorer(run, default_arrays(run))
    stats = fit_stats(*scorer.arrays["id_val"])
    pairs = valid_pairs(run.feature_dim, all_pairs)
    rows = []
    for variant in ("a", "l"):
        rows += [{**r, "run": i} for r in _rows(scorer, stats, pairs, variant)]
    info = {"feature_dim": run.feature_dim}
    if ctx.option("flip_variant", True):
        lam = balanced_lambda(*scorer.arrays["id_val"])
        info["flip_lambda"] = lam
        if np.isfinite(lam):
            flipped = AdaScorer(run, scorer.arrays, share=scorer, flip=True)
            stats = fit_stats(*scorer.arrays["id_val"], lmbda=lam, flip=True)
            rows += [{**r, "variant": "a-flip", "run": i}
                     for r in _rows(flipped, stats, pairs, "a")]
    return rows, info


def _variant_verdicts(rows: list[dict], variant: str) -> tuple[dict, list[dict]]:
    """Per-run APS picks (adaptive vs fixed) and the share of adaptive cells that beat both
    of their ends; summary and verdicts."""
    mine = [r for r in rows if r["variant"] == variant]
    runs = sorted({r["run"] for r in mine})
    picks = {k: [_best([r for r in mine if r["run"] == i], k) for i in runs]
             for k in ("adaptive", "fixed (diagonal)")}
    won = [beats_both_ends([r for r in mine if r["run"] == i], "val_AUROC") for i in runs]
    share = np.array([w / t if t else np.nan for w, t in won])
    means = {k: float(np.mean([r["val_AUROC"] for r in mine if r["kind"] == k]))
             for k in ("fixed (diagonal)", "adaptive")}
    summary = {"aps_adaptive_per_run": picks["adaptive"],
               "aps_fixed_per_run": picks["fixed (diagonal)"], "mean_val_AUROC": means,
               "share_beating_both_ends_per_run": share}
    name = NAMES[variant] + (" vs LTS" if variant == "l" else " vs SCALE")
    paper = "yes (Fig. 7, Tables 1/5)" if variant != "a-flip" else "not in the paper"
    verdicts = []
    for group in ("near", "far"):
        cols = [f"{group}_FPR@95", f"{group}_AUROC"]
        a = {m: [p[m] for p in picks["adaptive"]] for m in cols}
        b = {m: [p[m] for p in picks["fixed (diagonal)"]] for m in cols}
        verdicts.append(V.better(
            f"{name}: the APS-chosen adaptive pair beats the APS-chosen fixed percentile "
            f"({group}-OOD FPR@95, test)", paper, a, b, decide=cols[0],
            names=("adaptive", "fixed")))
    verdicts.append(V.above(
        f"{name}: most adaptive cells (p_min, p_max) beat both fixed percentiles p_min and "
        "p_max (validation AUROC)", "diagonal lighter than the rest (Fig. 7)"
        if variant != "a-flip" else "not in the paper", share, 0.5,
        metric="share of adaptive cells beating both ends"))
    verdicts[-1]["here"] += (f"; mean val AUROC adaptive {means['adaptive']:.2f} vs diagonal "
                             f"{means['fixed (diagonal)']:.2f}")
    return summary, verdicts


def p_grid(ctx: Context):
    """Fig. 7 (and the flipped variant beyond the paper)."""
    values = tuple(ctx.option("values", adascale.PERCENTILE_VALUES))
    all_pairs = [(a, b) for i, a in enumerate(values) for b in values[i:]]
    rows, info = [], []
    for i, model in enumerate(ctx.models):
        run_rows, run_info = _run_rows(ctx, i, model, all_pairs)
        rows += run_rows
        info.append(run_info)
    table = Table("p_grid", "AdaSCALE over (p_min, p_max); diagonal = fixed percentile",
                  ["variant", "p_min", "p_max", "kind"], METRICS, rows,
                  "k1 = 1 %, k2 = 5 %, lambda = 10 (a-flip: lambda per run in the settings); "
                  "eCDF on all ID-val.")
    agg = aggregate(table)
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    plots = [_plot(ctx, agg, values, v) for v in variants]
    summary, verdicts = {}, []
    for variant in variants:
        summary[variant], more = _variant_verdicts(rows, variant)
        verdicts += more
    return Outcome([table], {"values": list(values), "k1": 1.0, "k2": 5.0, "lmbda": 10.0,
                             "per_run": info}, summary, plots, {}, verdicts)
