"""Markdown of one experiment and ``REPORT.md`` over all recorded experiments.

Every claim check is computed from the recorded numbers (:func:`verdict`), so the report
says "holds" / "does not hold" the same way on every re-run; a hand-written discussion file
(``--discussion``) can be put at the top.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from jaxood.analyses.registry import EXPERIMENTS
from jaxood.fsutil import atomic_write_text


def verdict(claim: str, paper: str, here: str, holds: bool | None) -> dict:
    """One of the paper's claims checked on this data (``holds=None``: not decidable)."""
    return {"claim": claim, "paper": paper, "here": here,
            "holds": None if holds is None else bool(holds)}


def _mark(holds) -> str:
    return {True: "holds", False: "**does not hold**", None: "n/a"}[holds]


def verdict_table(verdicts: Sequence[dict]) -> str:
    if not verdicts:
        return ""
    lines = ["| claim | paper | here | verdict |", "|---|---|---|---|"]
    for v in verdicts:
        lines.append(f"| {v['claim']} | {v['paper']} | {v['here']} | {_mark(v['holds'])} |")
    return "\n".join(lines) + "\n"


def _settings_line(settings: dict) -> str:
    short = {k: v for k, v in settings.items() if not isinstance(v, (dict, list)) or
             len(json.dumps(v)) < 160}
    return ", ".join(f"{k} = `{json.dumps(v)}`" for k, v in short.items())


def _earlier(record: dict) -> str:
    runs = record.get("earlier_runs") or []
    if not runs:
        return ""
    return "; earlier runs: " + ", ".join(
        f"{r.get('wall_s') or 0:.1f} s / {r.get('network_passes')} pass(es)" for r in runs)


def experiment_markdown(record: dict, table_mds: Sequence[str]) -> str:
    """``<name>.md``: title, claim, settings, verdicts, tables, plots."""
    lines = [
        f"# {record['paper']}: {record['title']}",
        "",
        f"Paper's claim: {record['claim']}.",
        "",
        f"Benchmark `{record['benchmark']}`, {len(record['models'])} model(s), APS "
        f"{'on' if record['aps'] else 'off (published defaults)'}; wall time "
        f"{record['wall_s']:.1f} s, {record['network_passes']} network pass(es)"
        f"{_earlier(record)}.",
        "",
        f"Settings: {_settings_line(record['settings'])}",
        "",
    ]
    if record["verdicts"]:
        lines += ["## The paper's claims on this data", "", verdict_table(record["verdicts"])]
    lines += ["## Tables", "", *table_mds]
    for plot in record["plots"]:
        lines += [f"![{plot}]({plot})", ""]
    return "\n".join(lines)


def load_records(out_dir: str) -> list[dict]:
    """The records in ``out_dir`` in registry order."""
    records = []
    for name in EXPERIMENTS:
        path = os.path.join(out_dir, f"{name}.json")
        if os.path.isfile(path):
            with open(path) as f:
                records.append(json.load(f))
    return records


def write_report(out_dir: str, *, discussion: str | None = None,
                 commands: Sequence[str] = ()) -> str:
    """Writes ``<out_dir>/REPORT.md``: the discussion (if any), a summary of every claim
    check, then per experiment its settings, wall time and links. Returns the path."""
    records = load_records(out_dir)
    lines = ["# The AdaSCALE paper's analyses on this data", ""]
    if discussion and os.path.isfile(discussion):
        with open(discussion) as f:
            lines += [f.read().rstrip(), ""]
    if commands:
        lines += ["## Reproduce", "", "```", *commands, "```", ""]
    lines += ["## Every claim, checked", "",
              "Each verdict is computed from the recorded numbers (see each experiment's JSON).",
              ""]
    done = {r["experiment"] for r in records}
    for rec in records:
        lines += [f"### {rec['paper']}: {rec['title']} ([{rec['experiment']}.md]"
                  f"({rec['experiment']}.md))", "",
                  f"Claim: {rec['claim']}. Wall time {rec['wall_s']:.0f} s, "
                  f"{rec['network_passes']} network pass(es).", ""]
        lines.append(verdict_table(rec["verdicts"]) or "(no automatic check)\n")
    missing = [n for n in EXPERIMENTS if n not in done]
    if missing:
        lines += ["### Not recorded here", "", ", ".join(missing), ""]
    path = os.path.join(out_dir, "REPORT.md")
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
