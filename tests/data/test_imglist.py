"""Image lists: parsing, verification before compute, decoding vs torchvision."""

import hashlib
import os

import numpy as np
import pytest
from PIL import Image

from jaxood.data import imglist as il
from jaxood.types import PreprocessSpec


def _write_images(root, names, size=(12, 10), seed=0):
    rng = np.random.default_rng(seed)
    for n in names:
        path = os.path.join(root, n)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)


def test_parse_line_formats():
    assert il.parse_line("cifar10/test/airplane/0187.png 0") == (
        "cifar10/test/airplane/0187.png",
        0,
    )
    assert il.parse_line("tin/val/images/val_2.JPEG -1\n") == ("tin/val/images/val_2.JPEG", -1)
    assert il.parse_line("a/b.png {'label': 3, 'soft': [0.1]}") == ("a/b.png", 3)


@pytest.mark.parametrize("line", ["only_a_path.png", "a.png cat", "a.png {'x': 1}", "a.png {bad"])
def test_parse_line_errors_name_the_line(line):
    with pytest.raises(ValueError, match="list.txt:7"):
        il.parse_line(line, where="list.txt:7")


def test_read_imglist_and_fingerprint(tmp_path):
    p = tmp_path / "l.txt"
    p.write_text("a/1.png 0\n\nb/2.png -1\n")
    lst = il.read_imglist(p, tmp_path)
    assert lst.paths == ("a/1.png", "b/2.png")
    np.testing.assert_array_equal(lst.labels, [0, -1])
    p2 = tmp_path / "l2.txt"
    p2.write_text("a/1.png 0\nb/2.png 1\n")
    assert il.read_imglist(p2, tmp_path).fingerprint() != lst.fingerprint()


def test_read_imglist_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        il.read_imglist(tmp_path / "nope.txt", tmp_path)
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        il.read_imglist(tmp_path / "empty.txt", tmp_path)
    (tmp_path / "bad.txt").write_text("a.png 0\nb.png x\n")
    with pytest.raises(ValueError, match="bad.txt:2"):
        il.read_imglist(tmp_path / "bad.txt", tmp_path)


def test_verify_lists_missing_files_with_count_and_root(tmp_path):
    names = [f"d/{i}.png" for i in range(9)]
    _write_images(tmp_path, names[:2])
    (tmp_path / "l.txt").write_text("".join(f"{n} 0\n" for n in names))
    lst = il.read_imglist(tmp_path / "l.txt", tmp_path)
    with pytest.raises(ValueError) as e:
        il.verify(lst, name="toy")
    msg = str(e.value)
    assert "7 of 9" in msg and str(tmp_path) in msg and "d/2.png" in msg
    assert "and 2 more" in msg  # first 5 shown + count of the rest


def test_verify_count_and_checksums(tmp_path):
    names = ["x/a.png", "x/b.png"]
    _write_images(tmp_path, names)
    (tmp_path / "l.txt").write_text("x/a.png 1\nx/b.png 2\n")
    lst = il.read_imglist(tmp_path / "l.txt", tmp_path)
    il.verify(lst, expected_count=2)
    with pytest.raises(ValueError, match="expected 3"):
        il.verify(lst, expected_count=3)
    sums = {n: hashlib.sha256((tmp_path / n).read_bytes()).hexdigest() for n in names}
    manifest = tmp_path / "SHA256SUMS"
    manifest.write_text("".join(f"{h}  {n}\n" for n, h in sums.items()))
    il.verify(lst, checksums=il.read_checksums(manifest))
    with open(tmp_path / "x/b.png", "r+b") as f:  # corrupt one byte in the middle
        f.seek(40)
        f.write(b"\x00\x01")
    with pytest.raises(ValueError, match="x/b.png"):
        il.verify(lst, checksums=il.read_checksums(manifest))


def _pil_reference(path, spec):
    """torchvision's eval transform written out with PIL + NumPy: Resize(shorter side,
    int truncation of the long side, antialiased bilinear) -> CenterCrop -> /255 -> Normalize."""
    img = Image.open(path).convert("RGB")
    w, h = img.size
    s = spec.resize_size
    size = (s, int(s * h / w)) if w <= h else (int(s * w / h), s)
    img = img.resize(size, Image.BILINEAR)
    w, h = img.size
    c = spec.crop_size
    left, top = int(round((w - c) / 2.0)), int(round((h - c) / 2.0))
    x = np.asarray(img.crop((left, top, left + c, top + c)), np.float32) / 255.0
    return (x - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)


def test_source_batch_matches_pil_reference(tmp_path):
    names = [f"img/{i}.png" for i in range(5)]
    _write_images(tmp_path, names, size=(14, 11))
    (tmp_path / "l.txt").write_text("".join(f"{n} {i}\n" for i, n in enumerate(names)))
    spec = PreprocessSpec(10, 8, "bilinear", (0.4, 0.5, 0.6), (0.2, 0.25, 0.3), 3)
    src = il.ImageListSource(il.read_imglist(tmp_path / "l.txt", tmp_path), spec)
    got = src.batch(1, 4)
    ref = np.stack([_pil_reference(tmp_path / n, spec) for n in names[1:4]])
    assert got.shape == (3, 8, 8, 3)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    np.testing.assert_array_equal(src.labels, np.arange(5))


# ---- the read-ahead loader vs torchvision on JPEGs (sizes as in ImageNet, and large ones)


def _jpeg_list(root, sizes, seed=0):
    """Crops of the sklearn sample photos, resized to ``sizes`` and saved as JPEGs."""
    from sklearn.datasets import load_sample_images

    photos = [Image.fromarray(a) for a in load_sample_images().images]
    rng = np.random.default_rng(seed)
    lines = []
    for i, (w, h) in enumerate(sizes):
        img = photos[i % 2].crop((int(rng.integers(0, 200)), int(rng.integers(0, 100)), 620, 420))
        img = img.resize((w, h), Image.BICUBIC)
        if i % 5 == 4:
            img = img.convert("L")  # grayscale JPEGs exist in ImageNet
        rel = f"c{i % 3}/{i}.jpg"
        os.makedirs(root / f"c{i % 3}", exist_ok=True)
        img.save(root / rel, quality=int(rng.integers(70, 96)))
        lines.append(f"{rel} {i % 3}\n")
    (root / "list.txt").write_text("".join(lines))
    return il.read_imglist(root / "list.txt", root)


# 500x375 .. 1400x1050: the large ones are where PIL's draft() would decode at 1/2 or 1/4.
SIZES = [(500, 375), (375, 500), (500, 333), (1400, 1050), (1024, 768), (300, 220), (640, 427)]


def _torchvision_eval(path, spec):
    T = pytest.importorskip("torchvision.transforms")
    tf = T.Compose([
        T.Lambda(lambda im: im.convert("RGB")),
        T.Resize(spec.resize_size, interpolation=T.InterpolationMode.BILINEAR),
        T.CenterCrop(spec.crop_size),
        T.ToTensor(),
        T.Normalize(spec.mean, spec.std),
    ])  # fmt: skip
    with Image.open(path) as img:
        return tf(img).permute(1, 2, 0).numpy()


@pytest.mark.parametrize("workers", [0, 2])
def test_batches_bit_identical_to_torchvision_on_jpegs(tmp_path, workers):
    pytest.importorskip("torch")
    lst = _jpeg_list(tmp_path, SIZES)
    spec = PreprocessSpec(256, 224, "bilinear")
    src = il.ImageListSource(lst, spec, workers=workers)
    got = np.concatenate([src.batch(0, 3), src.batch(3, 6), src.batch(6, 7)])
    ref = np.stack([_torchvision_eval(lst.full_path(i), spec) for i in range(len(lst))])
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, ref)


def test_draft_would_not_be_bit_exact(tmp_path):
    """Why load_image decodes at full size: PIL's JPEG draft() (DCT-domain 1/2, 1/4 scaling)
    changes the pixels of images at least twice the target size."""
    lst = _jpeg_list(tmp_path, [(1400, 1050)])
    spec = PreprocessSpec(256, 224, "bilinear")
    from jaxood.data.transforms import preprocess

    with Image.open(lst.full_path(0)) as img:
        img.draft("RGB", (2 * 256, 2 * 256))
        assert img.size != (1400, 1050)  # the decoder really downscaled
        drafted = preprocess(img, spec)
    assert not np.array_equal(drafted, il.load_image(lst.full_path(0), spec))


def test_any_range_order_and_sharding_give_the_same_images(tmp_path):
    lst = _jpeg_list(tmp_path, SIZES)
    spec = PreprocessSpec(64, 56, "bilinear")
    whole = il.ImageListSource(lst, spec, workers=0).batch(0, len(lst))
    src = il.ImageListSource(lst, spec, workers=2, readahead=2)
    # Out of order (resume skipping shards), repeated, and overlapping ranges.
    for start, stop in [(4, 6), (0, 2), (2, 4), (6, 7), (1, 5), (1, 5), (0, 7)]:
        np.testing.assert_array_equal(src.batch(start, stop), whole[start:stop])
    # Two "processes" reading disjoint index ranges cover the list exactly once.
    shards = [il.ImageListSource(lst, spec, workers=1).batch(a, b) for a, b in [(0, 4), (4, 7)]]
    np.testing.assert_array_equal(np.concatenate(shards), whole)
    src.close()
    src.close()  # idempotent


def test_corrupt_image_names_the_file_and_source_recovers(tmp_path):
    lst = _jpeg_list(tmp_path, SIZES[:4])
    data = (tmp_path / lst.paths[2]).read_bytes()
    (tmp_path / lst.paths[2]).write_bytes(data[:200])  # truncated download
    spec = PreprocessSpec(64, 56, "bilinear")
    src = il.ImageListSource(lst, spec, workers=2)
    with pytest.raises(ValueError, match=lst.paths[2].replace(".", r"\.")):
        src.batch(0, 4)
    np.testing.assert_array_equal(src.batch(0, 2), il.ImageListSource(lst, spec).batch(0, 2))
    with pytest.raises(ValueError, match="outside"):
        src.batch(3, 5)
    with pytest.raises(ValueError, match="workers"):
        il.ImageListSource(lst, spec, workers=-1)
