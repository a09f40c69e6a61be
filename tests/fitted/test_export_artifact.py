"""Issue 21, items 2-3: the exported artifact takes images (uint8 arrays, a folder, a .npy),
applies the recorded preprocessing as ``jaxood score`` does, checks shape/dtype/emptiness,
refuses an edited artifact by name, and runs with exactly its requirements list."""

import csv
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from jaxood import cli
from jaxood.data.benchmarks import ArraySource
from jaxood.fitted import standalone
from jaxood.types import PreprocessSpec

pytest.importorskip("flatbuffers")


@pytest.fixture(scope="module")
def artifact(fuzz_world, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("export") / "knn.jaxexport")
    fuzz_world["knn"].export(path, batch_size=32)
    return path


def _module(path):
    spec = importlib.util.spec_from_file_location(f"score_{abs(hash(path))}",
                                                  os.path.join(path, "score.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _copy(artifact, tmp_path):
    dst = str(tmp_path / "copy.jaxexport")
    shutil.copytree(artifact, dst)
    return dst


def test_uint8_images_are_preprocessed_as_jaxood_does(fuzz_world, artifact):
    w = fuzz_world
    x = w["keys"]["x_test"][:50]  # uint8 [N, 8, 8]
    fn = _module(artifact).load(artifact)
    score, is_ood, pred, _ = fn(x)
    np.testing.assert_array_equal(score, w["knn"].score_images(x))
    np.testing.assert_array_equal(fn(x[..., None])[0], score)  # [N, H, W, 1] too
    assert is_ood.dtype == bool and pred.shape == (50,)


@pytest.mark.parametrize("bad, match", [
    (lambda x: x.astype(np.float32), r"is float32: pass raw uint8 images .*normalised=True"),
    (lambda x: x.astype(np.uint16), r"must be uint8 images .*got uint16"),
    (lambda x: x[:0], r"is empty"),
    (lambda x: x[:, None], r"NCHW\? use x.transpose"),
    (lambda x: np.zeros((3, 16, 16), np.uint8), r"preprocess to \[16, 16, 1\] but the model "
                                                 r"takes \[8, 8, 1\]"),
    (lambda x: np.zeros((3, 8, 8, 3), np.uint8), r"is RGB but the model takes 1-channel"),
])
def test_wrong_inputs_are_refused_with_a_message(fuzz_world, artifact, bad, match):
    fn = _module(artifact).load(artifact)
    with pytest.raises(ValueError, match=match):
        fn(bad(fuzz_world["keys"]["x_test"][:4]))


def test_normalised_floats_only_when_said_so(fuzz_world, artifact):
    fn = _module(artifact).load(artifact)
    x = fuzz_world["x_val"][:20]
    np.testing.assert_array_equal(fn(x, normalised=True)[0], fuzz_world["knn"](x))
    with pytest.raises(ValueError, match=r"contains 16 NaN/Inf"):
        fn(np.where(np.arange(64).reshape(8, 8, 1) < 16, np.nan, x[:1]), normalised=True)
    with pytest.raises(ValueError, match=r"expected \[N, H, W, C\] = \[N, 8, 8, 1\]"):
        fn(x[..., 0], normalised=True)


def test_edited_args_or_metadata_are_refused_by_name(artifact, tmp_path):
    edited = _copy(artifact, tmp_path)
    with np.load(os.path.join(edited, "args.npz")) as f:
        arrays = dict(f)
    arrays["a0"] = arrays["a0"] + 1
    np.savez(os.path.join(edited, "args.npz"), **arrays)
    with pytest.raises(ValueError, match=r"args.npz does not match its checksum"):
        _module(edited).load(edited)
    meta_path = os.path.join(artifact, "metadata.json")
    meta = json.load(open(meta_path))
    for field, value in [("threshold", 1e9), ("batch_size", 4)]:
        edited = _copy(artifact, tmp_path / field)
        json.dump({**meta, field: value}, open(os.path.join(edited, "metadata.json"), "w"))
        with pytest.raises(ValueError, match=rf"metadata.json does not match .*\['{field}'\]"):
            _module(edited).load(edited)


def test_requirements_file_and_header_say_the_same(artifact):
    req = open(os.path.join(artifact, "requirements.txt")).read().split()
    import jax

    assert req == [f"jax=={jax.__version__}", "flatbuffers", "pillow"]
    head = open(os.path.join(artifact, "score.py")).read()[:1500]
    assert f'pip install "jax=={jax.__version__}" flatbuffers' in head


def test_folder_cli_writes_file_names_like_jaxood_score(digits_world, artifact, tmp_path):
    out = tmp_path / "art.csv"
    r = subprocess.run([sys.executable, os.path.join(artifact, "score.py"),
                        digits_world["pngs"], "-o", str(out)],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "broken.png" in r.stderr  # listed as unreadable, the rest scored
    det = str(digits_world["root"] / "fuzz" / "det_knn")  # the detector the artifact is from
    assert cli.main(["score", det, digits_world["pngs"], "-o", str(tmp_path / "jx.csv"),
                     "--quiet"]) == 0
    ours = {r["input"]: r for r in csv.DictReader(open(out))}
    theirs = {r["input"]: r for r in csv.DictReader(open(tmp_path / "jx.csv"))}
    assert len(ours) == 40 and set(ours) == set(theirs)
    for name, row in ours.items():
        assert row["score"] == theirs[name]["score"] and row["pred"] == theirs[name]["pred"]


def test_cli_refuses_to_overwrite_an_input(artifact, fuzz_world, tmp_path):
    npy = fuzz_world["inputs"]["npy"]
    before = open(npy, "rb").read()
    r = subprocess.run([sys.executable, os.path.join(artifact, "score.py"), npy, "-o", npy],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "is an input" in r.stderr
    assert open(npy, "rb").read() == before


def test_resize_and_crop_match_jaxood_preprocessing():
    spec = PreprocessSpec(12, 10, "bilinear", (0.4, 0.5, 0.6), (0.2, 0.3, 0.25), 3)
    meta = {"preprocess": spec.to_dict(), "input_shape": [10, 10, 3]}
    rng = np.random.default_rng(0)
    for shape in [(5, 16, 20, 3), (5, 9, 7, 3), (5, 14, 14, 1)]:
        x = rng.integers(0, 256, shape, dtype=np.uint8)
        want = ArraySource(x, np.zeros(5, int), spec).batch(0, 5)
        np.testing.assert_array_equal(standalone.preprocess(x, meta), want)


@pytest.mark.slow
def test_artifact_runs_in_a_fresh_venv_with_exactly_its_requirements(fuzz_world, artifact,
                                                                       tmp_path):
    """A new virtualenv, `pip install -r requirements.txt` (the local index), no jaxood."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "-r",
                          os.path.join(artifact, "requirements.txt")],
                         capture_output=True, text=True, timeout=1200)
    if pip.returncode != 0 and "No matching distribution" in pip.stderr:
        pytest.skip(f"the package index cannot provide the requirements: {pip.stderr[-300:]}")
    assert pip.returncode == 0, pip.stderr[-2000:]
    np.save(tmp_path / "x.npy", fuzz_world["keys"]["x_test"][:30])
    r = subprocess.run([str(venv / "bin" / "python"), os.path.join(artifact, "score.py"),
                        str(tmp_path / "x.npy"), "-o", str(tmp_path / "s.csv")],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path,
                       env={"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)})
    assert r.returncode == 0, r.stderr[-2000:]
    rows = list(csv.DictReader(open(tmp_path / "s.csv")))
    want = fuzz_world["knn"].score_images(fuzz_world["keys"]["x_test"][:30])
    np.testing.assert_array_equal([np.float32(r["score"]) for r in rows], want)
    assert rows[0]["input"] == "x.npy[0]"


def test_csv_class_column_maps_pred_to_the_original_class(fuzz_world, tmp_path):
    """Issue 21 item 5: a model trained on a subset (--classes) records the map; `pred` is
    its output index, `class` the original class id, in jaxood score's and score.py's CSV."""
    import jaxood

    w = fuzz_world
    model = tmp_path / "subset_model"
    shutil.copytree(w["model"], model)
    manifest = json.load(open(model / "manifest.json"))
    classes = [9, 7, 5, 3, 1]
    manifest["train"] = {"config": {"classes": classes}}
    (model / "manifest.json").write_text(json.dumps(manifest))
    fitted = jaxood.fit("msp", str(model), {"val": w["keys"]["x_val"]})
    det = fitted.save(str(tmp_path / "det"))
    npz = tmp_path / "x.npz"
    np.savez(npz, x=w["keys"]["x_test"][:40])
    assert cli.main(["score", det, str(npz), "-o", str(tmp_path / "s.csv"), "--quiet"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "s.csv")))
    assert {int(r["class"]) for r in rows} <= set(classes)
    assert all(int(r["class"]) == classes[int(r["pred"])] for r in rows)
    art = fitted.export(str(tmp_path / "art"))
    np.save(tmp_path / "x.npy", w["keys"]["x_test"][:40])
    r = subprocess.run([sys.executable, os.path.join(art, "score.py"), str(tmp_path / "x.npy"),
                        "-o", str(tmp_path / "a.csv")], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    exported = list(csv.DictReader(open(tmp_path / "a.csv")))
    assert [(e["pred"], e["class"]) for e in exported] == [(r["pred"], r["class"]) for r in rows]
