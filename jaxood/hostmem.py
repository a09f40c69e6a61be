"""Keep freed host memory in the process, so XLA:CPU's temporary buffers are not re-faulted.

XLA:CPU allocates a fresh temporary buffer for every execution of a compiled program and
frees it afterwards (ResNet-50's input gradient at batch 16: 0.9 GiB, DenseNet-BC-100's
training step at batch 128: 4.1 GiB). glibc hands such large blocks to the kernel with
``mmap`` / ``munmap``, so every execution page-faults and zero-fills its whole buffer again:
0.23 M faults and 0.5 s of kernel CPU per ResNet-50 input gradient, 1.07 M faults and up to
5.5 s per DenseNet-BC-100 step on the 2-core project VM (``experiments/profile_gaps.py``),
where PyTorch, whose blocks glibc recycles, has none.

:func:`reuse_host_memory` makes glibc keep large blocks in its main heap and never trim it,
and makes single-device CPU dispatch synchronous, so the buffers are allocated on the
calling thread (which uses the main heap; XLA's own threads would map theirs) and reused by
the next execution. The cost: the process keeps its peak host memory until it exits. The
``jaxood`` commands call it; library users opt in.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re

import jax

#: glibc ``mallopt`` parameters (``malloc.h``).
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def reuse_host_memory() -> str | None:
    """Configures the process as described above; returns ``None`` when done, else why not:
    not glibc, or more than one CPU device or process (synchronous dispatch is untested
    with collectives, so those processes keep the defaults). Call it before JAX runs
    anything: the dispatch setting is read when the CPU client starts."""
    flags = re.search(r"--xla_force_host_platform_device_count=(\d+)", os.environ.get("XLA_FLAGS", ""))
    devices = max(jax.config.jax_num_cpu_devices, int(flags.group(1)) if flags else 1)
    if jax.distributed.is_initialized() or devices > 1:
        return "only for one CPU device in one process"
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        return f"the C library ({name}) has no mallopt (not glibc)"
    # -1 is SIZE_MAX for glibc's size_t threshold: never give the heap's top back.
    if mallopt(_M_MMAP_MAX, 0) != 1 or mallopt(_M_TRIM_THRESHOLD, -1) != 1:
        return "mallopt refused the settings"
    jax.config.update("jax_cpu_enable_async_dispatch", False)
    return None
