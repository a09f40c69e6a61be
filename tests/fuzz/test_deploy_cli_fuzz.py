"""Bad command lines on the deploy surfaces (issue 21), classified as in ``test_cli_fuzz``:
``(id, argv(world), exit code, stderr regex)``, in process through ``jaxood.cli.main``. Every
file a command reads is checked against the files it writes; numeric options are
range-checked at parse time; saved state is validated before use."""

import json
import os
import shutil

import pytest

from tests.fuzz import test_cli_fuzz as cli_fuzz
from tests.fuzz.test_cli_fuzz import bench, fit, score


def _dir(w, name):
    d = w["root"] / "deploy_cli" / name
    d.mkdir(parents=True, exist_ok=True)
    return d


def edited_detector(w, name, edit):
    d = _dir(w, "dets") / name
    if not d.exists():
        shutil.copytree(w["det"], d)
        path = d / "detector.json"
        manifest = json.load(open(path))
        edit(manifest)
        path.write_text(json.dumps(manifest, allow_nan=True))
    return str(d)


def image_list(w):
    """An image list naming PNGs of the digits folder (for -o = a listed image)."""
    path = _dir(w, "lists") / "list.txt"
    first = os.path.join(w["pngs"], "img000.png")
    path.write_text(f"{first} 0\n")
    return str(path), first


def other_aps(w):
    d = _dir(w, "aps_other")
    (d / "aps.json").write_text(json.dumps({"knn": [{
        "run": 0, "model": "elsewhere/model", "model_fingerprint": {"weights": "f" * 64},
        "chosen": {"K": 3}}]}))
    return str(d)


def link_to(w, target, name):
    link = _dir(w, "links") / name
    if not link.exists():
        link.symlink_to(target)
    return str(link)


def train(w, *extra):
    return ["train", "--dataset", "npz:" + w["npz"], "--workdir", str(w["root"] / "tw"),
            *extra]


def distributed(w, *extra):
    return train(w, "--distributed", "--coordinator-address", "127.0.0.1:1", *extra)


CASES = [
    # ------------------------------------------------------------------ score: -o vs inputs
    ("score/out_is_the_npz", lambda w: score(w, w["npz"] + ":x_test", out=w["npz"]), 2,
     r"-o '.*digits.npz' is one of the inputs"),
    ("score/out_is_an_npy_input", lambda w: score(w, w["inputs"]["npy"],
                                                  out=w["inputs"]["npy"]), 2,
     r"single.npy' is one of the inputs"),
    ("score/out_is_a_png_in_the_folder", lambda w: score(
        w, w["pngs"], out=os.path.join(w["pngs"], "img000.png")), 2,
     r"img000.png' is one of the inputs"),
    ("score/out_is_the_image_list", lambda w: score(
        w, image_list(w)[0], out=image_list(w)[0]), 2, r"list.txt' is one of the inputs"),
    ("score/out_is_a_listed_image", lambda w: score(
        w, image_list(w)[0], out=image_list(w)[1]), 2, r"img000.png' is one of the inputs"),
    ("score/out_is_detector_json", lambda w: score(
        w, w["npz"] + ":x_test", out=os.path.join(w["det"], "detector.json")), 2,
     r"lies inside .*det_knn, which this command reads"),
    ("score/out_in_the_model_folder", lambda w: score(
        w, w["npz"] + ":x_test", out=os.path.join(w["model"], "scores.csv")), 2,
     r"lies inside .*model, which this command reads"),
    ("score/out_is_a_symlink_to_input", lambda w: score(
        w, w["npz"] + ":x_test", out=link_to(w, w["npz"], "out.csv")), 2,
     r"out.csv' is one of the inputs"),
    ("score/batch_size_negative", lambda w: score(w, w["npz"] + ":x_test") + [
        "--batch-size", "-4"], 2, r"argument --batch-size: must be an integer >= 1"),
    ("score/batch_size_float", lambda w: score(w, w["npz"] + ":x_test") + [
        "--batch-size", "2.5"], 2, r"argument --batch-size: must be an integer >= 1"),
    # ------------------------------------------------------------------ score: saved state
    ("score/threshold_edited_to_nan", lambda w: score(w, w["npz"] + ":x_test", det=(
        edited_detector(w, "nan", lambda m: m["threshold"].update(value=float("nan"))))), 2,
     r"detector.json was edited after it was saved \(fields \['threshold'\]\)"),
    ("score/threshold_edited_to_string", lambda w: score(w, w["npz"] + ":x_test", det=(
        edited_detector(w, "str", lambda m: m["threshold"].update(value="high")))), 2,
     r"fields \['threshold'\]"),
    ("score/detector_name_edited", lambda w: score(w, w["npz"] + ":x_test", det=(
        edited_detector(w, "name", lambda m: m.update(detector="nope")))), 2,
     r"fields \['detector'\]"),
    ("score/model_dir_edited", lambda w: score(w, w["npz"] + ":x_test", det=(
        edited_detector(w, "mdir", lambda m: m.update(model_dir="/elsewhere")))), 2,
     r"fields \['model_dir'\]"),
    ("score/arrays_checksum_edited", lambda w: score(w, w["npz"] + ":x_test", det=(
        edited_detector(w, "sha", lambda m: m.update(arrays_sha256="0" * 64)))), 2,
     r"fields \['arrays_sha256'\]"),
    ("score/detector_json_a_list", lambda w: score(w, w["npz"] + ":x_test", det=(
        edited_detector(w, "list", lambda m: (m.clear(), m.update(format=None))))), 2,
     r"format None, expected 'jaxood-detector/1'"),
    # ------------------------------------------------------------------ fit
    *[(f"fit/confidence_{name}", lambda w, v=value: fit(
        w, "--detector", "msp", "--id", w["npz"], "--confidence", v), 2,
       rf"argument --confidence: must be in \(0, 1\) \(e.g. 0.9\), got '{value}'")
      for name, value in (("nan", "nan"), ("zero", "0"), ("one", "1"), ("text", "high"))],
    ("fit/tpr_zero", lambda w: fit(w, "--detector", "msp", "--id", w["npz"], "--tpr", "0"), 2,
     r"argument --tpr: must be a fraction in \(0, 1\]"),
    ("fit/batch_size_negative", lambda w: fit(w, "--detector", "msp", "--id", w["npz"],
                                              "--batch-size", "-1"), 2,
     r"argument --batch-size: must be an integer >= 1"),
    ("fit/aps_of_another_model", lambda w: fit(w, "--detector", "knn", "--id", w["npz"],
                                               "--aps", other_aps(w), out="fit_aps"), 2,
     r"was tuned on other model\(s\) \['elsewhere/model'\], not on this model's weights"),
    ("fit/adascale_k1_too_small", lambda w: fit(w, "--detector", "adascale_a", "--id",
                                                w["npz"], "--hparams", '{"k1": 1}',
                                                out="fit_k1"), 2,
     r"`k1`=1(\.0)?% of feature dimension 16 rounds down to 0 elements; use at least 6.25%"),
    ("fit/scale_percentile_keeps_nothing", lambda w: fit(
        w, "--detector", "scale", "--id", w["npz"], "--hparams", '{"percentile": 99}',
        out="fit_scale"), 2, r"`percentile`=99 keeps 0 of the model's D = 16"),
    ("fit/out_is_the_id_npz", lambda w: fit(w, "--detector", "msp", "--id", w["npz"])[:-2] + [
        "-o", w["npz"], "--overwrite"], 2, r"refusing to replace .*digits.npz: it is a file "
                                           r"without detector.json"),
    # ------------------------------------------------------------------ bench
    ("bench/name_escapes_out", lambda w: bench(w, "npz:" + w["npz"], "--detectors", "msp",
                                               "--name", "../../x"), 2,
     r"name \(--name\) '../../x' must be a plain folder name"),
    ("bench/name_with_slash", lambda w: bench(w, "npz:" + w["npz"], "--detectors", "msp",
                                              "--name", "a/b"), 2,
     r"name \(--name\) 'a/b' must be a plain folder name"),
    ("bench/name_hidden", lambda w: bench(w, "npz:" + w["npz"], "--detectors", "msp",
                                          "--name", ".hidden"), 2,
     r"must be a plain folder name \(no '/', no '..', not starting with '.'\)"),
    ("bench/name_dotdot", lambda w: bench(w, "npz:" + w["npz"], "--detectors", "msp",
                                          "--name", ".."), 2, r"must be a plain folder name"),
    ("bench/adascale_k1_impossible", lambda w: bench(
        w, "npz:" + w["npz"], "--detectors", "adascale_a", "--hparams",
        '{"adascale_a": {"k1": 1}}'), 2,
     r"--hparams for 'adascale_a' on .*model: `k1`=1(\.0)?% of feature dimension 16 rounds "
     r"down to 0 elements"),
    ("bench/scale_percentile_impossible", lambda w: bench(
        w, "npz:" + w["npz"], "--detectors", "scale", "--hparams",
        '{"scale": {"percentile": 99}}'), 2,
     r"--hparams for 'scale' on .*`percentile`=99 keeps 0 of the model's D = 16"),
    ("bench/batch_size_negative", lambda w: bench(w, "npz:" + w["npz"], "--batch-size",
                                                  "-8"), 2,
     r"argument --batch-size: must be an integer >= 1, got '-8'"),
    ("bench/fit_images_inf", lambda w: bench(w, "npz:" + w["npz"], "--fit-images-mb",
                                             "inf"), 2,
     r"argument --fit-images-mb: must be a finite number >= 0, got 'inf'"),
    # ------------------------------------------------------------------ export
    ("export/batch_size_negative", lambda w: ["export", w["det"], "-o",
                                              str(w["root"] / "e2"), "--batch-size", "-1"], 2,
     r"argument --batch-size: must be an integer >= 1"),
    ("export/batch_size_text", lambda w: ["export", w["det"], "-o", str(w["root"] / "e3"),
                                          "--batch-size", "all"], 2,
     r"argument --batch-size: must be an integer >= 1, got 'all'"),
    ("export/edited_detector", lambda w: ["export", edited_detector(
        w, "exp", lambda m: m["threshold"].update(value=1e30)), "-o", str(w["root"] / "e4")],
     2, r"fields \['threshold'\]"),
    ("export/out_is_the_detector", lambda w: ["export", w["det"], "-o", w["det"],
                                              "--overwrite"], 2,
     r"refusing to replace .*det_knn: it is a folder without metadata.json"),
    # ------------------------------------------------------------------ experiment
    ("experiment/subset_zero", lambda w: ["experiment", "fig7_pgrid", "--subset", "0"], 2,
     r"argument --subset: must be an integer >= 1, got '0'"),
    ("experiment/subset_negative", lambda w: ["experiment", "fig7_pgrid", "--subset=-5"], 2,
     r"argument --subset: must be an integer >= 1, got '-5'"),
    ("experiment/subset_float", lambda w: ["experiment", "fig7_pgrid", "--subset", "0.5"], 2,
     r"argument --subset: must be an integer >= 1, got '0.5'"),
    ("experiment/batch_size_zero", lambda w: ["experiment", "fig7_pgrid", "--batch-size",
                                              "0"], 2,
     r"argument --batch-size: must be an integer >= 1, got '0'"),
    ("experiment/seed_negative", lambda w: ["experiment", "fig7_pgrid", "--seed=-1"], 2,
     r"argument --seed: must be an integer >= 0, got '-1'"),
    ("experiment/out_inside_the_model", lambda w: [
        "experiment", "fig7_pgrid", "--benchmark", "npz:" + w["npz"], "--model", w["model"],
        "--out", os.path.join(w["model"], "results")], 2,
     r"--out '.*model/results' lies inside .*model, which this command reads"),
    ("experiment/work_is_the_discussion", lambda w: [
        "experiment", "fig7_pgrid", "--benchmark", "npz:" + w["npz"], "--model", w["model"],
        "--work", w["npz"], "--discussion", w["npz"]], 2,
     r"--work '.*digits.npz' is one of the inputs"),
    # ------------------------------------------------------------------ train / distributed
    ("train/one_class", lambda w: train(w, "--classes", "3"), 2,
     r"selects 1 class\(es\) \[3\]; a classifier needs at least 2"),
    ("train/seed_negative", lambda w: train(w, "--seed=-3"), 2,
     r"argument --seed: must be an integer >= 0, got '-3'"),
    ("train/num_processes_zero", lambda w: distributed(w, "--num-processes", "0"), 2,
     r"argument --num-processes: must be an integer >= 1, got '0'"),
    ("train/process_id_negative", lambda w: distributed(w, "--process-id=-1"), 2,
     r"argument --process-id: must be an integer >= 0, got '-1'"),
    ("train/process_id_too_large", lambda w: distributed(w, "--num-processes", "2",
                                                         "--process-id", "2"), 2,
     r"--process-id 2 must be in \[0, --num-processes 2\)"),
    ("train/startup_timeout_zero", lambda w: distributed(w, "--startup-timeout", "0"), 2,
     r"argument --startup-timeout: must be a finite number > 0, got '0'"),
    ("train/startup_timeout_nan", lambda w: distributed(w, "--startup-timeout", "nan"), 2,
     r"argument --startup-timeout: must be a finite number > 0, got 'nan'"),
    # ------------------------------------------------------------------ demo / convert
    ("demo/epochs_zero", lambda w: ["demo", "--epochs", "0"], 2,
     r"argument --epochs: must be an integer >= 1, got '0'"),
    ("demo/seed_negative", lambda w: ["demo", "--seed=-2"], 2,
     r"argument --seed: must be an integer >= 0, got '-2'"),
    ("convert/num_classes_zero", lambda w: ["convert", w["npz"], "--arch", "resnet18",
                                            "--num-classes", "0"], 2,
     r"argument --num-classes: must be an integer >= 1, got '0'"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_deploy_command_line(fuzz_world, case, capsys):
    cli_fuzz.test_bad_command_line(fuzz_world, case, capsys)  # the same classification


def test_outputs_were_not_replaced(fuzz_world):
    """The inputs the cases above named as -o are intact (not replaced by a CSV)."""
    import numpy as np

    with np.load(fuzz_world["npz"]) as f:
        assert "x_test" in f.files
    assert json.load(open(os.path.join(fuzz_world["det"], "detector.json")))["detector"] == "knn"
    assert open(os.path.join(fuzz_world["pngs"], "img000.png"), "rb").read(4) == b"\x89PNG"


def test_deploy_cli_cases_are_many_and_distinct():
    assert len(CASES) >= 40
    assert len({c[0] for c in CASES}) == len(CASES)
