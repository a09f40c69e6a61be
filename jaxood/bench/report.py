"""Result files: ``results.md`` / ``results.csv`` / ``results.json``, ``aps.json``, plots.

All files are written atomically (temp file in the same directory + ``os.replace``), so a
crash never leaves a half-written table. Values are OpenOOD percentages; with several runs
each cell is ``mean ± population std``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
from collections.abc import Mapping, Sequence

from jaxood.bench.store import METRIC_NAMES, ResultStore, aggregate
from jaxood.fsutil import atomic_write_text, plain
from jaxood.version import __version__

#: ``BenchResult.info``'s keys, in the order results.json shows them.
INFO_KEYS = ("benchmark", "description", "model", "runs", "detectors", "computed", "skipped",
             "devices", "fsood", "near", "far", "network_passes", "failed", "timings",
             "total_s", "jaxood_version")


@dataclasses.dataclass
class BenchResult:
    """What :func:`jaxood.bench.runner.run` returns and these files show.

    Attributes:
      table: ``{detector: {dataset|"nearood"|"farood": {metric: (mean, std)}}}`` (percent),
        over every detector in the merged result store (this run's and earlier ones).
      per_run: ``{detector: [ {dataset: {metric: value}} per run ]}``.
      aps: ``{detector: [ {"run", "model", "model_fingerprint", "chosen", "aps_auroc",
        "grid"} per run ]}``.
      scores: first run's ``{detector: {"id": [N], "<group>/<name>": [M]}}`` for the detectors
        computed in this invocation (for plots).
      info: benchmark, model, runs, devices, timings (per run: ``stages``, the
        :class:`~jaxood.features.timing.StageTimes` of decode waits, network passes, APS,
        evaluation and writing), and this invocation's ``computed``, ``skipped`` (already in
        the store with the same settings) and ``failed`` detectors.
      out_dir: where the files went.
    """

    table: dict
    per_run: dict
    aps: dict
    scores: dict
    info: dict
    out_dir: str


def bench_result(results: ResultStore, bench, out_dir: str, model_dirs: Sequence[str],
                 scores: dict, invocation: Mapping) -> BenchResult:
    """The :class:`BenchResult` of the result store as it is now: its table over every stored
    detector, with ``info`` = the benchmark's and store's facts plus this ``invocation``'s
    (``computed``, ``skipped``, ``devices``, ``fsood``, ``network_passes``, ``failed``,
    ``timings``, ``total_s``)."""
    per_run = results.per_run()
    facts = {
        "benchmark": bench.name, "description": bench.description,
        "model": os.path.basename(out_dir), "runs": list(model_dirs),
        "detectors": list(per_run), "near": list(bench.ood_names["near"]),
        "far": list(bench.ood_names["far"]), "jaxood_version": __version__, **invocation,
    }
    info = {k: facts[k] for k in INFO_KEYS}
    return BenchResult(aggregate(per_run), per_run, results.aps(), scores, info, out_dir)


def _cell(mean_std: tuple[float, float] | None, runs: int) -> str:
    if mean_std is None:
        return "–"
    mean, std = mean_std
    return f"{mean:.2f}" if runs <= 1 else f"{mean:.2f} ± {std:.2f}"


def _rows(result) -> list[str]:
    """Dataset row order: near sets, nearood, far sets, farood."""
    info = result.info
    return [*info["near"], "nearood", *info["far"], "farood"]


def markdown(result, per_dataset: bool = True) -> str:
    """The summary table (near/far means per detector) followed (``per_dataset``) by the
    per-dataset tables, or else by where to find them."""
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
    if not per_dataset:
        return "\n".join(lines + ["", f"Per-dataset tables: {result.out_dir}/results.md"])
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
