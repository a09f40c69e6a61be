"""PNG plots of a benchmark run (matplotlib, Agg backend, atomic writes).

* ``hist_<detector>.png``: score histograms, ID test vs each OOD set (one panel per set);
* ``roc_<detector>.png``: ROC curves (OOD positive, score = -conf, as OpenOOD) per OOD set;
* ``auroc_near_far.png``: near/far mean AUROC per detector (bar chart).
"""

from __future__ import annotations

import io
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from jaxood import metrics  # noqa: E402
from jaxood.fsutil import atomic_write_bytes  # noqa: E402


def _save(fig, path: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def score_histograms(det: str, scores: dict, path: str) -> str:
    """One panel per OOD set: ID-test scores vs that set's (higher = more ID)."""
    ood = [k for k in scores if k != "id"]
    fig, axes = plt.subplots(1, len(ood), figsize=(3.2 * len(ood), 2.6), squeeze=False)
    s_id = np.asarray(scores["id"], np.float64)
    for ax, key in zip(axes[0], ood):
        s_ood = np.asarray(scores[key], np.float64)
        both = np.concatenate([s_id, s_ood])
        lo, hi = np.percentile(both, [0.5, 99.5])
        bins = np.linspace(lo, hi if hi > lo else lo + 1, 50)
        ax.hist(s_id, bins, alpha=0.55, density=True, label="ID test")
        ax.hist(s_ood, bins, alpha=0.55, density=True, label=key.split("/")[-1])
        ax.set_title(key, fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(f"{det}: scores (higher = more ID)", fontsize=10, y=1.06)
    return _save(fig, path)


def roc_curves(det: str, scores: dict, path: str) -> str:
    """ROC per OOD set with the OpenOOD convention (OOD positive)."""
    fig, ax = plt.subplots(figsize=(3.6, 3.4))
    s_id = np.asarray(scores["id"], np.float64)
    for key in (k for k in scores if k != "id"):
        s_ood = np.asarray(scores[key], np.float64)
        conf = np.concatenate([s_id, s_ood])
        is_ood = np.concatenate([np.zeros(len(s_id)), np.ones(len(s_ood))])
        fpr, tpr = metrics.roc_curve(is_ood, -conf)
        ax.plot(fpr, tpr, label=f"{key.split('/')[-1]} ({100 * metrics.auroc(s_id, s_ood):.1f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_xlabel("FPR (ID flagged as OOD)")
    ax.set_ylabel("TPR (OOD detected)")
    ax.set_title(f"{det}: ROC (AUROC %)", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def auroc_bars(table: dict, path: str) -> str:
    """Near/far mean AUROC per detector."""
    dets = list(table)
    def col(group, i):  # NaN bars for a benchmark without near (or far) sets
        return [table[d].get(group, {}).get("AUROC", (np.nan, np.nan))[i] for d in dets]

    near, far, near_sd, far_sd = col("nearood", 0), col("farood", 0), col("nearood", 1), col(
        "farood", 1)
    x = np.arange(len(dets))
    fig, ax = plt.subplots(figsize=(max(4.0, 0.55 * len(dets) + 1.5), 3.2))
    ax.bar(x - 0.2, near, 0.4, yerr=near_sd, label="near-OOD")
    ax.bar(x + 0.2, far, 0.4, yerr=far_sd, label="far-OOD")
    ax.set_xticks(x, dets, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("AUROC (%)")
    lo = min(near + far) if dets else 50
    ax.set_ylim(max(0.0, min(50.0, lo - 5)), 100)
    ax.legend(fontsize=8)
    return _save(fig, path)


def write_plots(result, directory: str) -> dict[str, str]:
    """Writes all plots of a result; returns ``{name: path}``."""
    os.makedirs(directory, exist_ok=True)
    out = {}
    for det, scores in result.scores.items():
        if "id" not in scores:
            continue
        out[f"hist_{det}"] = score_histograms(
            det, scores, os.path.join(directory, f"hist_{_safe(det)}.png")
        )
        out[f"roc_{det}"] = roc_curves(
            det, scores, os.path.join(directory, f"roc_{_safe(det)}.png")
        )
    out["bars"] = auroc_bars(result.table, os.path.join(directory, "auroc_near_far.png"))
    return out
