"""Shared pytest configuration.

Paths to the real data in ../shared/data are resolved here so tests can skip with a clear
message when the folder is absent (e.g. a user running the suite outside the project tree).
"""

import os
import pathlib

import pytest

import jaxood  # noqa: F401 - sets XLA_FLAGS (see jaxood/__init__.py) before JAX starts

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = pathlib.Path(os.environ.get("JAXOOD_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    """The ../shared/data folder (Fashion-MNIST, MNIST); skips when it is not there."""
    if not (SHARED_DATA / "fashion_mnist.npz").exists():
        pytest.skip(f"real data not found at {SHARED_DATA} (set JAXOOD_SHARED_DATA)")
    return SHARED_DATA
