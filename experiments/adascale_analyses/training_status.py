"""Where the runs of ``train_more_models.sh`` stand: per run, the config, the last step and
epoch logged, the per-epoch validation accuracy and whether the best model was exported.

    python experiments/adascale_analyses/training_status.py --runs /work/bg/runs

Reads each ``<runs>/openset_models/<name>/`` (``config.json``, ``metrics.jsonl``) and merges
the result into ``experiments/results/adascale_analyses/training_more.json`` (one key per run;
earlier keys are kept).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
RESULTS = os.path.join(ROOT, "experiments", "results", "adascale_analyses",
                       "training_more.json")


def status(workdir: str) -> dict:
    """The state of one ``jaxood train`` workdir."""
    with open(os.path.join(workdir, "config.json")) as f:
        cfg = json.load(f)
    events = []
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            if line.strip():
                events.append(json.loads(line))
    steps = [e for e in events if "step" in e and "event" not in e]
    epochs = [e for e in events if e.get("event") == "epoch"]
    best = os.path.join(workdir, "best")
    return {
        "workdir": workdir, "arch": cfg["arch"], "arch_kwargs": cfg["arch_kwargs"],
        "epochs_planned": cfg["epochs"], "seed": cfg["seed"],
        "last_step": steps[-1]["step"] if steps else 0,
        "last_epoch": round(steps[-1]["epoch"], 3) if steps else 0.0,
        "val_acc_per_epoch": [e.get("val_acc") for e in epochs],
        "finished": bool(epochs) and round(epochs[-1]["epoch"]) == cfg["epochs"],
        "best_model_exported": os.path.isdir(best),
        "resumes": sum(e.get("event") == "resume" for e in events),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", default=os.path.join(ROOT, "experiments", "runs"))
    args = ap.parse_args()
    from jaxood.fsutil import atomic_write_json

    base = os.path.join(args.runs, "openset_models")
    old = json.load(open(RESULTS)) if os.path.isfile(RESULTS) else {}
    for name in sorted(os.listdir(base)):
        if os.path.isfile(os.path.join(base, name, "config.json")):
            old[name] = status(os.path.join(base, name))
            print(name, json.dumps({k: v for k, v in old[name].items() if k != "workdir"}))
    atomic_write_json(RESULTS, old)


if __name__ == "__main__":
    main()
