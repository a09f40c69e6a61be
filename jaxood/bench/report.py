"""Result files: ``results.md`` / ``results.csv`` / ``results.json``, ``aps.json``, plots.

All files are written atomically (temp file in the same directory + ``os.replace``), so a
crash never leaves a half-written table. Values are OpenOOD percentages; with several runs
each cell is ``mean ± population std``.
"""

from __future__ import annotations

import csv
import io
import json
import os

from jaxood.fsutil import atomic_write_text, plain

METRIC_NAMES = ("FPR@95", "AUROC", "AUPR_IN", "AUPR_OUT", "ACC")


def _cell(mean_std: tuple[float, float] | None, runs: int) -> str:
    if mean_std is None:
        return "–"
    mean, std = mean_std
    return f"{mean:.2f}" if runs <= 1 else f"{mean:.2f} ± {std:.2f}"


def _rows(result) -> list[str]:
    """Dataset row order: near sets, nearood, far sets, farood."""
    info = result.info
    return [*info["near"], "nearood", *info["far"], "farood"]


def markdown(result) -> str:
    """The summary table (near/far means per detector) followed by per-dataset tables."""
    info, table = result.info, result.table
    runs = len(info["runs"])
    lines = [
        f"# {info['benchmark']} / {info['model']}",
        "",
        f"{info['description']}. Runs: {runs}; devices: {info['devices']}; "
        f"total time {info['total_s']:.1f} s. Metrics in %, OpenOOD v1.5 conventions "
        "(FPR@95 = ID flagged at 95% OOD recall)"
        + ("; mean ± std over runs." if runs > 1 else "."),
        "",
        "| detector | near FPR@95 ↓ | near AUROC ↑ | far FPR@95 ↓ | far AUROC ↑ | ACC |",
        "|---|---|---|---|---|---|",
    ]
    for det, rows in table.items():
        near, far = rows.get("nearood", {}), rows.get("farood", {})
        acc = (near or far).get("ACC")
        lines.append(
            f"| {det} | {_cell(near.get('FPR@95'), runs)} | {_cell(near.get('AUROC'), runs)} | "
            f"{_cell(far.get('FPR@95'), runs)} | {_cell(far.get('AUROC'), runs)} | "
            f"{_cell(acc, runs)} |"
        )
    lines += ["", "## Per dataset", ""]
    for det, rows in table.items():
        chosen = result.aps.get(det, [{}])[0].get("chosen", {})
        lines += [f"### {det}", "", f"Hyperparameters (run 0): `{json.dumps(plain(chosen))}`", ""]
        lines.append("| dataset | " + " | ".join(METRIC_NAMES) + " |")
        lines.append("|---" * (len(METRIC_NAMES) + 1) + "|")
        for ds in _rows(result):
            if ds in rows:
                name = f"**{ds}**" if ds in ("nearood", "farood") else ds
                lines.append(
                    f"| {name} | "
                    + " | ".join(_cell(rows[ds][k], runs) for k in METRIC_NAMES)
                    + " |"
                )
        lines.append("")
    return "\n".join(lines)


def csv_text(result) -> str:
    """One row per (detector, dataset): group, mean and std of each metric."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["detector", "dataset", "group", *METRIC_NAMES, *[f"{k}_std" for k in METRIC_NAMES]])
    near = set(result.info["near"]) | {"nearood"}
    for det, rows in result.table.items():
        for ds in _rows(result):
            if ds not in rows:
                continue
            group = "near" if ds in near else "far"
            means = [f"{rows[ds][k][0]:.4f}" for k in METRIC_NAMES]
            stds = [f"{rows[ds][k][1]:.4f}" for k in METRIC_NAMES]
            w.writerow([det, ds, group, *means, *stds])
    return buf.getvalue()


def json_obj(result) -> dict:
    return plain(
        {
            "info": result.info,
            "table": {
                det: {
                    ds: {k: {"mean": v[0], "std": v[1]} for k, v in m.items()}
                    for ds, m in rows.items()
                }
                for det, rows in result.table.items()
            },
            "per_run": result.per_run,
            "hparams": {det: [r["chosen"] for r in runs] for det, runs in result.aps.items()},
        }
    )


def write_all(result, *, plots: bool = True) -> dict[str, str]:
    """Writes every result file into ``result.out_dir``; returns ``{kind: path}``."""
    out = result.out_dir
    os.makedirs(out, exist_ok=True)
    paths = {
        "md": os.path.join(out, "results.md"),
        "csv": os.path.join(out, "results.csv"),
        "json": os.path.join(out, "results.json"),
        "aps": os.path.join(out, "aps.json"),
    }
    atomic_write_text(paths["md"], markdown(result) + "\n")
    atomic_write_text(paths["csv"], csv_text(result))
    atomic_write_text(paths["json"], json.dumps(json_obj(result), indent=1) + "\n")
    atomic_write_text(paths["aps"], json.dumps(plain(result.aps), indent=1) + "\n")
    if plots and result.table:
        # Deferred: plots imports matplotlib, needed only when plots are written.
        from jaxood.bench import plots as plots_lib

        paths.update(plots_lib.write_plots(result, os.path.join(out, "plots")))
    return paths
