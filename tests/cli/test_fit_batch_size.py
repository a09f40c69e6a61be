"""`jaxood fit`'s batch size (issue 21 item 6): automatic by default, the budget an option, the
choice printed, saved and kept by `jaxood score`; `--help` says what the default does."""

import json
import os
import re

import jaxood
from jaxood import cli
from jaxood.fitted import batching


def _fit(w, out, *extra):
    return cli.main(["fit", "--model", w["model"], "--detector", "msp", "--id", w["npz"],
                     "-o", out, "--quiet", *extra])


def test_help_says_what_the_default_batch_size_does(capsys):
    assert cli.main(["fit", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split("options:")[1].split())
    batch = text[text.index("--batch-size BATCH_SIZE"):text.index("--memory-mb MEMORY_MB")]
    assert "automatic" in batch and "memory per image" in batch and "XLA" in batch
    assert f"up to {batching.MAX_BATCH_SIZE}" in batch  # the numbers are the library's
    budget = text[text.index("--memory-mb MEMORY_MB"):]
    assert f"default {batching.SCORE_MEMORY_MB:g}" in budget and "per-device" in budget


def test_fit_chooses_prints_and_saves_the_batch(digits_world, tmp_path, capsys):
    w = digits_world
    det = str(tmp_path / "det")
    assert _fit(w, det, "--memory-mb", "0.05") == 0
    out = capsys.readouterr().out
    size = int(re.search(r"batch size (\d+): XLA measured", out).group(1))
    with open(os.path.join(det, "detector.json")) as f:
        manifest = json.load(f)
    assert manifest["batch_size"] == size and manifest["batch"]["rule"] == "auto"
    assert manifest["batch"]["budget_mb"] == 0.05
    assert size * manifest["batch"]["mb_per_image"] <= 0.05 < 2 * size * manifest["batch"][
        "mb_per_image"]
    assert jaxood.load_detector(det, w["model"]).batch_size == size
    given = str(tmp_path / "given")
    assert _fit(w, given, "--batch-size", "24") == 0
    assert "batch size 24 (given)" in capsys.readouterr().out
    assert jaxood.load_detector(given, w["model"]).batch_size == 24


def test_batch_options_are_checked_before_any_work(digits_world, tmp_path, capsys):
    w = digits_world
    for bad in (["--memory-mb", "0"], ["--memory-mb", "-3"], ["--memory-mb", "nan"],
                ["--batch-size", "0"], ["--batch-size", "1.5"]):
        assert _fit(w, str(tmp_path / "x"), *bad) == 2
        assert bad[0] in capsys.readouterr().err
    assert _fit(w, str(tmp_path / "x"), "--batch-size", "8", "--memory-mb", "100") == 2
    assert "not both" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "x")
