"""Dataset sources: val carving, .npz/Fashion-MNIST, TFDS (mocked, offline), bad input."""

from __future__ import annotations

import numpy as np
import pytest

from jaxood.data import sources


def test_carve_val_per_class_seeded_and_disjoint():
    y = np.repeat(np.arange(10), 30)
    np.random.default_rng(1).shuffle(y)
    val, rest = sources.carve_val(y, 100, 10, seed=0)
    assert np.bincount(y[val], minlength=10).tolist() == [10] * 10
    assert len(np.intersect1d(val, rest)) == 0 and len(val) + len(rest) == len(y)
    np.testing.assert_array_equal(val, sources.carve_val(y, 100, 10, seed=0)[0])
    assert not np.array_equal(val, sources.carve_val(y, 100, 10, seed=1)[0])
    with pytest.raises(ValueError, match="multiple"):
        sources.carve_val(y, 105, 10)


def test_npz_source_and_statistics(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (50, 6, 6), dtype=np.uint8),
        "y_train": rng.integers(0, 3, 50),
        "x_test": rng.integers(0, 256, (30, 6, 6), dtype=np.uint8),
        "y_test": np.repeat(np.arange(3), 10),
    }
    np.savez(tmp_path / "d.npz", **arrays)
    s = sources.load_dataset(f"npz:{tmp_path / 'd.npz'}", val_size=6)
    # No x_val in the file: val is carved from x_train, the test split is left whole.
    assert s.train[0].shape == (44, 6, 6, 1) and s.num_classes == 3
    assert len(s.val[0]) == 6 and len(s.test[0]) == 30 and "carved from x_train" in s.val_source
    np.testing.assert_array_equal(s.test[0][..., 0], arrays["x_test"])
    together = np.concatenate([s.train[0], s.val[0]])[..., 0]  # train = x_train minus val
    assert sorted(map(bytes, together)) == sorted(map(bytes, arrays["x_train"]))
    np.testing.assert_allclose(s.mean, [s.train[0].mean() / 255], atol=1e-4)
    np.testing.assert_allclose(s.std, [(s.train[0] / 255).std()], atol=1e-4)


def test_fashion_mnist_real_file(shared_data):
    s = sources.load_dataset("fashion_mnist", str(shared_data))
    assert s.train[0].shape == (60000, 28, 28, 1) and s.train[0].dtype == np.uint8
    assert len(s.val[0]) == 1000 and len(s.test[0]) == 9000 and s.num_classes == 10
    assert np.bincount(s.val[1]).tolist() == [100] * 10
    x = s.train[0].astype(np.float64) / 255
    np.testing.assert_allclose(s.mean, [x.mean()], atol=5e-4)
    np.testing.assert_allclose(s.std, [x.std()], atol=5e-4)


def test_cifar10_through_tfds_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=60):
        s = sources.load_dataset("cifar10", val_size=0)
    assert s.train[0].shape == (60, 32, 32, 3) and s.train[0].dtype == np.uint8
    assert s.num_classes == 10 and s.mean == sources.CIFAR10_MEAN and s.std == sources.CIFAR10_STD
    assert len(s.test[0]) == 60 and s.train[1].max() < 10


def test_bad_dataset_inputs(tmp_path):
    with pytest.raises(ValueError, match="cifar100"):
        sources.load_dataset("imagenette")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        sources.load_dataset("fashion_mnist", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        sources.load_dataset("cifar10", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError):
        sources.load_dataset(f"npz:{tmp_path / 'nothing.npz'}")
    with pytest.raises(ValueError, match="uint8"):
        sources.as_nhwc_uint8(np.zeros((2, 4, 4), np.float32))
    with pytest.raises(ValueError, match=r"'y' has 1 label\(s\) outside \[0, 3\).*: 5 \(1x\)"):
        sources.check_labels(np.array([0, 5]), 2, num_classes=3)
