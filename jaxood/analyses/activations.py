"""The paper's observations in activation space (Figs. 3, 4, 5), from cached features, on every
run given (tables: mean ± std over runs; plots: the mean over runs of each run's mean curve,
band = ± std over runs; per-run values in the JSON).

* Fig. 3: the activation shift ``|a - a^eps|`` ordered by the clean activation's rank
  (rank 1 = largest clean activation), ID test vs each OOD set, absolute and relative to the
  clean activation (``|Δ|/a``: band mean of the shift over band mean of ``a``).
* Fig. 4: ``mean Q_OOD / mean Q_ID`` and ``mean Q'_OOD / mean Q'_ID`` per OOD set (with the
  method's k1, k2, lambda), and the decomposition ``Q' = C_o + lambda Q``: each term's mean on
  ID-val, ID test and every OOD set and how well each (and ``±Q'``) separates ID from OOD.
* Fig. 5: the perturbed activation ``a^eps`` ordered by the clean rank, ID vs OOD, and its
  change relative to the clean activation ``(a^eps - a)/a``.
"""

from __future__ import annotations

import os

import matplotlib.pyplot as plt
import numpy as np

from jaxood import metrics
from jaxood.analyses import verdicts as V
from jaxood.analyses.common import Context, RunData, chunked_q, fit_stats
from jaxood.analyses.output import Outcome, Table, aggregate, band, grouped_bars, per_run, save


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


BANDS = ("top1%", "top5%", "all")


def _band_means(profile: np.ndarray, d: int) -> dict[str, float]:
    """Mean of a rank profile over the top 1 %, top 5 % and all ranks (counts as k1', k2')."""
    c1, c5 = max(1, int(d * 0.01)), max(1, int(d * 0.05))
    return {"top1%": float(profile[:c1].mean()), "top5%": float(profile[:c5].mean()),
            "all": float(profile.mean())}


def _profiles(run: RunData, kind: str) -> dict[str, dict[str, np.ndarray]]:
    """``{split: {"value": [D], "clean": [D]}}``: mean rank profiles of the shift
    (``kind="shift"``) or the perturbed activation, and of the clean activation ``a``."""
    out = {}
    for split in ["id_test", *run.ood_sets]:
        f, ft = run.feature(split), run.perturbed(split)
        value = np.abs(f - ft) if kind == "shift" else ft
        out[split] = {"value": rank_profile(f, value)[0], "clean": rank_profile(f, f)[0]}
    return out


def _relative(value: float, clean: float, kind: str) -> float:
    """|Δ|/a (shift) or (a^eps - a)/a (perturbed) of band means, in percent."""
    if not clean:
        return float("nan")
    return 100.0 * (value if kind == "shift" else value - clean) / clean


def _rank_table(ctx: Context, kind: str, title: str):
    """Per-run band means, relative values and OOD/ID ratios; per-run curves."""
    rows, curves, d = [], [], None
    for i, model in enumerate(ctx.models):
        run = ctx.run_data(model)
        prof = _profiles(run, kind)
        d = run.feature_dim
        ref = _band_means(prof["id_test"]["value"], d)
        for split, p in prof.items():
            bands, clean = _band_means(p["value"], d), _band_means(p["clean"], d)
            row = {"set": split, "run": i, **bands}
            row.update({f"rel {k} %": _relative(bands[k], clean[k], kind) for k in BANDS[:2]})
            row.update({f"ratio {k}": v / ref[k] if ref[k] else float("nan")
                        for k, v in bands.items()})
            rows.append(row)
        curves.append(prof)
    rel = "|Δ|/a" if kind == "shift" else "(a^eps - a)/a"
    cols = [*BANDS, "rel top1% %", "rel top5% %", "ratio top1%", "ratio top5%", "ratio all"]
    note = ("Mean over samples of the value at the clean activation's rank band; rel = "
            f"{rel} of the band means (percent); ratio = OOD set / ID test. Mean ± std over "
            f"{len(ctx.models)} run(s).")
    return Table(kind, title, ["set"], cols, rows, note, digits=4), curves, d


def _curve_stats(curves: list[dict], split: str, what) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std over runs of a per-run curve ``what(profile) -> [D]``."""
    stack = np.stack([what(c[split]) for c in curves])
    return stack.mean(0), stack.std(0)


HEAD = 0.9  # share of ranks the relative row is scaled to: |Δ|/a diverges where a -> 0


def clip_to_head(ax, means: list[np.ndarray]) -> None:
    """Y-limits of a relative-curve axis from the top ``HEAD`` share of ranks."""
    head = np.concatenate([m[: max(1, int(HEAD * len(m)))] for m in means])
    head = head[np.isfinite(head)]
    if head.size:
        lo, hi = min(0.0, float(head.min())), float(head.max())
        ax.set_ylim(lo - 0.05 * (hi - lo), hi + 0.1 * (hi - lo) + 1e-12)


def _rank_plot(ctx: Context, curves: list[dict], kind: str, ylabel: str, file: str) -> str:
    """Absolute (top row) and relative (bottom row) rank curves per OOD set vs ID test."""
    sets = [k for k in curves[0] if k != "id_test"]
    rel = {"shift": ("|Δ|/a (%)", lambda p: 100 * p["value"] / np.where(p["clean"] > 0,
                                                                     p["clean"], np.nan)),
           "perturbed": ("(a^eps - a)/a (%)", lambda p: 100 * (p["value"] - p["clean"]) /
                         np.where(p["clean"] > 0, p["clean"], np.nan))}[kind]
    rows = (("value", ylabel, lambda p: p["value"]), ("relative", *rel))
    fig, axes = plt.subplots(2, len(sets), figsize=(2.9 * len(sets), 4.8), squeeze=False)
    for r, (_, label, what) in enumerate(rows):
        for ax, key in zip(axes[r], sets):
            x = np.arange(1, len(curves[0][key]["value"]) + 1)
            stats = [_curve_stats(curves, k, what) for k in ("id_test", key)]
            band(ax, x, *stats[0], "ID test")
            band(ax, x, *stats[1], key.split("/")[-1])
            ax.set_xscale("log")
            ax.set_xlabel("clean activation rank (1 = largest)", fontsize=7)
            ax.set_ylabel(label, fontsize=7)
            ax.set_title(key, fontsize=8)
            ax.tick_params(labelsize=6)
            ax.legend(fontsize=6)
            if r == 1:
                clip_to_head(ax, [mean for mean, _ in stats])
    fig.suptitle(f"mean over samples; band = ± std over {len(curves)} run(s); relative row "
                 f"scaled to the top {HEAD:.0%} of ranks (a -> 0 at the tail)", fontsize=8)
    fig.tight_layout()
    return save(fig, os.path.join(ctx.out_dir, file))


def _set_verdicts(rows: list[dict], sets, col: str, threshold: float, up: bool, claim: str,
                  paper: str) -> list[dict]:
    """One verdict per OOD set on the per-run values of ``col`` against ``threshold``."""
    return [V.above(f"{claim} ({s})", paper, per_run(rows, col, set=s), threshold, up=up,
                    metric=col) for s in sets]


def _curves_json(curves: list[dict]) -> dict:
    return {split: {k: [c[split][k] for c in curves] for k in ("value", "clean")}
            for split in curves[0]}


def _ood_sets(table: Table) -> list[str]:
    return list(dict.fromkeys(r["set"] for r in table.rows if r["set"] != "id_test"))


def shift_by_rank(ctx: Context):
    """Fig. 3."""
    table, curves, d = _rank_table(ctx, "shift", "Activation shift |a - a^eps| by clean rank")
    plot = _rank_plot(ctx, curves, "shift", "|a - a^eps|", "fig3_shift.png")
    sets = _ood_sets(table)
    verdicts = _set_verdicts(table.rows, sets, "ratio top1%", 1.0, True, "OOD shift > ID "
                             "shift at the top 1 % ranks", "holds on every ImageNet OOD set "
                             "(Fig. 3)")
    for s in sets:
        gap = (per_run(table.rows, "ratio top1%", set=s) - per_run(table.rows, "ratio all", set=s))
        verdicts.append(V.above(f"the OOD/ID gap is larger at the top 1 % ranks than over all "
                                f"ranks ({s})", "yes (Fig. 3)", gap, 0.0,
                                metric="ratio top1% - ratio all"))
    for s in sets:
        rel = per_run(table.rows, "rel top1% %", set=s) - per_run(table.rows, "rel top1% %",
                                                                 set="id_test")
        verdicts.append(V.above(f"beyond the paper: relative shift |Δ|/a at the top 1 % ranks "
                                f"is larger for OOD ({s})", "not stated (the paper shows "
                                "absolute shifts)", rel, 0.0, metric="rel OOD - rel ID (points)"))
    agg = aggregate(table)
    return Outcome([table], {"feature_dim": d, "o": 0.05, "eps": 0.5, "id": "id_test",
                             "runs": list(ctx.models)},
                   {"rows": agg.rows}, [plot], {"curves_per_run": _curves_json(curves)},
                   verdicts)


def perturbed_by_rank(ctx: Context):
    """Fig. 5."""
    table, curves, d = _rank_table(ctx, "perturbed", "Perturbed activation a^eps by clean rank")
    plot = _rank_plot(ctx, curves, "perturbed", "a^eps", "fig5_perturbed.png")
    verdicts = _set_verdicts(table.rows, _ood_sets(table), "ratio top5%", 1.0, False,
                             "ID perturbed activations > OOD at the top 5 % ranks",
                             "holds (Fig. 5)")
    return Outcome([table], {"feature_dim": d, "o": 0.05, "eps": 0.5, "id": "id_test",
                             "runs": list(ctx.models)},
                   {"rows": aggregate(table).rows}, [plot],
                   {"curves_per_run": _curves_json(curves)}, verdicts)


#: The method's settings of Q' (k1, k2 in percent of D).
Q_SETTINGS = {"k1": 1.0, "k2": 5.0, "lmbda": 10.0}


def q_terms(run: RunData, splits) -> dict[str, dict[str, np.ndarray]]:
    """``{split: {"Q", "lambda Q", "C_o", "Q'": [N]}}`` at the method's settings."""
    k = {"k1": Q_SETTINGS["k1"], "k2": Q_SETTINGS["k2"]}
    out = {}
    for split in splits:
        f, ft = run.feature(split), run.perturbed(split)
        q = chunked_q(f, ft, 1.0, form="q", **k)
        c_o = chunked_q(f, ft, 1.0, form="c_o", **k)
        qp = chunked_q(f, ft, Q_SETTINGS["lmbda"], form="lambda_q+c_o", **k)
        out[split] = {"Q": q, "lambda Q": Q_SETTINGS["lmbda"] * q, "C_o": c_o, "Q'": qp}
    return out


def _q_rows(run: RunData, i: int) -> tuple[list[dict], list[dict]]:
    """Per OOD set: OOD/ID ratios of means and each statistic's AUROC as a detector; per
    split: the decomposition Q' = C_o + lambda Q (means, C_o's share)."""
    vals = q_terms(run, ["id_val", "id_test", *run.ood_sets])
    ref = vals["id_test"]
    ratios = []
    for split in run.ood_sets:
        v = vals[split]
        row = {"set": split, "run": i}
        for name in ("Q", "C_o", "Q'"):
            row[f"{name} OOD/ID"] = float(v[name].mean() / ref[name].mean())
            # As a detector, lower = more ID-like (the method's reading of Q'): score = -X.
            row[f"AUROC(-{name})"] = 100.0 * metrics.auroc(-ref[name], -v[name])
        row["AUROC(+Q')"] = 100.0 * metrics.auroc(ref["Q'"], v["Q'"])
        row["AUROC(+C_o)"] = 100.0 * metrics.auroc(ref["C_o"], v["C_o"])
        ratios.append(row)
    terms = []
    for split, v in vals.items():
        means = {name: float(v[name].mean()) for name in ("C_o", "lambda Q", "Q'")}
        terms.append({"set": split, "run": i, **means,
                      "C_o share %": 100.0 * means["C_o"] / means["Q'"] if means["Q'"] else
                      float("nan")})
    return ratios, terms


def _q_plot(ctx: Context, agg: Table, terms: Table) -> str:
    """Left: OOD/ID ratios of Q and Q'. Right: the mean terms C_o and lambda Q of Q' per split
    (stacked), error bars = std over runs."""
    fig, axes = plt.subplots(1, 2, figsize=(max(7.0, 2.0 * len(agg.rows) + 3.0), 2.8))
    grouped_bars(axes[0], [r["set"].split("/")[-1] for r in agg.rows],
                 {"Q_OOD/Q_ID": [r["Q OOD/ID"] for r in agg.rows],
                  "Q'_OOD/Q'_ID": [r["Q' OOD/ID"] for r in agg.rows]},
                 {"Q_OOD/Q_ID": [r["Q OOD/ID_std"] for r in agg.rows],
                  "Q'_OOD/Q'_ID": [r["Q' OOD/ID_std"] for r in agg.rows]})
    axes[0].axhline(1.0, color="k", lw=0.8, ls=":")
    axes[0].set_ylabel("ratio of means", fontsize=8)
    t = terms.rows
    x = np.arange(len(t))
    axes[1].bar(x, [r["C_o"] for r in t], yerr=[r["C_o_std"] for r in t], label="C_o")
    axes[1].bar(x, [r["lambda Q"] for r in t], bottom=[r["C_o"] for r in t],
                yerr=[r["lambda Q_std"] for r in t], label="lambda Q")
    axes[1].set_xticks(x, [r["set"].split("/")[-1] for r in t], rotation=30, ha="right",
                       fontsize=7)
    axes[1].set_ylabel("mean Q' = C_o + lambda Q", fontsize=8)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    return save(fig, os.path.join(ctx.out_dir, "fig4_q_ratio.png"))


def q_ratio(ctx: Context):
    """Fig. 4, with Q' decomposed into its terms."""
    rows, term_rows = [], []
    for i, model in enumerate(ctx.models):
        run = ctx.run_data(model)
        fit_stats(run.feature("id_val"), run.perturbed("id_val"))  # checks k1', k2' fit D
        ratios, terms = _q_rows(run, i)
        rows += ratios
        term_rows += terms
    cols = ["Q OOD/ID", "Q' OOD/ID", "C_o OOD/ID", "AUROC(-Q)", "AUROC(-Q')", "AUROC(+Q')",
            "AUROC(-C_o)", "AUROC(+C_o)"]
    table = Table("q_ratio", "Q, Q' and C_o: OOD/ID ratio of means and AUROC as a detector",
                  ["set"], cols, rows, "k1 = 1 %, k2 = 5 %, lambda = 10; ID = ID test. "
                  "AUROC(-X): X read as OOD-likelihood (the method's reading of Q'); "
                  "AUROC(+X) the opposite reading.", digits=3)
    terms = Table("q_terms", "Q' = C_o + lambda Q: mean of each term per split",
                  ["set"], ["C_o", "lambda Q", "Q'", "C_o share %"], term_rows,
                  "lambda = 10; the adaptive percentile maps high Q' to p near p_min.", digits=3)
    agg = aggregate(table)
    plot = _q_plot(ctx, agg, aggregate(terms))
    sets = _ood_sets(table)
    verdicts = _set_verdicts(rows, sets, "Q OOD/ID", 1.0, True, "Q_OOD > Q_ID",
                             "ratio > 1 on most sets (Fig. 4)")
    verdicts += _set_verdicts(rows, sets, "C_o OOD/ID", 1.0, False, "C_o is higher for ID",
                              "yes (Sec. 4.1.2)")
    verdicts += _set_verdicts(rows, sets, "AUROC(-Q')", 50.0, True, "the method's reading: "
                              "Q' is higher for OOD (AUROC(-Q') > 50)", "assumed (Sec. 4)")
    return Outcome([table, terms], {**Q_SETTINGS, "o": 0.05, "eps": 0.5},
                   {"rows": agg.rows, "terms": aggregate(terms).rows}, [plot], {}, verdicts)
