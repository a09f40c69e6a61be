"""The README's examples must run as written, and its test command must be the CI's."""

import os
import pathlib
import re
import subprocess

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _block_after(marker: str) -> str:
    tail = README.split(marker, 1)[1]
    match = re.search(r"```[a-z]*\n(.*?)```", tail, re.S)
    assert match, f"no code block after {marker!r}"
    return match.group(1)


def test_readme_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # it writes runs/my_det*
    namespace: dict = {}
    exec(compile(_block_after("<!-- readme-example"), "README.md", "exec"), namespace)
    scores, is_ood, det = namespace["scores"], namespace["is_ood"], namespace["det"]
    assert scores.shape == (64,) and np.all(np.isfinite(scores))
    np.testing.assert_array_equal(is_ood, scores < det.threshold_value)
    np.testing.assert_array_equal(det(namespace["x_test"]), scores)  # the reloaded detector
    assert (tmp_path / "runs" / "my_det.jaxexport" / "fixed.bin").is_file()


def test_readme_detector_example_benchmarks_through_the_cli(tmp_path):
    from jaxood import cli, detectors

    plugin = tmp_path / "my_detectors.py"
    plugin.write_text(_block_after("<!-- readme-detector"))
    data = _digits_npz(tmp_path)
    from tests.bench.tiny_model import save_tiny

    model = save_tiny(str(tmp_path / "model"), num_classes=5, input_shape=(8, 8, 1))
    try:
        rc = cli.main(["bench", "--import", str(plugin), "--detectors", "centroid",
                       "--benchmark", f"npz:{data}", "--model", model, "--out",
                       str(tmp_path / "out"), "--quiet", "--no-plots"])
        assert rc == 0
        assert "centroid" in detectors.names()
    finally:
        detectors.unregister("centroid")
    [folder] = os.listdir(tmp_path / "out" / "npz-digits")
    assert (tmp_path / "out" / "npz-digits" / folder / "fitted" / "centroid" / "run0").is_dir()


def _digits_npz(tmp_path) -> str:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.clip(d.images * 16, 0, 255).astype(np.uint8)
    i, o = np.flatnonzero(d.target < 5), np.flatnonzero(d.target >= 5)
    path = str(tmp_path / "digits.npz")
    np.savez(path, x_train=x[i[:300]], y_train=d.target[i[:300]], x_val=x[i[300:400]],
             y_val=d.target[i[300:400]], x_test=x[i[400:]], y_test=d.target[i[400:]],
             x_ood_val=x[o[:50]], x_near_digits59=x[o[50:]], num_classes=5)
    return path


def test_ci_runs_the_readme_test_command():
    awk = (
        "awk '/<!-- test-command/{f=1; next} f && /^```/{n++; if (n == 2) exit; next} "
        "f && n == 1 {print; exit}' README.md"
    )
    out = subprocess.run(awk, shell=True, cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == _block_after("<!-- test-command").strip()
    assert "README.md" in (ROOT / ".ci" / "run").read_text()
