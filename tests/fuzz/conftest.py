"""Fixtures of the bad-input fuzz suite, built once per test session: the digits npz
benchmark and saved TinyNet of ``tests/cli/conftest.py``, features of that model, saved
detectors, and a collection of broken files (corrupt, truncated, empty, ragged, out-of-range
labels, wrong image size)."""


import numpy as np
import pytest

from tests.cli.conftest import digits_world  # noqa: F401 - fixture re-exported here


def _save(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


@pytest.fixture(scope="session")
def fuzz_world(digits_world):  # noqa: F811 - the imported fixture
    import jaxood
    from jaxood import models

    w = dict(digits_world)
    root = w["root"] / "fuzz"
    root.mkdir()
    with np.load(w["npz"]) as f:
        keys = dict(f)
    loaded = models.load(w["model"])
    x_val = ((keys["x_val"][..., None] / 255.0 - 0.5) / 0.25).astype(np.float32)
    feats = loaded.model.features(loaded.variables, x_val)
    id_data = {"train": (keys["x_train"], keys["y_train"]), "val": keys["x_val"]}
    knn = jaxood.fit("knn", loaded, id_data, {"K": 5})
    det = str(root / "det_knn")
    knn.save(det)

    raw = open(w["npz"], "rb").read()
    files = {
        "corrupt": root / "corrupt.npz",
        "truncated": root / "truncated.npz",
        "empty": root / "empty.npz",
    }
    files["corrupt"].write_bytes(b"PK\x03\x04 this is not a zip archive" * 8)
    files["truncated"].write_bytes(raw[: len(raw) // 2])
    files["empty"].write_bytes(b"")
    # Flip bytes inside the first member's data: the archive opens, reading it fails (CRC).
    bad_member = bytearray(raw)
    bad_member[200:260] = bytes(60)
    files["bad_member"] = root / "bad_member.npz"
    files["bad_member"].write_bytes(bytes(bad_member))
    (root / "bad_member.bin").write_bytes(bytes(bad_member))  # binary, not an image list
    ragged = np.empty(2, object)
    ragged[0], ragged[1] = np.zeros((8, 8), np.uint8), np.zeros((9, 8), np.uint8)
    variant = lambda name, **ch: _save(root / f"{name}.npz", **{
        k: v for k, v in {**keys, **ch}.items() if v is not None})
    bench = {
        "ragged": variant("ragged", x_far_rag=ragged),
        "y_test_out": variant("y_test_out", y_test=keys["y_test"] + 3),
        "y_val_neg": variant("y_val_neg", y_val=keys["y_val"] - 1),
        "y_train_stray": variant("y_train_stray", num_classes=None,
                                 y_train=np.r_[keys["y_train"][:-1], 99]),
        "y_float": variant("y_float", y_test=keys["y_test"] + 0.5),
        "y_count": variant("y_count", y_test=keys["y_test"][:5]),
        "no_x_val": variant("no_x_val", x_val=None),
        "float_images": variant("float_images", x_test=keys["x_test"].astype(np.float32)),
        "big_images": variant("big_images", x_test=np.zeros((20, 16, 16), np.uint8),
                              y_test=np.zeros(20, np.int64)),
        "empty_ood": variant("empty_ood", x_far_noise=np.zeros((0, 8, 8), np.uint8)),
        "no_ood": variant("no_ood", x_near_digits59=None, x_far_noise=None),
    }
    inputs = {
        "nchw_float": _save(root / "nchw.npz", x=np.zeros((4, 1, 8, 8), np.float32)),
        "big_uint8": _save(root / "big.npz", x=np.zeros((4, 16, 16), np.uint8)),
        "pixels_float": _save(root / "pixels.npz",
                              x=keys["x_test"][:20, ..., None].astype(np.float32)),
        "nan_float": _save(root / "nan.npz", x=np.full((4, 8, 8, 1), np.nan, np.float32)),
        "npy": root / "single.npy",
    }
    np.save(inputs["npy"], keys["x_val"][:30])
    blocker = root / "a_file"
    blocker.write_text("not a folder")
    w.update(
        keys=keys, loaded=loaded, x_val=x_val, feats=feats, id_data=id_data, knn=knn, det=det,
        files={k: str(v) for k, v in files.items()}, bench=bench,
        inputs={k: str(v) for k, v in inputs.items()},
        unwritable=str(blocker / "sub"),  # its parent is a file: cannot be created (even as root)
        root=root,
    )
    return w
