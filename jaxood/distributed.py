"""Multi-host runs on JAX's own distributed runtime (``jaxood train|bench --distributed``).

* :func:`initialize`: ``jax.distributed.initialize`` (SLURM/MPI/TPU/Kubernetes are
  auto-detected; plain machines pass the coordinator address, process count and index), with
  gloo collectives on CPU, within a stated start-up timeout: a peer that never starts gives
  one line and exit status 1 (JAX's own timeout aborts the process with a C++ trace).
* :class:`Processes`: this process's index and the count, and a named :meth:`barrier`.
* :func:`exit_promptly_when_a_peer_dies`: a dead peer makes the survivors fail in the next
  collective ("Connection reset by peer"), after which JAX's shutdown barrier waits ~60 s and
  aborts with a C++ trace. Instead: one line saying a process was lost and the exact command
  to resume, and an immediate exit with status 1.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shlex
import sys
import threading
import time
from collections.abc import Iterator

import jax

#: Messages of the errors a lost peer causes in collectives (gloo and the coordination service).
_PEER_LOST = ("Connection reset by peer", "Connection closed by peer", "Gloo", "heartbeat",
              "Broken pipe", "UNAVAILABLE", "DEADLINE_EXCEEDED")


#: Seconds every process has to join the cluster (``--startup-timeout``).
STARTUP_TIMEOUT = 300.0


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    startup_timeout: float = STARTUP_TIMEOUT,
) -> None:
    """Joins the cluster; ``None`` arguments let JAX auto-detect them (SLURM, MPI, ...).
    Idempotent: a process already in a cluster stays in it. When the cluster is not complete
    within ``startup_timeout`` seconds, prints one line naming the timeout and what to check,
    and exits with status 1."""
    if jax.distributed.is_initialized():
        return
    if not startup_timeout > 0:  # False for NaN too
        raise ValueError(f"`startup_timeout` must be > 0 seconds, got {startup_timeout}")
    if num_processes is not None and process_id is not None and not 0 <= process_id < num_processes:
        raise ValueError(f"--process-id {process_id} must be in [0, --num-processes "
                         f"{num_processes})")
    # CPU processes need a cross-process collectives backend; GPU/TPU ignore this setting.
    # (The backend must not be queried before initialize().)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    joined = threading.Event()
    threading.Thread(target=_startup_watchdog, daemon=True, args=(
        joined, startup_timeout, coordinator_address, num_processes, process_id)).start()
    try:
        jax.distributed.initialize(
            coordinator_address=coordinator_address,
            num_processes=num_processes,
            process_id=process_id,
            # JAX's own timeout aborts in C++; the watchdog above fires first.
            initialization_timeout=int(startup_timeout) + 60,
        )
    finally:
        joined.set()


def _startup_watchdog(joined, timeout, address, count, index) -> None:
    if joined.wait(timeout):
        return
    print(f"jaxood: error: process {index if index is not None else '?'} could not join the "
          f"cluster of {count if count is not None else '?'} processes at "
          f"{address or 'the auto-detected coordinator'} within the start-up timeout of "
          f"{timeout:g} s (--startup-timeout): start every process with the same "
          "--coordinator-address and --num-processes (process 0 first reachable), or raise "
          "--startup-timeout", file=sys.stderr, flush=True)
    os._exit(1)


@dataclasses.dataclass(frozen=True)
class Processes:
    """Which process this is among how many (one process: ``Processes(0, 1)``)."""

    index: int = 0
    count: int = 1

    @classmethod
    def current(cls) -> Processes:
        return cls(jax.process_index(), jax.process_count())

    @property
    def is_main(self) -> bool:
        return self.index == 0

    def mine(self, indices: list[int]) -> list[int]:
        """The indices this process handles: those with ``i % count == index``. (By value, not
        by position: processes may see different lists of what is still to do.)"""
        return [i for i in indices if i % self.count == self.index]

    def done_marker(self, directory: str) -> DoneMarker:
        """A marker file in ``directory`` (shared storage) through which process 0 tells the
        others it has finished (a collective: every process must call it)."""
        import numpy as np

        token = int(np.random.default_rng().integers(1 << 62))
        if self.count > 1:
            from jax.experimental import multihost_utils

            token = int(multihost_utils.broadcast_one_to_all(np.int64(token)))
        return DoneMarker(os.path.join(directory, ".multihost", f"{token:x}.done"))

    def barrier(self, name: str) -> None:
        """Waits until every process reached the barrier ``name`` (no-op for one process)."""
        if self.count > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(name)


@dataclasses.dataclass(frozen=True)
class DoneMarker:
    """Process 0 writes it when its part of a multi-host run has ended (well or not); the
    other processes wait for it, staying in the cluster (their exit would end it)."""

    path: str

    def wait(self, poll_s: float = 0.5) -> None:
        while not os.path.exists(self.path):
            time.sleep(poll_s)

    @contextlib.contextmanager
    def signal_when_finished(self) -> Iterator[None]:
        try:
            yield
        finally:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            with open(self.path, "w") as f:
                f.write("done\n")


def _is_peer_loss(e: BaseException) -> bool:
    text = f"{type(e).__name__}: {e}"
    return jax.process_count() > 1 and any(s in text for s in _PEER_LOST)


def resume_command(argv: list[str] | None = None, resume_flag: str | None = None) -> str:
    """The command line of this process, with ``resume_flag`` added when missing."""
    argv = list(sys.argv if argv is None else argv)
    if resume_flag and resume_flag not in argv:
        argv.append(resume_flag)
    return " ".join(shlex.quote(a) for a in argv)


@contextlib.contextmanager
def exit_promptly_when_a_peer_dies(resume_flag: str | None = None) -> Iterator[None]:
    """See the module docstring. Other errors pass through unchanged."""
    try:
        yield
    except Exception as e:
        if not _is_peer_loss(e):
            raise
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        print(
            f"jaxood: process {jax.process_index()} of {jax.process_count()}: a peer process "
            f"was lost ({first}); finished work is kept. Resume every process with: "
            f"{resume_command(resume_flag=resume_flag)}",
            file=sys.stderr,
            flush=True,
        )
        sys.stderr.flush()
        os._exit(1)  # skip JAX's shutdown barrier, which would wait for the dead peer
