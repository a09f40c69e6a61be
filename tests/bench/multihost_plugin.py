"""Imported with ``--import tests.bench.multihost_plugin`` by the multi-host bench test.

Registers the test architecture, and records/limits shard writes through two env vars:
``JAXOOD_TEST_SHARD_LOG`` (a file; one line per shard written by this process) and
``JAXOOD_TEST_KILL_AFTER`` (SIGKILL this process after writing that many shards).
"""

import os
import signal

import tests.bench.tiny_model  # noqa: F401 - registers the 'bench_tiny' architecture
from jaxood.features import cache

_write = cache.CacheEntry.write_shard
_written = [0]


def _logged_write(self, i, arrays):
    _write(self, i, arrays)
    log = os.environ.get("JAXOOD_TEST_SHARD_LOG")
    if log:
        with open(log, "a") as f:
            f.write(f"{os.path.basename(self.dir)}/{i}\n")
    _written[0] += 1
    limit = os.environ.get("JAXOOD_TEST_KILL_AFTER")
    if limit and _written[0] >= int(limit):
        os.kill(os.getpid(), signal.SIGKILL)


cache.CacheEntry.write_shard = _logged_write
