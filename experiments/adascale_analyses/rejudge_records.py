"""Re-judge the recorded AdaSCALE-analyses claims with the noise-aware verdicts, from the
recorded JSON alone (the models and caches they came from are gone).

    python experiments/adascale_analyses/rejudge_records.py

Only the claims whose per-run numbers are in the records can be re-judged:
* headline (Tables 1/5): the three seeds' per-detector rows (``raw_rows``, in seed order);
* Table 4: one model per training method (so every comparison is inconclusive: no interval),
  the one-epoch LogitNorm model below the accuracy floor is n/a;
* Table 11: the trend test on the recorded per-D median ratios.
Every other recorded verdict was taken on seed 0 alone and stays as recorded until the
analyses are re-run on all seeds (``train_more_models.sh`` retrains the models).
Writes ``experiments/results/adascale_analyses/rejudged.json`` and prints a Markdown table.
"""

from __future__ import annotations

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
RESULTS = os.path.join(ROOT, "experiments", "results", "adascale_analyses")


def load(name: str) -> dict:
    with open(os.path.join(RESULTS, f"{name}.json")) as f:
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


def main() -> None:
    from jaxood.analyses import bench_tables, verdicts
    from jaxood.analyses.latency import ratio_trend
    from jaxood.analyses.report import verdict_table
    from jaxood.fsutil import atomic_write_json

    head = load("headline")
    rows = with_run_index(head["tables"]["headline"]["raw_rows"])
    out = {"headline": bench_tables.headline_verdicts(rows, head["settings"]["detectors"])}
    methods = load("table4_training")
    out["table4_training"] = bench_tables.method_verdicts(
        methods["tables"]["training_methods"]["raw_rows"], list(methods["settings"]["models"]),
        methods["settings"]["detectors"], verdicts.ACCURACY_FLOOR)
    latency = load("table11_latency")
    batch = latency["settings"]["batch"][0]
    out["table11_latency"] = [ratio_trend(latency["summary"]["rows"], batch)]
    record = {"source": "recorded JSON of this folder (previous session)",
              "command": "python experiments/adascale_analyses/rejudge_records.py",
              "verdicts": out}
    atomic_write_json(os.path.join(RESULTS, "rejudged.json"), record)
    for name, vs in out.items():
        print(f"### {name}\n\n{verdict_table(vs)}")


if __name__ == "__main__":
    main()
