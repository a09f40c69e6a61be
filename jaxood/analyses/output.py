"""Tables (aggregated over runs and draws), their Markdown, the JSON record, and small PNG plots
(heatmaps with values, colour bars and axis labels; line plots with error bands; bars).

All files are written atomically (:mod:`jaxood.fsutil`).
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from jaxood.fsutil import atomic_write_bytes, atomic_write_text, plain  # noqa: E402


@dataclasses.dataclass
class Table:
    """Rows of one table. ``labels`` identify a row; ``metrics`` are numbers. Rows with the same
    labels (several runs, several random draws) are merged by :func:`aggregate`.

    After aggregation each row holds ``<metric>`` (mean), ``<metric>_std`` (population std,
    as OpenOOD) and ``n`` (how many values were merged).
    """

    name: str
    title: str
    labels: list[str]
    metrics: list[str]
    rows: list[dict]
    note: str = ""
    digits: int = 2


def aggregate(table: Table) -> Table:
    """Merges rows with equal labels: mean, population std and count of every metric (NaN
    values, e.g. a grid cell that does not fit D, are left out)."""
    groups: dict[tuple, list[dict]] = {}
    for row in table.rows:
        groups.setdefault(tuple(row[k] for k in table.labels), []).append(row)
    rows = []
    for key, members in groups.items():
        out = dict(zip(table.labels, key))
        for m in table.metrics:
            vals = np.array([r.get(m, np.nan) for r in members], np.float64)
            vals = vals[np.isfinite(vals)]
            out[m] = float(vals.mean()) if vals.size else float("nan")
            out[f"{m}_std"] = float(vals.std()) if vals.size else float("nan")
        out["n"] = len(members)
        rows.append(out)
    return dataclasses.replace(table, rows=rows)


def cell(row: Mapping[str, Any], metric: str, digits: int = 2) -> str:
    mean, std = row.get(metric), row.get(f"{metric}_std")
    if mean is None or (isinstance(mean, float) and not math.isfinite(mean)):
        return "–"
    if row.get("n", 1) > 1 and std is not None and math.isfinite(std):
        return f"{mean:.{digits}f} ± {std:.{digits}f}"
    return f"{mean:.{digits}f}"


def markdown_table(table: Table) -> str:
    """The aggregated table as Markdown (``mean ± std`` when rows merged several values)."""
    lines = [f"### {table.title}", ""]
    if table.note:
        lines += [table.note, ""]
    head = [*table.labels, *table.metrics]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table.rows:
        labels = [str(row[k]) for k in table.labels]
        values = [cell(row, m, table.digits) for m in table.metrics]
        lines.append("| " + " | ".join(labels + values) + " |")
    return "\n".join(lines) + "\n"


def table_json(table: Table, raw: Table | None = None) -> dict:
    """The aggregated table; with ``raw``, also its unaggregated rows (per run / draw)."""
    out = {"title": table.title, "labels": table.labels, "metrics": table.metrics,
           "rows": table.rows, "note": table.note}
    if raw is not None:
        out["raw_rows"] = raw.rows
    return plain(out)


def find(table_json_or_table, **labels) -> dict | None:
    """The first row whose labels equal ``labels`` (a :class:`Table` or its JSON)."""
    rows = table_json_or_table["rows"] if isinstance(table_json_or_table, dict) else \
        table_json_or_table.rows
    for row in rows:
        if all(row.get(k) == v for k, v in labels.items()):
            return row
    return None


def per_run(rows: Sequence[Mapping], metric: str, **labels) -> np.ndarray:
    """``[runs]`` values of ``metric`` in the raw (unaggregated) rows matching ``labels``,
    ordered by their ``run`` index; rows of one run (random draws) are averaged first."""
    by_run: dict[int, list[float]] = {}
    for row in rows:
        if all(row.get(k) == v for k, v in labels.items()):
            by_run.setdefault(int(row.get("run", 0)), []).append(float(row.get(metric, np.nan)))
    if not by_run:
        raise KeyError(f"no row with {labels} holds {metric!r}")
    return np.array([np.mean(by_run[r]) for r in sorted(by_run)], np.float64)


def per_run_metrics(rows: Sequence[Mapping], metrics: Sequence[str], **labels) -> dict:
    """``{metric: [runs]}`` (:func:`per_run` for each metric)."""
    return {m: per_run(rows, m, **labels) for m in metrics}


def mean_of_groups(rows, **labels) -> dict[str, np.ndarray]:
    """``{"mean_FPR@95", "mean_AUROC": [runs]}``: the mean of near- and far-OOD per run."""
    return {f"mean_{m}": (per_run(rows, f"near_{m}", **labels) +
                          per_run(rows, f"far_{m}", **labels)) / 2 for m in ("FPR@95", "AUROC")}


RUN_KEYS = ("command", "wall_s", "network_passes", "jaxood_version")


def earlier_runs(out_dir: str, name: str) -> list[dict]:
    """The invocations recorded in an existing ``<out_dir>/<name>.json``, oldest first.

    A re-run (e.g. from the feature cache, in seconds) replaces the record, but not the
    cost of the run that computed it: each record carries its predecessors' ``command``,
    ``wall_s``, ``network_passes`` and ``jaxood_version``. An unreadable old record is
    reported (warning) and contributes nothing.
    """
    path = os.path.join(out_dir, f"{name}.json")
    if not os.path.isfile(path):
        return []
    try:
        with open(path) as f:
            old = json.load(f)
        return [*old.get("earlier_runs", []), {k: old.get(k) for k in RUN_KEYS}]
    except (OSError, ValueError, AttributeError) as e:
        warnings.warn(f"{path}: unreadable earlier record ({e}); its run history is not kept",
                      stacklevel=2)
        return []


def write_record(out_dir: str, name: str, record: dict, markdown: str) -> dict[str, str]:
    """``<out_dir>/<name>.json`` and ``<name>.md``, atomically."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {"json": os.path.join(out_dir, f"{name}.json"),
             "md": os.path.join(out_dir, f"{name}.md")}
    atomic_write_text(paths["json"], json.dumps(plain(record), indent=1) + "\n")
    atomic_write_text(paths["md"], markdown)
    return paths


# --------------------------------------------------------------------------- plots


def save(fig, path: str) -> str:
    """Saves a figure as a small PNG (atomic write) and closes it; returns the file name."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())
    return os.path.basename(path)


def heatmap(ax, values: np.ndarray, xticks: Sequence, yticks: Sequence, *, xlabel: str,
            ylabel: str, title: str, higher_better: bool = True, digits: int = 1) -> None:
    """A heatmap with the value in each cell, a colour bar and axis labels; NaN cells blank.
    Darker = better (as the paper's figures)."""
    cmap = plt.get_cmap("Blues" if higher_better else "Blues_r").with_extremes(bad="white")
    data = np.ma.masked_invalid(np.asarray(values, np.float64))
    im = ax.imshow(data, cmap=cmap, aspect="auto", origin="lower")
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    ax.set_xticks(range(len(xticks)), [str(t) for t in xticks], fontsize=7)
    ax.set_yticks(range(len(yticks)), [str(t) for t in yticks], fontsize=7)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.set_title(title, fontsize=9)
    finite = data.compressed()
    mid = (finite.min() + finite.max()) / 2 if finite.size else 0.0
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            v = values[i][j]
            if np.isfinite(v):
                dark = (v > mid) == higher_better
                ax.text(j, i, f"{v:.{digits}f}", ha="center", va="center", fontsize=6,
                        color="white" if dark else "black")


def band(ax, x, mean, std, label: str, **kw) -> None:
    """A line with a shaded ± std band."""
    x, mean, std = (np.asarray(a, np.float64) for a in (x, mean, std))
    (line,) = ax.plot(x, mean, label=label, lw=1.2, **kw)
    ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2, lw=0)


def grouped_bars(ax, groups: Sequence[str], series: Mapping[str, Sequence[float]],
                 errors: Mapping[str, Sequence[float]] | None = None) -> None:
    """Bars per group (x) for each series, with optional error bars."""
    x = np.arange(len(groups))
    width = 0.8 / max(1, len(series))
    for i, (name, vals) in enumerate(series.items()):
        err = None if errors is None else errors.get(name)
        ax.bar(x + (i - (len(series) - 1) / 2) * width, vals, width, yerr=err, label=name)
    ax.set_xticks(x, groups, rotation=30, ha="right", fontsize=7)
    ax.legend(fontsize=7)


class Outcome(NamedTuple):
    """What an experiment returns.

    Attributes:
      tables: rows per run/draw (aggregated by :func:`run_experiment`).
      settings: what was used (grids, percentiles and where they came from, subset sizes).
      summary: key numbers for the report and the claim checks.
      plots: PNG file names written into ``ctx.out_dir``.
      data: extra JSON-only data (e.g. curves).
      verdicts: the paper's claims checked on this data (:mod:`jaxood.analyses.verdicts`).
    """

    tables: list[Table]
    settings: dict
    summary: dict
    plots: list[str] = []
    data: dict = {}
    verdicts: list[dict] = []
