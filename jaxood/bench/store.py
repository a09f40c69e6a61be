"""The merged result store of one results folder: nothing a run produced is ever lost.

``store.json`` holds, per detector and run, the metrics row, the APS outcome and the settings
it was computed with; a run adds or replaces only the (detector, run) entries it computed and
keeps every other one. Every write goes through :func:`jaxood.fsutil.merge_json`: under an
exclusive lock the file is re-read and this run's entry merged into what is there now, then
written atomically. So a run killed at any point keeps what it finished, a re-run resumes the
rest, and two runs into the same folder at once keep both runs' detectors. ``runs.jsonl``
appends one line per invocation (time, detectors, failures, jaxood version, models, per-stage
seconds of each run and the report writing).

The folder belongs to one benchmark and one list of models (by weight fingerprints): merging
another model's results into it is refused with a clear error.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jaxood.fsutil import append_line, merge_json, plain, read_json

FORMAT = "jaxood-results/1"
STORE, HISTORY = "store.json", "runs.jsonl"
METRIC_NAMES = ("FPR@95", "AUROC", "AUPR_IN", "AUPR_OUT", "ACC")


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


class ResultStore:
    """Per-(detector, run) results of a benchmark for a fixed list of models.

    Args:
      out_dir: the results folder.
      benchmark: benchmark name.
      models: one ``{"dir", "fingerprint"}`` per run, in run order.
    """

    def __init__(self, out_dir: str, benchmark: str, models: Sequence[Mapping[str, Any]]):
        self.dir = out_dir
        self.path = os.path.join(out_dir, STORE)
        self.benchmark = benchmark
        self.data = {"format": FORMAT, "benchmark": benchmark, "models": plain(list(models)),
                     "detectors": {}}
        self.reload()

    def reload(self) -> None:
        """Re-reads ``store.json`` (what every run into this folder has stored so far)."""
        if os.path.isfile(self.path):
            self.data["detectors"] = self._checked(read_json(self.path))["detectors"]

    def _checked(self, old: Any) -> dict:
        """``old`` store content, verified to be a store of this benchmark and these models."""
        if not isinstance(old, dict) or old.get("format") != FORMAT or not isinstance(
                old.get("detectors"), dict):
            raise ValueError(
                f"{self.path} is not a {FORMAT} result store (edited or written by something "
                "else); move it away to start a new results folder"
            )
        old_fp = [m.get("fingerprint") for m in old.get("models", [])]
        new_fp = [m.get("fingerprint") for m in self.data["models"]]
        if old.get("benchmark") != self.benchmark or old_fp != new_fp:
            raise ValueError(
                f"{self.dir} holds results of benchmark {old.get('benchmark')!r} for models "
                f"{[m.get('dir') for m in old.get('models', [])]} (weights {[str(f)[:8] for f in old_fp]}); "
                f"refusing to merge results of other models into it: use another --name or --out"
            )
        return old

    def entry(self, det: str, run: int) -> dict | None:
        return self.data["detectors"].get(det, {}).get(str(run))

    def done(self, det: str, run: int, settings: Mapping[str, Any]) -> bool:
        """True when ``det`` has a result for ``run`` computed with the same ``settings``."""
        e = self.entry(det, run)
        return e is not None and e.get("settings") == plain(dict(settings))

    def put(self, det: str, run: int, *, row, aps, settings, seconds: float) -> None:
        """Adds/replaces one result, merged (locked) into ``store.json`` as it is now: what
        other runs stored meanwhile is kept, and this store's view is refreshed with it."""
        entry = plain({"row": row, "aps": aps, "settings": dict(settings), "seconds": seconds,
                       "finished": _now()})

        def merge(old):
            new = self.data if old is None else self._checked(old)
            new["detectors"].setdefault(det, {})[str(run)] = entry
            return new

        self.data = merge_json(self.path, merge)

    def per_run(self) -> dict[str, list[dict]]:
        """``{det: [row of each run that has one]}`` (run order)."""
        return {
            det: [runs[k]["row"] for k in sorted(runs, key=int)]
            for det, runs in self.data["detectors"].items()
        }

    def aps(self) -> dict[str, list[dict]]:
        """``aps.json`` content: ``{det: [{"run", "model", "model_fingerprint", "chosen",
        "aps_auroc", "grid"}]}``."""
        models = self.data["models"]
        out = {}
        for det, runs in self.data["detectors"].items():
            out[det] = [
                {"run": int(k), "model": models[int(k)]["dir"],
                 "model_fingerprint": models[int(k)]["fingerprint"], **runs[k]["aps"]}
                for k in sorted(runs, key=int)
            ]
        return out

    def log(self, record: Mapping[str, Any]) -> None:
        """Appends one invocation record to ``runs.jsonl``."""
        append_line(os.path.join(self.dir, HISTORY), json.dumps(plain({"time": _now(), **record})))


def aggregate(per_run: Mapping[str, list]) -> dict:
    """``{det: {dataset: {metric: (mean, population std over runs)}}}``."""
    table = {}
    for det, runs in per_run.items():
        table[det] = {}
        for ds in runs[0]:
            table[det][ds] = {}
            for k in METRIC_NAMES:
                vals = np.asarray([r[ds][k] for r in runs if ds in r], np.float64)
                table[det][ds][k] = (float(vals.mean()), float(vals.std(ddof=0)))
    return table
