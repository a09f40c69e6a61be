"""Tiny fixtures built once per test run: an 8x8 digits npz benchmark (the documented
layout), a saved TinyNet for it, and a folder of PNGs with one corrupt file."""

import os

import numpy as np
import pytest

from tests.bench.tiny_model import save_tiny


@pytest.fixture(scope="session")
def digits_world(tmp_path_factory):
    from PIL import Image
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("cli")
    d = load_digits()
    x = np.clip(d.images * 16, 0, 255).astype(np.uint8)
    y = d.target
    idx = np.flatnonzero(y < 5)
    ood = np.flatnonzero(y >= 5)
    rng = np.random.default_rng(0)
    rng.shuffle(idx)
    tr, va, te = idx[:300], idx[300:400], idx[400:600]
    npz = str(root / "digits.npz")
    np.savez(
        npz, x_train=x[tr], y_train=y[tr], x_val=x[va], y_val=y[va], x_test=x[te], y_test=y[te],
        x_ood_val=x[ood[:60]], x_near_digits59=x[ood[60:260]],
        x_far_noise=rng.integers(0, 256, (150, 8, 8), dtype=np.uint8), num_classes=5,
    )
    model = save_tiny(str(root / "model"), num_classes=5, input_shape=(8, 8, 1))
    folder = root / "pngs"
    os.makedirs(folder / "sub")
    for i in range(40):
        Image.fromarray(x[te[i]], "L").save(folder / ("sub" if i % 3 else "") / f"img{i:03d}.png")
    (folder / "sub" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return {"root": root, "npz": npz, "model": model, "pngs": str(folder), "x": x, "te": te}
