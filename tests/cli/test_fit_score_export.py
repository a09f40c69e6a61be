"""`jaxood fit`, `score`, `export`, `detectors` and `bench --import` through the real entry point."""

import csv
import json
import os
import textwrap

import numpy as np

import jaxood
from jaxood import cli, detectors


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_fit_then_score_a_folder_with_a_corrupt_png(digits_world, tmp_path, capsys):
    w = digits_world
    det = str(tmp_path / "det")
    assert cli.main(["fit", "--model", w["model"], "--detector", "knn", "--id", w["npz"],
                     "--hparams", '{"K": 5}', "-o", det, "--quiet"]) == 0
    out = str(tmp_path / "scores.csv")
    assert cli.main(["score", det, w["pngs"], "-o", out, "--quiet", "--batch-size", "16"]) == 0
    captured = capsys.readouterr()
    assert "broken.png" in captured.err  # reported by path, skipped
    assert "40 scored" in captured.out and "1 unreadable" in captured.out
    rows = _rows(out)
    assert len(rows) == 40
    assert rows == sorted(rows, key=lambda r: os.path.relpath(r["input"], w["pngs"]))
    # The CSV equals the Python API on the same decoded images.
    fitted = jaxood.load_detector(det, w["model"])
    paths = [r["input"] for r in rows]
    np.testing.assert_allclose([float(r["score"]) for r in rows], fitted.score_images(paths),
                               rtol=1e-6)
    flags = np.array([int(r["is_ood"]) for r in rows], bool)
    np.testing.assert_array_equal(flags, fitted.score_images(paths) < fitted.threshold_value)


def test_score_strict_fails_naming_the_file(digits_world, tmp_path, capsys):
    w = digits_world
    det = str(tmp_path / "det")
    assert cli.main(["fit", "--model", w["model"], "--detector", "msp", "--id", w["npz"],
                     "-o", det, "--quiet"]) == 0
    out = str(tmp_path / "s.csv")
    assert cli.main(["score", det, w["pngs"], "-o", out, "--strict", "--quiet"]) == 2
    assert "broken.png" in capsys.readouterr().err
    assert not os.path.exists(out)  # nothing half-written


def test_score_npz_and_image_list_inputs(digits_world, tmp_path):
    w = digits_world
    det = str(tmp_path / "det")
    assert cli.main(["fit", "--model", w["model"], "--detector", "ebo", "--id", w["npz"],
                     "-o", det, "--quiet"]) == 0
    out = str(tmp_path / "s.csv")
    assert cli.main(["score", det, f"{w['npz']}:x_test", "-o", out, "--quiet"]) == 0
    assert len(_rows(out)) == 200
    listing = tmp_path / "list.txt"
    files = sorted(f for f in os.listdir(os.path.join(w["pngs"], "sub")) if f.startswith("img"))
    listing.write_text("".join(f"sub/{f} 0\n" for f in files))
    assert cli.main(["score", det, str(listing), "--data-dir", w["pngs"], "-o", out,
                     "--quiet"]) == 0
    assert len(_rows(out)) == len(files)


def test_nothing_scored_exits_nonzero(digits_world, tmp_path):
    w = digits_world
    det = str(tmp_path / "det")
    assert cli.main(["fit", "--model", w["model"], "--detector", "msp", "--id", w["npz"],
                     "-o", det, "--quiet"]) == 0
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.png").write_bytes(b"garbage")
    assert cli.main(["score", det, str(bad), "-o", str(tmp_path / "s.csv"), "--quiet"]) == 1


def test_fit_refuses_another_model_and_existing_output(digits_world, tmp_path):
    from tests.bench.tiny_model import save_tiny

    w = digits_world
    det = str(tmp_path / "det")
    assert cli.main(["fit", "--model", w["model"], "--detector", "msp", "--id", w["npz"],
                     "-o", det, "--quiet"]) == 0
    assert cli.main(["fit", "--model", w["model"], "--detector", "msp", "--id", w["npz"],
                     "-o", det, "--quiet"]) == 2
    other = save_tiny(str(tmp_path / "other"), num_classes=5, input_shape=(8, 8, 1), seed=3)
    assert cli.main(["score", det, w["pngs"], "--model", other, "-o",
                     str(tmp_path / "s.csv")]) == 2


def test_export_cli(digits_world, tmp_path):
    w = digits_world
    det = str(tmp_path / "det")
    assert cli.main(["fit", "--model", w["model"], "--detector", "mds", "--id", w["npz"],
                     "-o", det, "--quiet"]) == 0
    art = str(tmp_path / "det.jaxexport")
    assert cli.main(["export", det, "-o", art, "--batch-size", "8"]) == 0
    meta = json.load(open(os.path.join(art, "metadata.json")))
    assert meta["batch_size"] == 8 and meta["detector"] == "mds"
    assert os.path.isfile(os.path.join(art, "score.py"))


PLUGIN = textwrap.dedent('''
    import jax.numpy as jnp
    from jaxood import detectors
    from jaxood.types import Detector, HParam

    def score(model, variables, stats, inputs, *, t):
        return jnp.max(inputs.features.logits, -1) / t

    detectors.register(Detector(name="test_mine", score=score,
                                hparams={"t": HParam(1.0, sweep=(1.0, 2.0))}), overwrite=True)
''')


def test_plugin_detector_everywhere(digits_world, tmp_path, capsys):
    w = digits_world
    plugin = tmp_path / "my_detectors.py"
    plugin.write_text(PLUGIN)
    try:
        assert cli.main(["detectors", "--import", str(plugin)]) == 0
        assert "test_mine" in capsys.readouterr().out
        out = str(tmp_path / "bench")
        assert cli.main(["bench", "--import", str(plugin), "--benchmark", f"npz:{w['npz']}",
                         "--model", w["model"], "--detectors", "test_mine", "--out", out,
                         "--quiet", "--no-plots"]) == 0
        [results] = os.listdir(os.path.join(out, "npz-digits"))
        fitted_dir = os.path.join(out, "npz-digits", results, "fitted", "test_mine", "run0")
        assert os.path.isfile(os.path.join(fitted_dir, "detector.json"))
        csv_out = str(tmp_path / "s.csv")
        assert cli.main(["score", "--import", str(plugin), fitted_dir, w["pngs"], "-o", csv_out,
                         "--quiet"]) == 0
        assert len(_rows(csv_out)) == 40
    finally:
        detectors.unregister("test_mine")
    assert cli.main(["detectors", "--import", str(tmp_path / "missing.py")]) == 2
