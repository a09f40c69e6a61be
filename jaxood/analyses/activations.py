"""The paper's observations in activation space (Figs. 3, 4, 5), from cached features.

* Fig. 3: the activation shift ``|a - a^eps|`` ordered by the clean activation's rank
  (rank 1 = largest clean activation), mean ± std over samples, ID test vs each OOD set.
* Fig. 4: ``mean Q_OOD / mean Q_ID`` and ``mean Q'_OOD / mean Q'_ID`` per OOD set (with the
  method's k1, k2, lambda), plus how well each alone separates ID from OOD (AUROC).
* Fig. 5: the perturbed activation ``a^eps`` ordered by the clean rank, ID vs OOD.
"""

from __future__ import annotations

import os

import matplotlib.pyplot as plt
import numpy as np

from jaxood import metrics
from jaxood.analyses.common import Context, RunData, fit_stats, q_values
from jaxood.analyses.output import Outcome, Table, aggregate, band, grouped_bars, save
from jaxood.analyses.report import verdict
from jaxood.detectors import adascale


def rank_profile(feature: np.ndarray, values: np.ndarray, chunk: int = 4096):
    """Mean and std over samples of ``values`` ordered by the clean ``feature``'s rank
    (descending, ties by index as ``lax.top_k``). ``[N, D], [N, D] -> [D], [D]``."""
    total = np.zeros(feature.shape[1])
    total_sq = np.zeros(feature.shape[1])
    for start in range(0, len(feature), chunk):
        f = np.asarray(feature[start:start + chunk], np.float64)
        order = np.argsort(-f, axis=1, kind="stable")
        v = np.take_along_axis(np.asarray(values[start:start + chunk], np.float64), order, 1)
        total += v.sum(0)
        total_sq += (v * v).sum(0)
    mean = total / len(feature)
    return mean, np.sqrt(np.maximum(total_sq / len(feature) - mean**2, 0.0))


def _band_means(profile: np.ndarray, d: int) -> dict[str, float]:
    """Mean of a rank profile over the top 1 %, top 5 % and all ranks (counts as k1', k2')."""
    c1, c5 = max(1, int(d * 0.01)), max(1, int(d * 0.05))
    return {"top1%": float(profile[:c1].mean()), "top5%": float(profile[:c5].mean()),
            "all": float(profile.mean())}


def _profiles(run: RunData, kind: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{split: (mean, std)}`` of the shift (``kind="shift"``) or the perturbed activation."""
    out = {}
    for split in ["id_test", *run.ood_sets]:
        f, ft = run.feature(split), run.perturbed(split)
        out[split] = rank_profile(f, np.abs(f - ft) if kind == "shift" else ft)
    return out


def _rank_table(ctx: Context, kind: str, title: str):
    """Per-run band means and OOD/ID ratios; the first run's curves."""
    rows, curves, d = [], None, None
    for model in ctx.models:
        run = ctx.run_data(model)
        prof = _profiles(run, kind)
        d = run.feature_dim
        ref = _band_means(prof["id_test"][0], d)
        for split, (mean, _) in prof.items():
            bands = _band_means(mean, d)
            row = {"set": split, **bands}
            row.update({f"ratio {k}": v / ref[k] if ref[k] else float("nan")
                        for k, v in bands.items()})
            rows.append(row)
        if curves is None:
            curves = {k: {"mean": m, "std": s} for k, (m, s) in prof.items()}
    cols = ["top1%", "top5%", "all", "ratio top1%", "ratio top5%", "ratio all"]
    note = ("Mean over samples of the value at the clean activation's rank band; ratio = "
            "OOD set / ID test. Mean ± std over runs.")
    return Table(kind, title, ["set"], cols, rows, note, digits=4), curves, d


def _rank_plot(ctx: Context, curves: dict, ylabel: str, file: str) -> str:
    sets = [k for k in curves if k != "id_test"]
    fig, axes = plt.subplots(1, len(sets), figsize=(2.9 * len(sets), 2.5), squeeze=False)
    for ax, key in zip(axes[0], sets):
        x = np.arange(1, len(curves[key]["mean"]) + 1)
        band(ax, x, curves["id_test"]["mean"], curves["id_test"]["std"], "ID test")
        band(ax, x, curves[key]["mean"], curves[key]["std"], key.split("/")[-1])
        ax.set_xscale("log")
        ax.set_xlabel("clean activation rank (1 = largest)", fontsize=7)
        ax.set_ylabel(ylabel, fontsize=7)
        ax.set_title(key, fontsize=8)
        ax.tick_params(labelsize=6)
        ax.legend(fontsize=6)
    return save(fig, os.path.join(ctx.out_dir, file))


def _verdicts_by_set(table: Table, col: str, above: bool, claim: str, paper: str):
    agg = aggregate(table)
    out = []
    for row in agg.rows:
        if row["set"] == "id_test":
            continue
        holds = row[col] > 1.0 if above else row[col] < 1.0
        spread = f" ± {row[col + '_std']:.3f} over runs" if row["n"] > 1 else ""
        out.append(verdict(f"{claim} ({row['set']})", paper,
                           f"OOD/ID = {row[col]:.3f}{spread}", holds))
    return out


def shift_by_rank(ctx: Context):
    """Fig. 3."""
    table, curves, d = _rank_table(ctx, "shift", "Activation shift |a - a^eps| by clean rank")
    plot = _rank_plot(ctx, curves, "|a - a^eps|", "fig3_shift.png")
    verdicts = _verdicts_by_set(table, "ratio top1%", True, "OOD shift > ID shift at the top "
                                "1 % ranks", "holds on every ImageNet OOD set (Fig. 3)")
    agg = aggregate(table)
    sharper = [r for r in agg.rows if r["set"] != "id_test"]
    verdicts.append(verdict(
        "the OOD/ID gap is larger at the top ranks than over all ranks", "yes (Fig. 3)",
        ", ".join(f"{r['set']}: {r['ratio top1%']:.2f} vs {r['ratio all']:.2f}"
                  for r in sharper),
        all(r["ratio top1%"] > r["ratio all"] for r in sharper)))
    return Outcome([table], {"feature_dim": d, "o": 0.05, "eps": 0.5, "id": "id_test",
                             "curves_from": ctx.models[0]},
                   {"rows": agg.rows}, [plot], {"curves_run0": curves}, verdicts)


def perturbed_by_rank(ctx: Context):
    """Fig. 5."""
    table, curves, d = _rank_table(ctx, "perturbed", "Perturbed activation a^eps by clean rank")
    plot = _rank_plot(ctx, curves, "a^eps", "fig5_perturbed.png")
    verdicts = _verdicts_by_set(table, "ratio top5%", False, "ID perturbed activations > OOD "
                                "at the top 5 % ranks", "holds (Fig. 5)")
    return Outcome([table], {"feature_dim": d, "o": 0.05, "eps": 0.5, "id": "id_test",
                             "curves_from": ctx.models[0]},
                   {"rows": aggregate(table).rows}, [plot], {"curves_run0": curves}, verdicts)


def _q_rows(run: RunData) -> list[dict]:
    d = {"k1": 1.0, "k2": 5.0, "lmbda": 10.0}
    forms = {"Q": "q", "C_o": "c_o", "Q'": adascale.Q_FORMS[0]}
    vals = {}
    for split in ["id_test", *run.ood_sets]:
        f, ft = run.feature(split), run.perturbed(split)
        vals[split] = {name: np.asarray(q_values(f, ft, np.float32(d["lmbda"]), k1=d["k1"],
                                                 k2=d["k2"], form=form))
                       for name, form in forms.items()}
    rows = []
    ref = vals["id_test"]
    for split in run.ood_sets:
        row = {"set": split}
        for name in forms:
            row[f"{name} OOD/ID"] = float(vals[split][name].mean() / ref[name].mean())
            # Each statistic as a detector: lower = more ID-like, so the score is its negative.
            row[f"AUROC(-{name})"] = 100.0 * metrics.auroc(-ref[name], -vals[split][name])
        rows.append(row)
    return rows


def q_ratio(ctx: Context):
    """Fig. 4."""
    rows = []
    for model in ctx.models:
        run = ctx.run_data(model)
        fit_stats(run.feature("id_val"), run.perturbed("id_val"))  # checks k1', k2' fit D
        rows += _q_rows(run)
    cols = ["Q OOD/ID", "Q' OOD/ID", "C_o OOD/ID", "AUROC(-Q)", "AUROC(-Q')", "AUROC(-C_o)"]
    table = Table("q_ratio", "Q, Q' and C_o: OOD/ID ratio of means and AUROC as a detector",
                  ["set"], cols, rows, "k1 = 1 %, k2 = 5 %, lambda = 10; ID = ID test.",
                  digits=3)
    agg = aggregate(table)
    fig, ax = plt.subplots(figsize=(max(3.5, 1.0 * len(agg.rows) + 1.5), 2.6))
    grouped_bars(ax, [r["set"].split("/")[-1] for r in agg.rows],
                 {"Q_OOD/Q_ID": [r["Q OOD/ID"] for r in agg.rows],
                  "Q'_OOD/Q'_ID": [r["Q' OOD/ID"] for r in agg.rows]},
                 {"Q_OOD/Q_ID": [r["Q OOD/ID_std"] for r in agg.rows],
                  "Q'_OOD/Q'_ID": [r["Q' OOD/ID_std"] for r in agg.rows]})
    ax.axhline(1.0, color="k", lw=0.8, ls=":")
    ax.set_ylabel("ratio of means", fontsize=8)
    plot = save(fig, os.path.join(ctx.out_dir, "fig4_q_ratio.png"))
    verdicts = [verdict(f"Q_OOD > Q_ID ({r['set']})", "ratio > 1 on most sets (Fig. 4)",
                        f"{r['Q OOD/ID']:.3f}", r["Q OOD/ID"] > 1.0) for r in agg.rows]
    verdicts += [verdict(f"C_o is higher for ID ({r['set']})", "yes (Sec. 4.1.2)",
                         f"C_o OOD/ID = {r['C_o OOD/ID']:.3f}", r["C_o OOD/ID"] < 1.0)
                 for r in agg.rows]
    return Outcome([table], {"k1": 1.0, "k2": 5.0, "lmbda": 10.0, "o": 0.05, "eps": 0.5},
                   {"rows": agg.rows}, [plot], {}, verdicts)
