"""experiments/adascale_analyses/rejudge_records.py on a synthetic old Table 4 record: the
noise-aware verdicts replace the strict ones, which are kept; a second run changes nothing."""

from __future__ import annotations

import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "experiments"
                       / "adascale_analyses"))
import rejudge_records as rr  # noqa: E402


def row(method, detector, near, far, acc):
    return {"method": method, "detector": detector, "near_FPR@95": 100 - near,
            "near_AUROC": near, "far_FPR@95": 100 - far, "far_AUROC": far, "ACC": acc}


def old_record(tmp_path):
    rows = [row("ce", "scale", 70.0, 95.0, 96.0), row("ce", "adascale_a", 72.0, 96.0, 96.0),
            row("ln", "scale", 50.0, 60.0, 31.0), row("ln", "adascale_a", 55.0, 70.0, 31.0)]
    strict = [{"claim": "ce: AdaSCALE-A beats SCALE (near-OOD AUROC)", "paper": "yes",
               "here": "72.00 vs 70.00", "holds": True}]
    record = {"experiment": "table4_training", "paper": "Table 4", "title": "Training methods",
              "claim": "AdaSCALE keeps its advantage", "benchmark": "b", "models": ["m"],
              "aps": True, "wall_s": 1.0, "network_passes": 2, "plots": [],
              "settings": {"models": {"ce": "a", "ln": "b"}, "detectors": ["scale", "adascale_a"]},
              "tables": {"training_methods": {"raw_rows": rows}}, "verdicts": strict}
    (tmp_path / "table4_training.json").write_text(json.dumps(record))
    (tmp_path / "table4_training.md").write_text(
        "# Table 4\n\n## The paper's claims on this data\n\n| old |\n\n## Tables\n\n"
        "### Training method x detector (%)\n\n| recorded table |\n")
    return strict


def test_old_verdicts_are_rejudged_and_kept(tmp_path):
    strict = old_record(tmp_path)
    assert rr.main(["--results", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "table4_training.json").read_text())
    assert record["verdicts_strict"] == strict
    outcomes = {v["claim"]: v["outcome"] for v in record["verdicts"]}
    # one model per method: no interval, so no verdict either way; 31 % accuracy is n/a
    assert {o for c, o in outcomes.items() if c.startswith("ce:")} == {"inconclusive"}
    assert {o for c, o in outcomes.items() if c.startswith("ln:")} == {"n/a"}
    md = (tmp_path / "table4_training.md").read_text()
    assert "| recorded table |" in md and "| old |" not in md and "n/a" in md
    assert set(json.loads((tmp_path / "rejudged.json").read_text())["verdicts"]) == {
        "table4_training"}


def test_second_run_changes_nothing(tmp_path):
    old_record(tmp_path)
    rr.main(["--results", str(tmp_path)])
    before = {p.name: p.read_text() for p in tmp_path.iterdir()}
    rr.main(["--results", str(tmp_path)])
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == before
