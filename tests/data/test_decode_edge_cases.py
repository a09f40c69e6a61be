"""Issue 21: 16-bit PNGs are scaled to 8 bits with a warning (PIL's convert("L") clips them
to 255 silently); a decompression-bomb image is listed as unreadable instead of aborting a
whole `jaxood score` run."""

import csv

import numpy as np
import pytest
from PIL import Image

from jaxood import cli
from jaxood.data import imglist
from jaxood.types import PreprocessSpec

SPEC = PreprocessSpec(None, None, "bilinear", (0.5,), (0.25,), 1)


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    v = (np.arange(64).reshape(8, 8) * 1000).astype(np.uint16)  # up to 63000
    Image.fromarray(v).save(tmp_path / "a.png")
    with pytest.warns(UserWarning, match=r"16-bit images are scaled to 8 bits"):
        x = imglist.load_image(str(tmp_path / "a.png"), SPEC)
    eight = np.round(v / 257.0)  # the reference scaling, in float64
    np.testing.assert_array_equal(x[..., 0], ((eight / 255.0).astype(np.float32) - 0.5) / 0.25)
    assert len(np.unique(x)) == 64  # clipping would leave 1 (v >= 255 -> white) + a few


def test_a_decompression_bomb_is_listed_as_unreadable(fuzz_world, tmp_path, monkeypatch,
                                                      capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(fuzz_world["keys"]["x_test"][i], "L").save(folder / f"ok{i}.png")
    Image.new("L", (64, 64)).save(folder / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64*64 > 2 * 1000: a "bomb"
    out = tmp_path / "s.csv"
    rc = cli.main(["score", fuzz_world["det"], str(folder), "-o", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "skipped" in err and "bomb.png" in err and "too large to decode safely" in err
    assert "Traceback" not in err
    assert [r["input"].rsplit("/", 1)[-1] for r in csv.DictReader(open(out))] == [
        "ok0.png", "ok1.png", "ok2.png"]


def test_score_removes_a_killed_runs_temporary_csv(fuzz_world, tmp_path, capsys):
    """Issue 21: a killed `score` left a hidden temporary file that nothing cleaned."""
    dead = tmp_path / ".tmp-999999999-abcd.csv"  # pid 999999999 is not running
    dead.write_text("input,score\n")
    rc = cli.main(["score", fuzz_world["det"], fuzz_world["npz"] + ":x_test", "-o",
                   str(tmp_path / "s.csv"), "--quiet"])
    assert rc == 0, capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.csv"]
