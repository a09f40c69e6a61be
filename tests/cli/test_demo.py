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
    [folder] = os.listdir(out / "demo")
    for f in ("results.md", "store.json", "aps.json", "fitted/adascale_a/run0/detector.json"):
        assert os.path.isfile(out / "demo" / folder / f), f
