"""jaxood.hostmem: after reuse_host_memory(), a program's temporary buffer is not page-faulted
again on the next execution (checked in a subprocess: the settings are process-wide)."""

from __future__ import annotations

import os
import subprocess
import sys

CHILD = r"""
import resource, sys
import jax, jax.numpy as jnp
from jaxood.hostmem import reuse_host_memory
if sys.argv[1] == "reuse":
    reason = reuse_host_memory()
    assert reason is None, reason
# ~190 MiB of temporaries: a chain whose intermediates cannot be fused away
f = jax.jit(lambda x: jnp.sort(jnp.sin(x) @ x, axis=0).sum(0) + jnp.sort(jnp.cos(x), axis=1).sum(1))
x = jnp.ones((4096, 4096)) / 4096
temp = f.lower(x).compile().memory_analysis().temp_size_in_bytes
f(x).block_until_ready(); f(x).block_until_ready()
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
f(x).block_until_ready()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0
print(temp // 4096, faults)
"""


def run_child(mode: str, devices: int = 1) -> subprocess.CompletedProcess:
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    return subprocess.run([sys.executable, "-c", CHILD, mode], env=env, capture_output=True,
                          text=True, timeout=300)


def test_reused_memory_is_not_faulted_again():
    default, reused = run_child("default"), run_child("reuse")
    assert default.returncode == 0 and reused.returncode == 0, default.stderr + reused.stderr
    pages, faults_default = map(int, default.stdout.split())
    _, faults_reused = map(int, reused.stdout.split())
    assert pages > 40_000  # the test means something: a large temporary buffer (> 160 MiB)
    assert faults_default > pages // 2  # glibc maps and faults it afresh every execution
    # the buffer itself is reused; small per-call scratch of XLA's own threads still faults
    assert faults_reused < pages // 4


def test_refuses_with_a_reason_on_several_devices():
    code = "import jax; from jaxood.hostmem import reuse_host_memory; print(reuse_host_memory())"
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "one CPU device" in out.stdout
