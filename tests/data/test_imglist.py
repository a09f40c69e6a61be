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
