"""Issue 21: a distributed start whose peer never starts ends with one line after the stated
start-up timeout (JAX's own timeout aborts after ~5 minutes with a C++ stack trace)."""

import os
import socket
import subprocess
import sys
import time

import pytest

import jaxood
from jaxood import distributed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(jaxood.__file__)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("process_id", [0, 1])
def test_a_missing_peer_gives_one_line_after_the_startup_timeout(process_id, tmp_path):
    code = ("from jaxood import distributed; distributed.initialize("
            f"'127.0.0.1:{_free_port()}', 2, {process_id}, startup_timeout=3)")
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120, cwd=tmp_path, env={**os.environ, "PYTHONPATH": ROOT})
    assert time.perf_counter() - t0 < 60
    assert r.returncode == 1, r.stderr[-2000:]
    lines = [x for x in r.stderr.splitlines() if x.strip() and "WARNING" not in x
             and not x.startswith(("E0000", "I0000", "W0000"))]
    assert lines and lines[-1].startswith(f"jaxood: error: process {process_id} could not join "
                                          "the cluster of 2 processes")
    assert "start-up timeout of 3 s (--startup-timeout)" in lines[-1]
    assert "Traceback" not in r.stderr and "@     0x" not in r.stderr


def test_bad_process_ids_are_refused_before_joining():
    with pytest.raises(ValueError, match=r"--process-id 2 must be in \[0, --num-processes 2\)"):
        distributed.initialize("127.0.0.1:1", 2, 2)
    with pytest.raises(ValueError, match=r"`startup_timeout` must be > 0"):
        distributed.initialize("127.0.0.1:1", 2, 0, startup_timeout=float("nan"))
