"""fashion-openset (real data) and demo splits: sizes, disjointness, label mapping."""

import numpy as np

from jaxood.data import openset


def _rows(x):
    return {r.tobytes() for r in x.reshape(len(x), -1)}


def test_fashion_openset_splits(shared_data):
    d = openset.fashion_openset(str(shared_data))
    with np.load(shared_data / "fashion_mnist.npz") as f:
        ytr, yte, xte = f["y_train"], f["y_test"], f["x_test"]
    id_cls = [0, 1, 2, 3, 5, 8]
    x, y = d["train"]
    assert x.shape == (int(np.isin(ytr, id_cls).sum()), 28, 28, 1) and x.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(y), [6000] * 6)
    xv, yv = d["val"]
    xt, yt = d["test"]
    np.testing.assert_array_equal(np.bincount(yv), [100] * 6)
    assert len(xv) + len(xt) == int(np.isin(yte, id_cls).sum())
    # val and test come from the test split and are disjoint (index-wise: compare by content
    # together with the original label).
    assert len(_rows(np.concatenate([xv, xt]))) >= len(xv) + len(xt) - 5  # duplicates are rare
    # label remap: an ID test image's remapped label = position of its original class.
    lookup = {}
    for img, lab in zip(xte, yte):
        lookup.setdefault(img.tobytes(), set()).add(int(lab))
    for img, lab in zip(xt[:200], yt[:200]):
        assert id_cls[lab] in lookup[img[..., 0].tobytes()]
    xo, yo = d["ood_val"]
    assert xo.shape[0] == 400 and np.all(yo == -1)
    near_x, near_y = d["near"]["fashion_near"]
    assert len(near_x) == int(np.isin(yte, [4, 6, 7, 9]).sum()) and np.all(near_y == -1)
    assert not (_rows(xo) & _rows(near_x))  # OOD-val is from the train split
    far = d["far"]
    assert [len(far[k][0]) for k in ("mnist", "sk_digits", "noise")] == [10_000, 1_797, 2_000]
    assert all(far[k][0].shape[1:] == (28, 28, 1) for k in far)


def test_demo_dataset():
    d = openset.demo_dataset()
    from sklearn.datasets import load_digits

    digits = load_digits()
    n_id = int((digits.target < 5).sum())
    sizes = [len(d[k][0]) for k in ("train", "val", "test")]
    assert sum(sizes) == n_id and sizes[1:] == [100, 200]
    for k in ("train", "val", "test"):
        assert set(np.unique(d[k][1])) <= set(range(5))
    assert len(d["ood_val"][0]) + len(d["near"]["digits_5_9"][0]) == len(digits.target) - n_id
    assert d["far"]["noise"][0].shape == (500, 8, 8, 1)
    assert d["far"]["photo_patches"][0].shape == (500, 8, 8, 1)
    # Deterministic.
    d2 = openset.demo_dataset()
    np.testing.assert_array_equal(d["val"][0], d2["val"][0])
