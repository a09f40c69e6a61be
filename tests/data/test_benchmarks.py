"""Benchmark definitions (spec §4 counts) and opening/verifying data before compute."""

import os

import numpy as np
import pytest
from PIL import Image

from jaxood.data import benchmarks
from jaxood.types import PreprocessSpec


def test_names_and_unknown_lists_valid():
    for n in (
        "cifar10",
        "cifar100",
        "imagenet200",
        "imagenet",
        "imagenet-adascale",
        "fashion-openset",
        "demo",
    ):
        assert n in benchmarks.names()
    with pytest.raises(ValueError, match="valid names: .*cifar10"):
        benchmarks.get("cifar11")


def _counts(refs):
    return {r.name: r.count for r in refs}


def test_cifar10_matches_openood_v15():
    b = benchmarks.get("cifar10")
    assert b.num_classes == 10
    assert (b.id_train.count, b.id_val.count, b.id_test.count) == (50_000, 1_000, 9_000)
    assert b.ood_val.imglist == "benchmark_imglist/cifar10/val_tin.txt" and b.ood_val.count == 1_000
    assert _counts(b.near) == {"cifar100": 9_000, "tin": 7_793}
    assert _counts(b.far) == {
        "mnist": 70_000,
        "svhn": 26_032,
        "texture": 5_640,
        "places365": 35_195,
    }
    assert [r.name for r in b.csid] == ["cifar10c"]
    assert b.preprocess.mean == (0.4914, 0.4822, 0.4465) and b.preprocess.crop_size == 32


def test_cifar100_imagenet_sets():
    b = benchmarks.get("cifar100")
    assert b.ood_val.count == 972 and _counts(b.near) == {"cifar10": 10_000, "tin": 6_526}
    assert _counts(b.far)["places365"] == 33_773 and b.csid == ()
    i2 = benchmarks.get("imagenet200")
    assert (i2.id_val.count, i2.id_test.count, i2.ood_val.count) == (1_000, 9_000, 1_763)
    assert _counts(i2.near) == {"ssb_hard": 49_000, "ninco": 5_879}
    assert _counts(i2.far) == {"inaturalist": 10_000, "textures": 5_160, "openimage_o": 15_869}
    assert [r.name for r in i2.csid] == ["imagenet_v2", "imagenet_c", "imagenet_r"]
    textures = [r for r in i2.far if r.name == "textures"][0]
    assert textures.data_dir == "images_classic/"  # Textures live with the classic images
    i1 = benchmarks.get("imagenet")
    assert (i1.id_val.count, i1.id_test.count) == (5_000, 45_000)
    assert [r.name for r in i1.csid] == ["imagenet_v2", "imagenet_c", "imagenet_r", "imagenet_es"]
    assert [r.no_resize for r in i1.csid] == [False, True, False, False]  # ImageNet-C: no resize
    assert i1.preprocess.resize_size == 256 and i1.preprocess.crop_size == 224


def test_adascale_variant_adds_imagenet_o_and_places():
    base, paper = benchmarks.get("imagenet"), benchmarks.get("imagenet-adascale")
    assert [r.name for r in paper.near] == [*[r.name for r in base.near], "imagenet_o"]
    assert set(r.name for r in paper.far) == {*[r.name for r in base.far], "places"}
    assert _counts(paper.near)["imagenet_o"] == 2_000


def _toy_layout(root, n=3):
    """An OpenOOD-style root for cifar10 with n images per list."""
    b = benchmarks.get("cifar10")
    refs = [b.id_train, b.id_val, b.id_test, b.ood_val, *b.near, *b.far]
    rng = np.random.default_rng(0)
    for r in refs:
        os.makedirs(os.path.dirname(os.path.join(root, r.imglist)), exist_ok=True)
        lines = []
        for i in range(n):
            rel = f"{r.name}/{os.path.basename(r.imglist)[:-4]}/{i}.png"
            path = os.path.join(root, r.data_dir, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
            lines.append(f"{rel} {i % 10 if r in (b.id_train, b.id_val, b.id_test) else -1}\n")
        with open(os.path.join(root, r.imglist), "w") as f:
            f.writelines(lines)
    return b


def test_open_benchmark_imglist_layout(tmp_path):
    _toy_layout(tmp_path)
    opened = benchmarks.open_benchmark("cifar10", tmp_path, None, need_train=False)
    assert opened.id_train is None
    assert list(opened.near) == ["cifar100", "tin"]
    assert list(opened.far) == ["mnist", "svhn", "texture", "places365"]
    x = opened.id_test.batch(0, 2)
    assert x.shape == (2, 32, 32, 3) and x.dtype == np.float32
    with pytest.raises(ValueError, match="val_cifar10.txt has 3 images, expected 1000"):
        benchmarks.open_benchmark("cifar10", tmp_path, None, need_train=False, strict_counts=True)


def test_open_benchmark_missing_lists_and_images(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        benchmarks.open_benchmark("cifar10", tmp_path / "nope", None)
    with pytest.raises(FileNotFoundError, match=r"(?s)image list\(s\) missing.*val_cifar10.txt"):
        benchmarks.open_benchmark("cifar10", tmp_path, None, need_train=False)
    _toy_layout(tmp_path)
    os.unlink(tmp_path / "images_classic" / "svhn" / "test_svhn" / "1.png")
    with pytest.raises(ValueError, match=r"svhn: 1 of 3 images .* missing under the expected root"):
        benchmarks.open_benchmark("cifar10", tmp_path, None, need_train=False)


def test_array_source_preprocessing_matches_numpy():
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, (5, 6, 6), dtype=np.uint8)
    spec = PreprocessSpec(None, None, "bilinear", (0.1, 0.2, 0.3), (0.5, 0.4, 0.2), 3)
    src = benchmarks.ArraySource(imgs, np.zeros(5, int), spec, "t")
    got = src.batch(1, 4)
    ref = (imgs[1:4, :, :, None].repeat(3, -1) / 255.0 - np.array(spec.mean)) / np.array(spec.std)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="uint8"):
        benchmarks.ArraySource(imgs.astype(np.float32), np.zeros(5), spec)
    with pytest.raises(ValueError, match="5 images but 4 labels"):
        benchmarks.ArraySource(imgs, np.zeros(4), spec)


def test_cifar10_tfds_benchmark_with_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    b = benchmarks.get("cifar10-tfds")
    with tfds.testing.mock_data(num_examples=40):
        opened = benchmarks.open_benchmark(b, None, None)
    assert opened.id_train.images.shape == (40, 32, 32, 3)
    assert len(opened.id_val) + len(opened.id_test) == 40
    assert np.all(opened.near["cifar100"].labels == -1) and np.all(opened.far["svhn"].labels == -1)
    x = opened.id_val.batch(0, 2)
    assert x.shape == (2, 32, 32, 3) and abs(float(x.mean())) < 3  # normalised


def test_npz_benchmark(tmp_path):
    rng = np.random.default_rng(0)
    img = lambda n: rng.integers(0, 256, (n, 5, 5), dtype=np.uint8)  # noqa: E731
    path = tmp_path / "b.npz"
    np.savez(
        path, x_train=img(8), y_train=np.arange(8) % 4, x_val=img(4), y_val=np.arange(4),
        x_test=img(6), y_test=np.arange(6) % 4, x_ood_val=img(3), x_near_a=img(2), x_far_z=img(5),
    )  # fmt: skip
    b = benchmarks.get(f"npz:{path}")
    assert b.num_classes == 4 and b.ood_names == {"near": ["a"], "far": ["z"]}
    assert b.name == "npz-b"  # usable as a results folder
    spec = PreprocessSpec(None, None, "bilinear", (0.5,), (0.5,), 1)
    opened = benchmarks.open_benchmark(b, None, spec)
    assert len(opened.far["z"]) == 5 and np.all(opened.near["a"].labels == -1)
    np.testing.assert_allclose(
        opened.id_test.batch(0, 1)[0, ..., 0],
        (np.load(path)["x_test"][0] / 255 - 0.5) / 0.5,
        atol=1e-6,
    )
    np.savez(tmp_path / "bad.npz", x_train=img(2))
    with pytest.raises(ValueError, match="lacks"):
        benchmarks.get(f"npz:{tmp_path / 'bad.npz'}")
    with pytest.raises(FileNotFoundError):
        benchmarks.get(f"npz:{tmp_path / 'none.npz'}")
