"""Re-judge recorded AdaSCALE-analyses claims that predate the noise-aware verdicts, from the
recorded JSON alone (the models behind them are gone), and put the new verdicts in the records.

    python experiments/adascale_analyses/rejudge_records.py [--results DIR]

A record whose verdicts are already noise-aware (every verdict has an ``outcome``) is left
alone, so this is a no-op on records the current code wrote. For an older record:
* headline (Tables 1/5): the per-seed rows (``raw_rows``, in seed order) are re-judged;
* Table 4: one model per training method, so every comparison is inconclusive (no interval);
  a model below the accuracy floor is n/a;
* Table 11: the trend test on the recorded per-D median ratios (the other Table 11 claim has
  no per-run numbers in an old record and keeps its strict verdict, marked as such).
The re-judged verdicts replace ``verdicts`` in ``<name>.json`` and the claims section of
``<name>.md``; the strict ones are kept under ``verdicts_strict``, so nothing is lost. Also
writes ``rejudged.json`` (what was re-judged, by which command) and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from jaxood.analyses import bench_tables, verdicts
from jaxood.analyses.latency import ratio_trend
from jaxood.analyses.output import write_record
from jaxood.analyses.report import experiment_markdown, verdict_table
from jaxood.fsutil import atomic_write_json

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RESULTS = os.path.join(ROOT, "experiments", "results", "adascale_analyses")
COMMAND = "python experiments/adascale_analyses/rejudge_records.py"


def load(results: str, name: str) -> dict:
    with open(os.path.join(results, f"{name}.json")) as f:
        return json.load(f)


def with_run_index(rows: list[dict], key: str = "detector") -> list[dict]:
    """Adds ``run`` = the row's position among the rows of its ``key`` (the runner's order)."""
    seen: dict = {}
    out = []
    for row in rows:
        i = seen.get(row[key], 0)
        seen[row[key]] = i + 1
        out.append({**row, "run": i})
    return out


def is_current(record: dict) -> bool:
    """Written by the current code, or re-judged already."""
    return "rejudged_by" in record or all("outcome" in v for v in record["verdicts"])


def rejudge(name: str, record: dict) -> list[dict]:
    """The noise-aware verdicts of one old record."""
    if name == "headline":
        rows = with_run_index(record["tables"]["headline"]["raw_rows"])
        return bench_tables.headline_verdicts(rows, record["settings"]["detectors"])
    if name == "table4_training":
        return bench_tables.method_verdicts(
            record["tables"]["training_methods"]["raw_rows"], list(record["settings"]["models"]),
            record["settings"]["detectors"], verdicts.ACCURACY_FLOOR)
    trend = ratio_trend(record["summary"]["rows"], record["settings"]["batch"][0])
    kept = [v for v in record["verdicts"] if v["claim"] != trend["claim"]]
    return kept + [trend]


def fold_in(results: str, name: str, record: dict, new: list[dict]) -> None:
    """Writes ``new`` into ``<name>.json`` / ``.md``; the old verdicts stay as
    ``verdicts_strict``. The tables and plots of the ``.md`` are kept as they are."""
    with open(os.path.join(results, f"{name}.md")) as f:
        tables = f.read().split("## Tables\n\n", 1)[1]
    plots = {f"![{p}]({p})" for p in record["plots"]}
    tables = "\n".join(line for line in tables.splitlines() if line not in plots)
    record = {**record, "verdicts_strict": record["verdicts"], "verdicts": new,
              "rejudged_by": COMMAND}
    write_record(results, name, record, experiment_markdown(record, [tables.rstrip() + "\n"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default=RESULTS, help="folder of the records")
    results = parser.parse_args(argv).results
    done = {}
    for name in ("headline", "table4_training", "table11_latency"):
        if not os.path.isfile(os.path.join(results, f"{name}.json")):
            continue
        record = load(results, name)
        if is_current(record):
            print(f"{name}: verdicts already noise-aware, left as recorded")
            continue
        done[name] = rejudge(name, record)
        fold_in(results, name, record, done[name])
        print(f"### {name} (re-judged into {name}.json / .md)\n\n{verdict_table(done[name])}")
    if done:
        path = os.path.join(results, "rejudged.json")
        earlier = {}
        if os.path.isfile(path):
            with open(path) as f:
                earlier = json.load(f)
        atomic_write_json(path, {"source": "recorded JSON of this folder", "command": COMMAND,
                                 "verdicts": {**earlier.get("verdicts", {}), **done}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
