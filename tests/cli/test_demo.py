"""The README's main command, end to end through the installed entry point."""

import os
import subprocess
import sys


def test_jaxood_demo_quick_end_to_end(tmp_path):
    out = tmp_path / "demo"
    r = subprocess.run(
        [sys.executable, "-m", "jaxood.cli", "demo", "--quick", "--quiet", "--out", str(out)],
        capture_output=True, text=True, timeout=900,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "| adascale_a |" in r.stdout and "| knn |" in r.stdout
    # Issue 21 item 5: the summary table, not the per-dataset tables (they stay in results.md)
    assert "## Per dataset" not in r.stdout and "Per-dataset tables: " in r.stdout
    assert len(r.stdout.splitlines()) < 60, r.stdout
    [folder] = os.listdir(out / "demo")
    for f in ("results.md", "store.json", "aps.json", "fitted/adascale_a/run0/detector.json"):
        assert os.path.isfile(out / "demo" / folder / f), f
    assert "## Per dataset" in open(out / "demo" / folder / "results.md").read()
