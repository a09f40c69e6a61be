"""Markdown of one experiment and ``REPORT.md`` over all recorded experiments.

Every claim check is computed from the recorded numbers (:mod:`jaxood.analyses.verdicts`:
paired per-run differences with an interval, holds / does not hold / inconclusive), so the
report says the same on every re-run; a hand-written discussion file (``--discussion``) can be
put at the top, under a heading that says it is hand-written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence

from jaxood.analyses.registry import EXPERIMENTS
from jaxood.fsutil import atomic_write_text

_MARKS = {"holds": "holds", "does not hold": "**does not hold**",
          "inconclusive": "inconclusive", "n/a": "n/a"}


def verdict_table(verdicts: Sequence[dict]) -> str:
    """The claims as a Markdown table, the interval beside each verdict."""
    if not verdicts:
        return ""
    lines = [f"| claim | paper | here | {_interval_head(verdicts)} | verdict |",
             "|---|---|---|---|---|"]
    for v in map(_current, verdicts):
        lines.append(f"| {v['claim']} | {v['paper']} | {v['here']} | {v['interval']} | "
                     f"{_MARKS[v['outcome']]} |")
    return "\n".join(lines) + "\n"


def _current(v: dict) -> dict:
    """A verdict in the current form; a record written before intervals existed (``holds``
    true/false/null from one strict comparison) is shown as such, not re-judged."""
    if "outcome" in v:
        return v
    outcome = {True: "holds", False: "does not hold"}.get(v.get("holds"), "n/a")
    return {**v, "outcome": outcome, "metrics": {},
            "interval": "(old record: one strict comparison, no interval)"}


def _interval_head(verdicts: Sequence[dict]) -> str:
    levels = {ev.get("level") for v in verdicts for ev in v.get("metrics", {}).values()}
    levels -= {None}
    level = f"{100 * levels.pop():g} % " if len(levels) == 1 else ""
    return f"mean difference [{level}interval] (runs)"


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
                 commands: Sequence[str] = (), skipped: Mapping[str, str] | None = None) -> str:
    """Writes ``<out_dir>/REPORT.md``: the hand-written discussion (if any, labelled as
    such), the count of outcomes, then per experiment its claims with their intervals, and
    the experiments skipped in this invocation (``{name: reason}``) or never recorded.
    Returns the path."""
    records = load_records(out_dir)
    lines = ["# The AdaSCALE paper's analyses on this data", ""]
    if discussion:
        if not os.path.isfile(discussion):
            raise FileNotFoundError(f"--discussion {discussion!r} does not exist")
        with open(discussion) as f:
            lines += ["## Discussion (hand-written)", "",
                      f"*Written by hand from the records below (`{os.path.basename(discussion)}`"
                      "); the verdicts in the sections after it are computed by code.*", "",
                      f.read().rstrip(), ""]
    if commands:
        lines += ["## Reproduce", "", "```", *commands, "```", ""]
    lines += ["## Every claim, checked", "", RULE_TEXT, "", _counts(records), ""]
    done = {r["experiment"] for r in records}
    for rec in records:
        lines += [f"### {rec['paper']}: {rec['title']} ([{rec['experiment']}.md]"
                  f"({rec['experiment']}.md))", "",
                  f"Claim: {rec['claim']}. {len(rec['models'])} run(s); wall time "
                  f"{rec['wall_s']:.0f} s, {rec['network_passes']} network pass(es).", ""]
        lines.append(verdict_table(rec["verdicts"]) or "(no automatic check)\n")
    for name, reason in (skipped or {}).items():
        lines += [f"- skipped `{name}`: {reason}"]
    missing = [n for n in EXPERIMENTS if n not in done and n not in (skipped or {})]
    if missing:
        lines += ["", "### Not recorded here", "", ", ".join(missing), ""]
    path = os.path.join(out_dir, "REPORT.md")
    os.makedirs(out_dir, exist_ok=True)
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


RULE_TEXT = (
    "Each verdict is computed from the recorded per-run numbers (see each experiment's JSON): "
    "the per-run (seed) difference the claim is about, with its Student-t interval over runs. "
    "**holds**: the interval lies on the claim's side; **does not hold**: on the other side; "
    "**inconclusive**: it straddles the boundary, or one run only (no interval); **n/a**: not "
    "judged (e.g. a model below the accuracy floor). The paper's own metric decides where it "
    "names one (headline and Table 3: FPR@95); otherwise FPR@95 and AUROC must agree.")


def _counts(records: Sequence[dict]) -> str:
    counts = {o: 0 for o in _MARKS}
    old = 0
    for rec in records:
        for v in rec["verdicts"]:
            counts[_current(v)["outcome"]] += "outcome" in v
            old += "outcome" not in v
    text = "Outcomes: " + ", ".join(f"{k} {n}" for k, n in counts.items()) + "."
    if old:
        text += (f" {old} verdict(s) come from records written before the noise-aware rules "
                 "(one strict comparison, no interval; marked in the tables): re-run those "
                 "experiments to judge them.")
    return text
