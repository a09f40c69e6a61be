"""``jaxood train`` data handling through the real entry point: the .npz layout shared with
``jaxood bench`` (same loader, same messages), where val comes from, ``--classes``, label
checks, and flags rejected at parse time. Each error case asserts exit code 2 and a message
naming the flag, file or key."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest

import tests.bench.tiny_model  # noqa: F401 - registers the bench_tiny architecture
from jaxood import cli, models
from jaxood.data import openset, sources
from tests.cli.conftest import digits_world  # noqa: F401 - fixture re-exported here

TINY = ["--arch", "bench_tiny", "--arch-kwargs", '{"width": 4}', "--batch-size", "32",
        "--no-progress"]


def run(capsys, *argv):
    rc = cli.main(["train", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def train_cmd(npz, workdir, *extra):
    return ["--dataset", f"npz:{npz}", "--workdir", str(workdir), *TINY, *extra]


@pytest.fixture(scope="module")
def arrays(digits_world):  # noqa: F811 - the imported fixture
    with np.load(digits_world["npz"]) as f:
        return dict(f)


def variant(tmp_path, arrays, name, **changes):
    """The digits file with some arrays replaced (None: removed)."""
    path = tmp_path / f"{name}.npz"
    np.savez(path, **{k: v for k, v in {**arrays, **changes}.items() if v is not None})
    return str(path)


def accuracy_on(model_dir, x, y):
    """Top-1 accuracy of a saved model on uint8 images, preprocessing from its manifest."""
    loaded = models.load(model_dir)
    mean, std = np.array(loaded.preprocess.mean), np.array(loaded.preprocess.std)
    xn = ((x[..., None] / 255.0 - mean) / std).astype(np.float32)
    logits = jax.jit(loaded.model.features)(loaded.variables, xn).logits
    return float(np.mean(np.argmax(np.asarray(logits), -1) == y))


def test_x_val_of_the_file_selects_the_model_and_is_named(digits_world, arrays, tmp_path,  # noqa: F811
                                                         capsys):
    rc, _, err = run(capsys, *train_cmd(digits_world["npz"], tmp_path / "w", "--max-steps", "3"))
    assert rc == 0, err
    assert "val = x_val/y_val (100 images" in err
    records = [json.loads(line) for line in open(tmp_path / "w" / "metrics.jsonl")]
    [epoch] = [r for r in records if r.get("event") == "epoch"]
    # The val accuracy the trainer selected on is the model's accuracy on the file's x_val.
    best = str(tmp_path / "w" / "best")
    assert epoch["val_acc"] == pytest.approx(accuracy_on(best, arrays["x_val"], arrays["y_val"]))
    manifest = models.load(best).manifest
    assert manifest["train"]["val_source"].startswith("x_val/y_val")
    assert "class_map" not in manifest["train"]


def test_without_x_val_val_is_carved_from_train_never_test(arrays, tmp_path, capsys):
    path = variant(tmp_path, arrays, "noval", x_val=None, y_val=None)
    s = sources.load_dataset(f"npz:{path}", val_size=50)
    np.testing.assert_array_equal(s.test[0][..., 0], arrays["x_test"])  # test untouched
    assert len(s.val[0]) == 50 and np.bincount(s.val[1]).tolist() == [10] * 5
    rows = lambda x: sorted(map(bytes, x.reshape(len(x), -1)))
    assert rows(np.concatenate([s.train[0], s.val[0]])) == rows(arrays["x_train"])
    rc, _, err = run(capsys, *train_cmd(path, tmp_path / "w", "--max-steps", "1",
                                        "--val-size", "50"))
    assert rc == 0, err
    assert "val = 50 images carved from x_train (10 per class, seed 0)" in err


@pytest.mark.parametrize("size, expected", [
    ("52", r"val_size 52 must be a multiple of the 5 classes.*pass e.g. --val-size 50"),
    ("3", r"val_size 3 must be a multiple of the 5 classes.*--val-size 5\b"),
    ("600", r"class \d has \d+ x_train images, fewer than the 120 per class val_size 600 needs: "
            r"pass a smaller --val-size \(at most \d+\)"),
])
def test_val_size_errors_suggest_the_flag(arrays, tmp_path, capsys, size, expected):
    import re

    path = variant(tmp_path, arrays, "noval", x_val=None, y_val=None)
    rc, _, err = run(capsys, *train_cmd(path, tmp_path / "w", "--val-size", size))
    assert rc == 2 and re.search(expected, err), err
    assert not os.path.exists(tmp_path / "w" / "checkpoints")


def test_classes_select_remap_and_are_recorded(digits_world, arrays, tmp_path,  # noqa: F811
                                              capsys):
    rc, _, err = run(capsys, *train_cmd(digits_world["npz"], tmp_path / "w", "--max-steps", "2",
                                        "--classes", "4,0,2"))
    assert rc == 0, err
    best = models.load(str(tmp_path / "w" / "best"))
    assert best.manifest["num_classes"] == 3
    assert best.manifest["train"]["class_map"] == {"0": 4, "1": 0, "2": 2}
    assert best.manifest["train"]["config"]["classes"] == [4, 0, 2]
    # Remapping against an independent construction: label i <-> original class [4, 0, 2][i].
    s = sources.load_dataset(f"npz:{digits_world['npz']}", classes=(4, 0, 2))
    for split, (x, y) in (("train", s.train), ("val", s.val), ("test", s.test)):
        xo, yo = arrays[f"x_{split}"], arrays[f"y_{split}"]
        for new, old in enumerate((4, 0, 2)):
            np.testing.assert_array_equal(x[y == new][..., 0], xo[yo == old])
        assert len(y) == np.isin(yo, (4, 0, 2)).sum()


def test_fashion_classes_give_the_fashion_openset_splits(shared_data):
    s = sources.load_dataset("fashion_mnist", str(shared_data), val_size=600,
                             classes=openset.FASHION_ID)
    bench = openset.fashion_openset(str(shared_data))
    assert s.num_classes == 6 and "carved from x_test" in s.val_source
    for split, (x, y) in (("train", s.train), ("val", s.val), ("test", s.test)):
        np.testing.assert_array_equal(x, bench[split][0], err_msg=split)
        np.testing.assert_array_equal(y, bench[split][1], err_msg=split)


@pytest.mark.parametrize("argv, expected", [
    (["--classes", "0,7"], r"classes \(--classes\) \[7\] are not class ids of digits, which "
                           r"has 5 \(ids 0\.\.4\)"),
    (["--classes", "1,2,1"], r"argument --classes: .*lists \[1\] more than once"),
    (["--classes", ""], r"argument --classes: must be comma-separated class ids"),
    # A value starting with "-" is still the flag's value (argparse alone: "expected one
    # argument"), so the message says what is wrong with it.
    (["--classes", "-1,2"], r"argument --classes: .*-1"),
    (["--mean", "-0.5", "--std", "-1"],  # a negative mean is fine, a negative std is not
     r"argument --std: must be comma-separated positive finite numbers"),
    (["--classes", "0,1", "--num-classes", "5"],
     r"num_classes = 5 but classes \(--classes\) selects 2.*drop --num-classes"),
])
def test_bad_classes(digits_world, tmp_path, capsys, argv, expected):  # noqa: F811
    import re

    rc, _, err = run(capsys, *train_cmd(digits_world["npz"], tmp_path / "w", *argv))
    assert rc == 2 and re.search(expected, err), err


def _label_cases(arrays):
    y_train, y_val = arrays["y_train"], arrays["y_val"]
    return {
        "stray": ({"y_train": np.r_[y_train[:-1], 99], "num_classes": None},
                  r"y_train's largest label 99 would mean 100 classes, but classes 5, 6, .* "
                  r"have no samples \(a stray label\?\); labels above 5: 99 \(1x\)"),
        "val_out": ({"y_val": np.r_[y_val[:-2], 7, 7]},
                    r"'y_val' has 2 label\(s\) outside \[0, 5\) \(num_classes = 5\): 7 \(2x\)"),
        "float": ({"y_test": arrays["y_test"] + 0.5},
                  r"'y_test' must be \[N\] integer class ids, got float64"),
        "count": ({"y_train": y_train[:-1]},
                  r"'y_train' has 299 labels for 300 images in 'x_train'"),
        "no_y_val": ({"y_val": None}, r"has 'x_val' but no 'y_val'; store both or neither"),
    }


@pytest.mark.parametrize("case", ["stray", "val_out", "float", "count", "no_y_val"])
def test_label_errors_name_the_key_the_values_and_counts(arrays, tmp_path, capsys, case):
    import re

    changes, expected = _label_cases(arrays)[case]
    path = variant(tmp_path, arrays, case, **changes)
    rc, _, err = run(capsys, *train_cmd(path, tmp_path / "w", "--val-size", "0"))
    assert rc == 2 and re.search(expected, err), err
    assert f"{case}.npz" in err


def test_label_errors_of_arrays_given_to_the_api(arrays, tmp_path):
    from jaxood.train import TrainConfig, train

    cfg = TrainConfig(arch="bench_tiny", arch_kwargs={"width": 4}, workdir=str(tmp_path),
                      val_size=0, progress=False)
    y = np.r_[arrays["y_train"][:-1], 99]
    with pytest.raises(ValueError, match=r"y_train's largest label 99 .*labels above 5: 99 \(1x\)"):
        train(cfg, train_data=(arrays["x_train"], y))
    with pytest.raises(ValueError, match=r"'y_val' has 1 label\(s\) outside \[0, 5\).*: -3 \(1x\)"):
        train(cfg, train_data=(arrays["x_train"], arrays["y_train"]),
              val_data=(arrays["x_val"], np.r_[arrays["y_val"][:-1], -3]))


def _broken_files(tmp_path, arrays, npz):
    raw = open(npz, "rb").read()
    (tmp_path / "corrupt.npz").write_bytes(b"PK\x03\x04 not a zip archive" * 8)
    (tmp_path / "truncated.npz").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "empty.npz").write_bytes(b"")
    ragged = np.empty(2, object)
    ragged[0], ragged[1] = np.zeros((8, 8), np.uint8), np.zeros((9, 8), np.uint8)
    variant(tmp_path, arrays, "ragged", x_test=ragged, y_test=np.zeros(2, np.int64))
    variant(tmp_path, arrays, "float_images", x_val=arrays["x_val"].astype(np.float32))
    variant(tmp_path, arrays, "mixed_sizes", x_test=np.zeros((200, 16, 16), np.uint8))
    return {
        "corrupt": r"corrupt.npz' is not a readable .npz file .*truncated or corrupt",
        "truncated": r"truncated.npz' is not a readable .npz file",
        "empty": r"empty.npz' is empty \(0 bytes\)",
        "ragged": r"ragged.npz: 'x_test' is a ragged \(object\) array; images must share one shape",
        "float_images": r"'x_val' must hold uint8 images",
        "mixed_sizes": r"image arrays must share one shape .* x_test is \(16, 16, 1\)",
    }


def test_broken_files_give_the_same_message_as_bench(digits_world, arrays, tmp_path,  # noqa: F811
                                                     capsys):
    import re

    for name, expected in _broken_files(tmp_path, arrays, digits_world["npz"]).items():
        path = str(tmp_path / f"{name}.npz")
        rc, _, err = run(capsys, *train_cmd(path, tmp_path / f"w_{name}"))
        assert rc == 2 and re.search(expected, err), (name, err)
        rc_b = cli.main(["bench", "--benchmark", f"npz:{path}", "--model", digits_world["model"],
                         "--out", str(tmp_path / "b"), "--quiet", "--detectors", "msp"])
        err_b = capsys.readouterr().err
        assert rc_b == 2
        message = lambda text: text.strip().splitlines()[-1].split("error: ", 1)[1]
        assert message(err) == message(err_b), name


@pytest.mark.parametrize("flag, value, expected", [
    ("--lr", "nan", "must be a finite number > 0, got 'nan'"),
    ("--lr", "inf", "must be a finite number > 0, got 'inf'"),
    ("--lr", "-0.1", "must be a finite number > 0, got '-0.1'"),
    ("--min-lr", "nan", "must be a finite number >= 0"),
    ("--weight-decay", "-1e-4", "must be a finite number >= 0"),
    ("--fc-weight-decay", "inf", "must be a finite number >= 0"),
    ("--momentum", "nan", "must be a finite number >= 0"),
    ("--logitnorm-tau", "0", "must be a finite number > 0"),
    ("--ish-percentile", "nan", "must be a number in [0, 1)"),
    ("--mean", "0.5,nan", "must be comma-separated finite numbers"),
    ("--std", "0.25,-1", "must be comma-separated positive finite numbers"),
    ("--epochs", "0", "must be an integer >= 1"),
    ("--val-size", "-1", "must be an integer >= 0"),
    ("--arch-kwargs", "{depth: 10}", "is not valid JSON"),
    ("--arch-kwargs", "[10]", "must be a JSON object"),
])
def test_bad_flags_fail_at_parse_time(tmp_path, capsys, flag, value, expected):
    rc, _, err = run(capsys, "--dataset", "npz:/nonexistent.npz", "--workdir",
                     str(tmp_path / "w"), f"{flag}={value}")
    assert rc == 2 and f"argument {flag}: {expected}" in err, err
    assert not os.path.exists(tmp_path / "w")


def test_unknown_arch_kwargs_list_the_valid_ones_before_loading_data(tmp_path, capsys):
    rc, _, err = run(capsys, "--dataset", "npz:/nonexistent.npz", "--workdir",
                     str(tmp_path / "w"), "--arch", "wrn", "--arch-kwargs", '{"depthx": 10}')
    assert rc == 2, err
    assert ("model 'wrn' has no keyword argument(s) ['depthx'] (arch_kwargs / --arch-kwargs; "
            "num_classes comes from the data); valid: depth, widen_factor, dropout_rate") in err
    rc, _, err = run(capsys, "--dataset", "cifar10", "--arch", "wrn16_4", "--arch-kwargs",
                     '{"num_classes": 3}')
    assert rc == 2 and "['num_classes']" in err and "valid: dropout_rate" in err
    rc, _, err = run(capsys, "--dataset", "npz:/nonexistent.npz", "--workdir",
                     str(tmp_path / "w"), "--arch", "wrn", "--arch-kwargs",
                     '{"depth": 16, "dropout_rate": NaN}')
    assert rc == 2 and "['dropout_rate'] must be finite numbers, got dropout_rate=nan" in err, err
    assert not os.path.exists(tmp_path / "w")


def test_distributed_survivor_exits_promptly_with_the_resume_command(tmp_path, monkeypatch,
                                                                    capsys):
    """A peer lost mid-training: the survivor prints one line with the resume command
    (``--resume`` added) and exits with status 1 at once (os._exit, no shutdown barrier)."""
    from jaxood.train import trainer

    def lost_peer(cfg, resume=False):
        raise RuntimeError("Gloo: Connection reset by peer [127.0.0.1]:1234")

    class Exited(Exception):
        pass

    def fake_exit(code):
        raise Exited(code)

    monkeypatch.setattr(trainer, "train", lost_peer)
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    monkeypatch.setattr(os, "_exit", fake_exit)
    argv = ["jaxood", "train", "--dataset", "cifar10", "--workdir", str(tmp_path / "w")]
    monkeypatch.setattr("sys.argv", argv)
    with pytest.raises(Exited) as exited:
        cli.main(argv[1:])
    assert exited.value.args == (1,)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "process 1 of 2: a peer process was lost" in err[0]
    assert err[0].endswith(f"Resume every process with: {' '.join(argv)} --resume")
