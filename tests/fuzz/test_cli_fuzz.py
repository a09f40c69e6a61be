"""Bad command lines, in process through the real entry point ``jaxood.cli.main``: each must
exit with code 2 (usage or user error; 1 when a benchmark produced nothing) and say on
stderr what is wrong, naming the flag or file; a few must succeed with a warning."""

import re
import shutil

import pytest

from jaxood import cli


def bench(w, benchmark, *extra):
    return ["bench", "--benchmark", benchmark, "--model", w["model"], "--out",
            str(w["root"] / "bench_out"), "--quiet", "--no-plots", "--no-save-detectors",
            *extra]


def npz_bench(w, key, *extra):
    return bench(w, "npz:" + w["bench"][key], "--detectors", "msp", *extra)


def fit(w, *extra, out="fit_out"):
    return ["fit", "--model", w["model"], "--quiet", "-o", str(w["root"] / out), *extra]


def score(w, *inputs, det=None, out=None):
    out = out or str(w["root"] / "scores.csv")
    return ["score", det or w["det"], *inputs, "-o", out, "--quiet"]


def corrupt_detector(w):
    bad = w["root"] / "det_corrupt"
    if not bad.exists():
        shutil.copytree(w["det"], bad)
        (bad / "detector.json").write_text("{not json")
    return str(bad)


def other_model(w):
    from tests.bench.tiny_model import save_tiny

    path = w["root"] / "other_model"
    if not path.exists():
        save_tiny(str(path), num_classes=5, input_shape=(8, 8, 1), seed=7)
    return str(path)


# (id, argv(world), exit code, stderr regex)
CASES = [
    # ------------------------------------------------------------------ bench
    ("bench/unknown_benchmark", lambda w: bench(w, "cifar9"), 2,
     r"unknown benchmark 'cifar9'; valid names: cifar10"),
    ("bench/model_missing", lambda w: bench(w, "npz:" + w["npz"])[:3] + [
        "--model", "/nonexistent/model", "--out", str(w["root"] / "b")], 2,
     r"model directory '/nonexistent/model' does not exist"),
    ("bench/model_is_file", lambda w: bench(w, "npz:" + w["npz"])[:3] + [
        "--model", w["npz"], "--out", str(w["root"] / "b")], 2, r"digits.npz"),
    ("bench/npz_missing", lambda w: bench(w, "npz:/nonexistent.npz"), 2,
     r"benchmark file '/nonexistent.npz' does not exist"),
    ("bench/npz_corrupt", lambda w: bench(w, "npz:" + w["files"]["corrupt"]), 2,
     r"corrupt.npz' is not a readable .npz file .*truncated or corrupt"),
    ("bench/npz_truncated", lambda w: bench(w, "npz:" + w["files"]["truncated"]), 2,
     r"truncated.npz' is not a readable .npz file"),
    ("bench/npz_empty_file", lambda w: bench(w, "npz:" + w["files"]["empty"]), 2,
     r"empty.npz' is empty \(0 bytes\)"),
    ("bench/npz_bad_member", lambda w: bench(w, "npz:" + w["files"]["bad_member"]), 2,
     r"bad_member.npz: array 'x_train' is unreadable"),
    ("bench/npz_ragged", lambda w: npz_bench(w, "ragged"), 2,
     r"ragged.npz: 'x_far_rag' is a ragged \(object\) array; images must share one shape"),
    ("bench/y_test_out_of_range", lambda w: npz_bench(w, "y_test_out"), 2,
     r"'y_test' has \d+ label\(s\) outside \[0, 5\) \(num_classes = 5\): 5 \(\d+x\), 6 \(\d+x\), 7"),
    ("bench/y_val_negative", lambda w: npz_bench(w, "y_val_neg"), 2,
     r"'y_val' has \d+ label\(s\) outside \[0, 5\).*: -1"),
    ("bench/y_train_stray_label", lambda w: npz_bench(w, "y_train_stray"), 2,
     r"y_train's largest label 99 would mean 100 classes.*a stray label\?"),
    ("bench/y_float", lambda w: npz_bench(w, "y_float"), 2,
     r"'y_test' must be \[N\] integer class ids"),
    ("bench/y_count", lambda w: npz_bench(w, "y_count"), 2,
     r"'y_test' has 5 labels for 200 images in 'x_test'"),
    ("bench/missing_key", lambda w: npz_bench(w, "no_x_val"), 2, r"lacks \['x_val'\]"),
    ("bench/float_images", lambda w: npz_bench(w, "float_images"), 2,
     r"'x_test' must hold uint8 images"),
    ("bench/mixed_image_sizes", lambda w: npz_bench(w, "big_images"), 2,
     r"image arrays must share one shape .* x_test is \(16, 16, 1\)"),
    ("bench/empty_ood_set", lambda w: npz_bench(w, "empty_ood"), 2,
     r"'x_far_noise' is empty"),
    ("bench/no_ood_sets", lambda w: npz_bench(w, "no_ood"), 2,
     r"has no x_near_<name> or x_far_<name> arrays"),
    ("bench/hparams_bad_json", lambda w: bench(w, "npz:" + w["npz"], "--hparams", "{bad"), 2,
     r"--hparams is not valid JSON"),
    ("bench/hparams_nan", lambda w: bench(w, "npz:" + w["npz"], "--detectors", "react",
                                          "--hparams", '{"react": {"percentile": NaN}}'), 2,
     r"`percentile` must be a finite number, got nan"),
    ("bench/hparams_list", lambda w: bench(w, "npz:" + w["npz"], "--hparams", "[1]"), 2,
     r"--hparams must map detector names to dicts"),
    ("bench/unknown_detector", lambda w: bench(w, "npz:" + w["npz"], "--detectors", "msq"), 2,
     r"unknown detector 'msq'; valid names: .*msp"),
    ("bench/unwritable_out", lambda w: bench(w, "npz:" + w["npz"], "--detectors", "msp")[:5] + [
        "--out", w["unwritable"], "--detectors", "msp", "--quiet"], 2,
     r"output directory .*a_file/sub.* is not writable"),
    ("bench/batch_size_0", lambda w: bench(w, "npz:" + w["npz"], "--batch-size", "0"), 2,
     r"argument --batch-size: must be an integer >= 1, got '0'"),
    ("bench/batch_size_text", lambda w: bench(w, "npz:" + w["npz"], "--batch-size", "big"), 2,
     r"argument --batch-size: must be an integer >= 1, got 'big'"),
    ("bench/fit_images_negative", lambda w: bench(w, "npz:" + w["npz"], "--fit-images-mb",
                                                  "-1"), 2,
     r"argument --fit-images-mb: must be a finite number >= 0"),
    ("bench/fit_images_nan", lambda w: bench(w, "npz:" + w["npz"], "--fit-images-mb", "nan"), 2,
     r"argument --fit-images-mb: must be a finite number >= 0, got 'nan'"),
    ("bench/checksums_on_arrays", lambda w: npz_bench(w, "y_test_out")[:-2] + [
        "--benchmark", "npz:" + w["npz"], "--detectors", "msp", "--checksums", "sums.txt"], 2,
     r"checksums verify the image files of image-list benchmarks"),
    ("bench/missing_benchmark_flag", lambda w: ["bench", "--model", w["model"]], 2,
     r"the following arguments are required: --benchmark"),
    ("bench/K_above_bank_fails_all", lambda w: bench(
        w, "npz:" + w["npz"], "--detectors", "knn", "--no-aps", "--hparams",
        '{"knn": {"K": 5000}}', "--name", "kbank"), 1,
     r"knn: ValueError: `K`=5000 must be in \[1, bank size 300\].*\n.*no detector succeeded"),
    ("bench/unused_hparams_warn", lambda w: bench(
        w, "npz:" + w["npz"], "--detectors", "msp", "--hparams", '{"react": {"percentile": 90}}',
        "--name", "unused"), 0,
     r"warning: --hparams given for \['react'\], which are not among --detectors"),
    # ------------------------------------------------------------------ fit
    ("fit/no_data", lambda w: fit(w, "--detector", "msp"), 2,
     r"give the ID data: --id, --train/--val, or --benchmark"),
    ("fit/id_missing", lambda w: fit(w, "--detector", "msp", "--id", "/nonexistent.npz"), 2,
     r"'/nonexistent.npz' does not exist"),
    ("fit/id_corrupt", lambda w: fit(w, "--detector", "msp", "--id", w["files"]["corrupt"]), 2,
     r"corrupt.npz' is not a readable .npz file"),
    ("fit/id_truncated", lambda w: fit(w, "--detector", "msp", "--id",
                                       w["files"]["truncated"]), 2,
     r"truncated.npz' is not a readable .npz file"),
    ("fit/tpr_percent", lambda w: fit(w, "--detector", "msp", "--id", w["npz"], "--tpr", "95"),
     2, r"argument --tpr: must be a fraction in \(0, 1\] \(e.g. 0.95\), got '95'"),
    ("fit/tpr_nan", lambda w: fit(w, "--detector", "msp", "--id", w["npz"], "--tpr", "nan"), 2,
     r"argument --tpr: must be a fraction"),
    ("fit/confidence", lambda w: fit(w, "--detector", "msp", "--id", w["npz"], "--confidence",
                                     "1.5"), 2, r"argument --confidence: must be in \(0, 1\)"),
    ("fit/hparams_list", lambda w: fit(w, "--detector", "msp", "--id", w["npz"], "--hparams",
                                       "[1]"), 2, r"--hparams must be a JSON object"),
    ("fit/hparams_bad_name", lambda w: fit(w, "--detector", "knn", "--id", w["npz"],
                                           "--hparams", '{"k": 5}'), 2,
     r"unknown hyperparameter\(s\) \['k'\]; valid: \['K'"),
    ("fit/unknown_detector", lambda w: fit(w, "--detector", "knnn", "--id", w["npz"]), 2,
     r"unknown detector 'knnn'"),
    ("fit/out_exists", lambda w: fit(w, "--detector", "msp", "--id", w["npz"], out="det_knn"),
     2, r"det_knn exists; pass overwrite=True \(--overwrite\) to replace it"),
    ("fit/out_unwritable", lambda w: fit(w, "--detector", "msp", "--id", w["npz"])[:-2] + [
        "-o", w["unwritable"]], 2, r"-o '.*a_file/sub': its folder .* cannot be created"),
    ("fit/batch_size_0", lambda w: fit(w, "--detector", "msp", "--id", w["npz"],
                                       "--batch-size", "0"), 2,
     r"argument --batch-size: must be an integer >= 1"),
    ("fit/labels_out_of_range", lambda w: fit(w, "--detector", "mds", "--id",
                                              w["bench"]["y_test_out"] + ":x_test"), 2,
     r"ID-train labels must be class ids in \[0, 5\)"),
    ("fit/model_not_a_model", lambda w: fit(w, "--detector", "msp", "--id", w["npz"])[:1] + [
        "--model", str(w["root"]), "--detector", "msp", "--id", w["npz"], "-o",
        str(w["root"] / "x")], 2, r"has no manifest.json: not a jaxood saved-model directory"),
    ("fit/aps_missing", lambda w: fit(w, "--detector", "knn", "--id", w["npz"], "--aps",
                                      "/nonexistent/results"), 2,
     r"hyperparameter file '/nonexistent/results' does not exist"),
    ("fit/benchmark_and_id", lambda w: fit(w, "--detector", "msp", "--id", w["npz"],
                                           "--benchmark", "npz:" + w["npz"]), 2,
     r"give --benchmark or --id, not both"),
    ("fit/overwrite_a_model", lambda w: fit(w, "--detector", "msp", "--id", w["npz"])[:-2] + [
        "-o", w["model"], "--overwrite"], 2,
     r"refusing to replace .*model: it is a folder without detector.json"),
    ("fit/hparams_neither_file_nor_json", lambda w: fit(w, "--detector", "react", "--id",
                                                        w["npz"], "--hparams", "params.json"),
     2, r"--hparams 'params.json' is neither an existing file nor JSON text"),
    ("bench/detectors_with_commas", lambda w: bench(w, "npz:" + w["npz"], "--detectors",
                                                    "msp,ebo"), 2,
     r"unknown detector 'msp,ebo' \(several names\? separate them with spaces"),
    # ------------------------------------------------------------------ score
    ("score/detector_missing", lambda w: score(w, w["npz"] + ":x_test", det="/nonexistent"), 2,
     r"saved detector '/nonexistent' does not exist"),
    ("score/detector_corrupt", lambda w: score(w, w["npz"] + ":x_test",
                                               det=corrupt_detector(w)), 2,
     r"detector.json is corrupt \(invalid JSON"),
    ("score/input_missing", lambda w: score(w, "/nonexistent/images"), 2,
     r"input '/nonexistent/images' does not exist"),
    ("score/out_folder_missing", lambda w: score(w, w["npz"] + ":x_test",
                                                 out="/nonexistent/dir/s.csv"), 2,
     r"-o '/nonexistent/dir/s.csv': folder '/nonexistent/dir' does not exist"),
    ("score/out_is_folder", lambda w: score(w, w["npz"] + ":x_test", out=str(w["root"])), 2,
     r"-o '.*fuzz' is a folder; give a file name"),
    ("score/batch_size_0", lambda w: score(w, w["npz"] + ":x_test") + ["--batch-size", "0"], 2,
     r"argument --batch-size: must be an integer >= 1"),
    ("score/float_nchw", lambda w: score(w, w["inputs"]["nchw_float"]), 2,
     r"`nchw.npz:x`: expected \[N, H, W, C\] = \[N, 8, 8, 1\], got \[4, 1, 8, 8\]; NCHW\?"),
    ("score/uint8_wrong_size", lambda w: score(w, w["inputs"]["big_uint8"]), 2,
     r"`big.npz:x`: uint8 images of shape \(16, 16\) .* the model takes \(8, 8, 1\)"),
    ("score/float_nan", lambda w: score(w, w["inputs"]["nan_float"]), 2,
     r"`nan.npz:x\[0:4\]` contains \d+ NaN/Inf"),
    ("score/npz_key_missing", lambda w: score(w, w["npz"] + ":x_nope"), 2,
     r"digits.npz' has no array 'x_nope'; it has \["),
    ("score/npz_truncated", lambda w: score(w, w["files"]["truncated"]), 2,
     r"truncated.npz' is not a readable .npz file"),
    ("score/binary_input", lambda w: score(w, w["files"]["bad_member"].replace(".npz", ".bin")),
     2, r"is not a text image list \(it is binary\)"),
    ("score/model_missing", lambda w: score(w, w["npz"] + ":x_test") + [
        "--model", "/nonexistent/model"], 2, r"model directory '/nonexistent/model'"),
    ("score/another_model", lambda w: score(w, w["npz"] + ":x_test") + [
        "--model", other_model(w)], 2,
     r"was fitted on another model \(weights: fitted on sha256 .*, got"),
    # ------------------------------------------------------------------ export
    ("export/detector_missing", lambda w: ["export", "/nonexistent", "-o",
                                           str(w["root"] / "e")], 2,
     r"saved detector '/nonexistent' does not exist"),
    ("export/out_exists", lambda w: ["export", w["det"], "-o", w["det"]], 2,
     r"det_knn exists; pass overwrite=True \(--overwrite\) to replace it"),
    ("export/overwrite_a_folder", lambda w: ["export", w["det"], "-o", w["model"],
                                             "--overwrite"], 2,
     r"refusing to replace .*model: it is a folder without metadata.json"),
    ("export/platform", lambda w: ["export", w["det"], "-o", str(w["root"] / "e"),
                                   "--platforms", "gpu9"], 2,
     r"argument --platforms: invalid choice: 'gpu9'"),
    ("export/batch_size_0", lambda w: ["export", w["det"], "-o", str(w["root"] / "e"),
                                       "--batch-size", "0"], 2,
     r"argument --batch-size: must be an integer >= 1"),
    ("export/unwritable", lambda w: ["export", w["det"], "-o", w["unwritable"]], 2,
     r"-o '.*a_file/sub': its folder .* cannot be created"),
    # ------------------------------------------------------------------ detectors, top level
    ("detectors/unknown", lambda w: ["detectors", "nope"], 2, r"unknown detector 'nope'"),
    ("detectors/import_missing", lambda w: ["detectors", "--import", "/nonexistent/plug.py"], 2,
     r"--import '/nonexistent/plug.py': no such file"),
    ("detectors/import_broken", lambda w: ["detectors", "--import", broken_plugin(w)], 2,
     r"--import '.*broken_plugin.py' failed: RuntimeError: boom"),
    ("top/no_command", lambda w: [], 2, r"usage: jaxood"),
    ("top/unknown_command", lambda w: ["benchmark"], 2, r"invalid choice: 'benchmark'"),
]


def broken_plugin(w):
    path = w["root"] / "broken_plugin.py"
    path.write_text("raise RuntimeError('boom')\n")
    return str(path)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_command_line(fuzz_world, case, capsys):
    _, argv, code, pattern = case
    rc = cli.main(argv(fuzz_world))
    err = capsys.readouterr().err
    assert rc == code, err
    assert re.search(pattern, err), err
    assert "Traceback" not in err


def test_score_warns_on_unnormalised_floats(fuzz_world, capsys):
    w = fuzz_world
    with pytest.warns(UserWarning, match=r"`pixels.npz:x` ranges over \[0, 255\]: it looks "
                                         r"like unnormalised pixel values"):
        rc = cli.main(score(w, w["inputs"]["pixels_float"], out=str(w["root"] / "px.csv")))
    assert rc == 0
    assert "20 scored" in capsys.readouterr().out


def test_cases_cover_every_subcommand():
    commands = {c[0].split("/")[0] for c in CASES}
    assert {"bench", "fit", "score", "export", "detectors"} <= commands
    assert len(CASES) >= 60
