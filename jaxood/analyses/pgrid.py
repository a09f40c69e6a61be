"""The ``p_min x p_max`` grid (paper Fig. 7), from cached features.

Every pair ``p_min <= p_max`` of the published percentile values. The diagonal
``p_min = p_max`` is a fixed percentile: AdaSCALE-A there is SCALE (with a ReLU before the
ratio, identical for post-ReLU features) and AdaSCALE-L is LTS. Option ``values``.
"""

from __future__ import annotations

import os

import matplotlib.pyplot as plt
import numpy as np

from jaxood import metrics
from jaxood.analyses.common import AdaScorer, Context, default_arrays, fit_stats, valid_pairs
from jaxood.analyses.output import Outcome, Table, aggregate, find, heatmap, save
from jaxood.analyses.report import verdict
from jaxood.detectors import adascale

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
    fig.suptitle(f"AdaSCALE-{variant.upper()}: diagonal = fixed percentile "
                 f"({'SCALE' if variant == 'a' else 'LTS'})", fontsize=10)
    fig.tight_layout()
    return save(fig, os.path.join(ctx.out_dir, f"fig7_pgrid_{variant}.png"))


def p_grid(ctx: Context):
    """Fig. 7."""
    values = tuple(ctx.option("values", adascale.PERCENTILE_VALUES))
    all_pairs = [(a, b) for i, a in enumerate(values) for b in values[i:]]
    rows, summary, verdicts, d = [], {}, [], None
    for i, model in enumerate(ctx.models):
        run = ctx.run_data(model)
        d = run.feature_dim
        scorer = AdaScorer(run, default_arrays(run))
        stats = fit_stats(*scorer.arrays["id_val"])
        pairs = valid_pairs(d, all_pairs)
        for variant in ("a", "l"):
            rows += [{**r, "run": i} for r in _rows(scorer, stats, pairs, variant)]
    table = Table("p_grid", "AdaSCALE over (p_min, p_max); diagonal = fixed percentile",
                  ["variant", "p_min", "p_max", "kind"], METRICS, rows,
                  "k1 = 1 %, k2 = 5 %, lambda = 10; eCDF on all ID-val.")
    agg = aggregate(table)
    plots = [_plot(ctx, agg, values, v) for v in ("a", "l")]
    for variant in ("a", "l"):
        cells = [r for r in agg.rows if r["variant"] == variant]
        fixed, adaptive = _best(cells, "fixed (diagonal)"), _best(cells, "adaptive")
        means = {k: float(np.mean([r["val_AUROC"] for r in cells if r["kind"] == k]))
                 for k in ("fixed (diagonal)", "adaptive")}
        wins = {m: beats_both_ends(cells, m) for m in ("val_AUROC", "near_AUROC", "far_AUROC")}
        summary[variant] = {"aps_fixed": fixed, "aps_adaptive": adaptive,
                            "mean_val_AUROC": means, "beats_both_ends": wins}
        name = {"a": "AdaSCALE-A vs SCALE", "l": "AdaSCALE-L vs LTS"}[variant]
        for group in ("near", "far"):
            gain = adaptive[f"{group}_AUROC"] - fixed[f"{group}_AUROC"]
            verdicts.append(verdict(
                f"{name}: APS-chosen adaptive pair beats the APS-chosen fixed percentile "
                f"({group}-OOD AUROC, test)", "yes (Fig. 7, Tables 1/5)",
                f"({adaptive['p_min']}, {adaptive['p_max']}) {adaptive[f'{group}_AUROC']:.2f} "
                f"vs p = {fixed['p_min']} {fixed[f'{group}_AUROC']:.2f} ({gain:+.2f})", gain > 0))
        won, total = wins["val_AUROC"]
        verdicts.append(verdict(
            f"{name}: most adaptive cells (p_min, p_max) beat both fixed percentiles p_min and "
            "p_max (validation AUROC)", "diagonal lighter than the rest (Fig. 7)",
            f"{won} of {total} cells (near AUROC: {wins['near_AUROC'][0]}, far: "
            f"{wins['far_AUROC'][0]}); mean {means['adaptive']:.2f} vs diagonal "
            f"{means['fixed (diagonal)']:.2f}", won > total / 2))
    return Outcome([table], {"values": list(values), "feature_dim": d, "k1": 1.0, "k2": 5.0,
                             "lmbda": 10.0}, summary, plots, {}, verdicts)
