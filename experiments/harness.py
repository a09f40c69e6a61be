"""The one timing harness of the side-by-side scripts in ``experiments/`` (issue 18, item 1).

A figure only holds if the machine was quiet while it was taken. Every script builds a
:class:`Run` per figure (one model, one setting) and times its contenders through it:

* before timing, it waits (at most ``--wait-quiet`` seconds) until the 1-minute load average
  is below the benchmark's own threads + 0.5, and records the CPU model, its ISA (AVX2 /
  AVX-512 / AVX512_BF16 / AMX from ``/proc/cpuinfo``) and the XLA / torch thread counts;
* :meth:`Run.alternate` times the contenders in alternating rounds (the order swaps every
  round: jaxood, reference | reference, jaxood | ...), after one warm-up call each (compile
  excluded), blocking on JAX results; before every round it times one in-process float32
  sgemm per framework (XLA: a jitted matmul; torch: ``torch.mm``; NumPy: ``@``) of a size
  that takes about 0.2 s, so the peak each framework could reach is known round by round;
* :meth:`Run.record` measures the sgemm once more and the load average after, and labels
  the figure ``"loaded": true`` when the load average before or after exceeded threads + 0.5
  or any framework's sgemm drifted more than 15 % between rounds (max vs min). A loaded
  figure prints a warning and is never quoted.

:func:`save` merges records into a results JSON by key (other keys are kept), atomically.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

import jax
import numpy as np

from jaxood import hostmem

ROOT = pathlib.Path(__file__).resolve().parents[1]
#: "default" (XLA:CPU maps a fresh temporary buffer per execution) or "reused"
#: (``--reuse-host-memory``: :func:`jaxood.hostmem.reuse_host_memory`, as the jaxood command).
HOST_MEMORY = "default"
MAX_DRIFT = 0.15  # sgemm (max - min) / max above this: the machine changed during the run
LOAD_MARGIN = 0.5  # load average allowed above the benchmark's own threads
SGEMM_SECONDS = 0.2  # target duration of one sgemm measurement
#: /proc/cpuinfo flags -> the ISA names recorded with every figure.
ISA_FLAGS = {
    "AVX2": ("avx2",),
    "AVX-512": ("avx512f",),
    "AVX512_BF16": ("avx512_bf16",),
    "AMX": ("amx_tile",),
    "AMX_BF16": ("amx_bf16",),
}


# ------------------------------------------------------------------------ the machine


def parse_cpuinfo(text: str) -> dict:
    """``{"model_name", "isa": {name: bool}, "simd_flags": [...]}`` of a ``/proc/cpuinfo``
    text (the first processor's entry; all cores of one machine have the same model)."""
    model, flags = None, set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    isa = {name: all(f in flags for f in need) for name, need in ISA_FLAGS.items()}
    simd = sorted(f for f in flags if f.startswith(("avx", "amx", "fma", "sse4")))
    return {"model_name": model, "isa": isa, "simd_flags": simd}


def machine_info() -> dict:
    """CPU model, ISA, core counts and the software versions of this process."""
    try:
        cpu = parse_cpuinfo(pathlib.Path("/proc/cpuinfo").read_text())
    except OSError:  # not Linux: the model name from platform, ISA unknown
        cpu = {"model_name": platform.processor() or None, "isa": {}, "simd_flags": []}
    return {
        **cpu,
        "machine": platform.machine(),
        "logical_cpus": os.cpu_count(),
        "cpu_affinity": sorted(os.sched_getaffinity(0)),
        "platform": platform.platform(),
    }


def thread_counts(frameworks: Iterable[str]) -> dict:
    """Threads each framework computes with. XLA's CPU client sizes its pool from the CPUs
    this process may run on; torch reports its own intra-op setting."""
    out = {}
    for fw in frameworks:
        if fw == "torch":
            import torch  # deferred: scripts without a torch contender need not load it

            out[fw] = torch.get_num_threads()
        else:
            out[fw] = len(os.sched_getaffinity(0))
    return out


def versions() -> dict:
    out = {"python": platform.python_version(), "jax": jax.__version__, "numpy": np.__version__}
    if "torch" in sys.modules:
        out["torch"] = sys.modules["torch"].__version__
    return out


def git_commit() -> str | None:
    cmd = ["git", "-C", str(ROOT), "describe", "--always", "--dirty", "--abbrev=40"]
    try:
        return subprocess.check_output(cmd, text=True, stderr=subprocess.DEVNULL).strip()
    except (OSError, subprocess.CalledProcessError):
        return None


# ------------------------------------------------------------------ quiet / loaded


def load_limit(threads: int) -> float:
    """The 1-minute load average a quiet machine stays under while this benchmark runs."""
    return threads + LOAD_MARGIN


def wait_for_quiet(
    limit: float,
    max_wait_s: float,
    *,
    poll_s: float = 5.0,
    getload: Callable[[], Sequence[float]] = os.getloadavg,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[bool, float]:
    """Waits until the 1-min load average is below ``limit``, at most ``max_wait_s``.

    Returns ``(quiet, seconds waited)``."""
    start = clock()
    announced = False
    while True:
        load = getload()[0]
        if load < limit:
            return True, clock() - start
        waited = clock() - start
        if waited >= max_wait_s:
            return False, waited
        if not announced:
            print(f"[harness] load average {load:.2f} >= {limit:.1f}: waiting up to "
                  f"{max_wait_s:.0f} s for a quiet machine", file=sys.stderr, flush=True)
            announced = True
        sleep(min(poll_s, max_wait_s - waited))


def drift(values: Sequence[float]) -> float:
    """Relative spread ``(max - min) / max`` of one framework's sgemm rates (0 for < 2)."""
    if len(values) < 2 or max(values) <= 0:
        return 0.0
    return (max(values) - min(values)) / max(values)


def loaded_reasons(
    load_before: float,
    load_after: float,
    threads: int,
    sgemm_gflops: Mapping[str, Sequence[float]],
    max_drift: float = MAX_DRIFT,
) -> list[str]:
    """Why a run must not be quoted (empty = quiet): 1-min load average before or after
    above ``threads + 0.5``, or a framework's sgemm drifting more than ``max_drift``."""
    limit = load_limit(threads)
    reasons = [
        f"1-min load average {when} {load:.2f} > {limit:.1f} ({threads} benchmark threads + "
        f"{LOAD_MARGIN})"
        for when, load in (("before", load_before), ("after", load_after))
        if load > limit
    ]
    for fw, rates in sgemm_gflops.items():
        d = drift(rates)
        if d > max_drift:
            reasons.append(
                f"{fw} sgemm drifted {100 * d:.0f} % between rounds "
                f"({min(rates):.1f}-{max(rates):.1f} GFLOP/s; limit {100 * max_drift:.0f} %)"
            )
    return reasons


# --------------------------------------------------------------------------- sgemm


def sgemm_size(gflops: float, seconds: float = SGEMM_SECONDS) -> int:
    """Square size ``n`` (a multiple of 128 in [256, 4096]) of a float32 matmul that takes
    about ``seconds`` at ``gflops`` (``2 n^3`` FLOPs)."""
    n = (seconds * gflops * 1e9 / 2) ** (1 / 3)
    return int(min(4096, max(256, round(n / 128) * 128)))


def _sgemm_fn(fw: str, n: int) -> Callable[[], object]:
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    if fw == "xla":
        f, x = jax.jit(lambda a: a @ a), jax.device_put(a)
        return lambda: f(x).block_until_ready()
    if fw == "torch":
        import torch  # deferred: only scripts with a torch contender measure it

        t = torch.from_numpy(a)
        return lambda: torch.mm(t, t)
    if fw == "numpy":
        return lambda: a @ a
    raise ValueError(f"unknown framework {fw!r}; use xla, torch or numpy")


class Sgemm:
    """One float32 ``n x n`` matmul per framework, timed on request (GFLOP/s kept per round).

    ``n = 0`` sizes it to take about 0.2 s with XLA on this machine now."""

    def __init__(self, frameworks: Sequence[str], n: int = 0):
        if not n:
            probe = _sgemm_fn("xla", 1024)
            probe()  # compile
            t0 = time.perf_counter()
            probe()
            n = sgemm_size(2 * 1024**3 / (time.perf_counter() - t0) / 1e9)
        self.n = n
        self.fns = {fw: _sgemm_fn(fw, n) for fw in frameworks}
        for fn in self.fns.values():
            fn()  # compile / warm up
        self.gflops: dict[str, list[float]] = {fw: [] for fw in frameworks}

    def measure(self, repeats: int = 3) -> None:
        """Best of ``repeats`` calls per framework. With one 0.2 s call, runs at load average
        1.6-2.0 with nothing else running showed 16-51 % drift between rounds (2026-12-07,
        Xeon with AMX), so single calls measure the VM's jitter, not the machine's load."""
        for fw, fn in self.fns.items():
            best = float("inf")
            for _ in range(repeats):
                t0 = time.perf_counter()
                fn()
                best = min(best, time.perf_counter() - t0)
            self.gflops[fw].append(2 * self.n**3 / best / 1e9)

    def summary(self) -> dict:
        return {
            "n": self.n,
            "gflops_rounds": {fw: [round(v, 1) for v in g] for fw, g in self.gflops.items()},
            "gflops_median": {fw: round(statistics.median(g), 1) for fw, g in self.gflops.items()},
            "drift": {fw: round(drift(g), 3) for fw, g in self.gflops.items()},
        }


# ------------------------------------------------------------------------ rounds


def round_order(names: Sequence[str], r: int) -> list[str]:
    """Contender order in round ``r``: as given in even rounds, reversed in odd ones, so
    neither side always runs right after the sgemm or right after the other."""
    return list(names) if r % 2 == 0 else list(reversed(names))


def medians(times: Mapping[str, Sequence[float]]) -> dict[str, float]:
    return {name: statistics.median(t) for name, t in times.items()}


def compare(times: Mapping[str, Sequence[float]], work: float, unit: str) -> dict:
    """Median ``work / second`` of each contender (``{name}_{unit}_per_s``), their rounds,
    and the ratio of the first contender over the second (higher = the first is faster)."""
    names = list(times)
    med = medians(times)
    out = {f"{n}_{unit}_per_s": round(work / med[n], 3) for n in names}
    out.update({f"{n}_s_rounds": [round(t, 4) for t in times[n]] for n in names})
    if len(names) >= 2:
        a, b = names[:2]
        out[f"ratio_{a}_over_{b}"] = round(med[b] / med[a], 3)
        out[f"paired_ratio_rounds_{a}_over_{b}"] = [
            round(tb / ta, 3) for ta, tb in zip(times[a], times[b])
        ]
    return out


class Run:
    """One figure: waits for a quiet machine, times contenders in alternating rounds with
    an sgemm before each, and returns the record with the loaded verdict."""

    def __init__(
        self,
        frameworks: Sequence[str] = ("xla", "torch"),
        *,
        wait_s: float = 600.0,
        sgemm_n: int = 0,
        extra_threads: int = 0,
        max_drift: float = MAX_DRIFT,
    ):
        """``extra_threads``: processes the benchmark starts besides its own (e.g. data
        loader workers), added to the threads the load average may reach."""
        self.thread_counts = thread_counts(frameworks)
        self.threads = max(self.thread_counts.values()) + extra_threads
        self.max_drift = max_drift
        self.quiet_before, self.waited_s = wait_for_quiet(load_limit(self.threads), wait_s)
        self.load_before = list(os.getloadavg())
        self.sgemm = Sgemm(frameworks, sgemm_n)
        self.round_loads: list[float] = []

    @classmethod
    def from_args(cls, args: argparse.Namespace, frameworks=("xla", "torch"), **kw) -> Run:
        if getattr(args, "reuse_host_memory", False) and HOST_MEMORY != "reused":
            raise SystemExit("--reuse-host-memory: this script does not apply it (only the "
                             "scripts that measure through harness.collect do)")
        return cls(frameworks, wait_s=args.wait_quiet, sgemm_n=args.sgemm_n, **kw)

    def alternate(
        self, contenders: Mapping[str, Callable[[], object]], rounds: int, *, warmup: int = 1,
        label: str = "",
    ) -> dict[str, list[float]]:
        """Seconds per call of each contender over ``rounds`` alternating rounds (after
        ``warmup`` untimed calls each). Results are blocked on (``jax.block_until_ready``)."""
        for fn in contenders.values():
            for _ in range(warmup):
                jax.block_until_ready(fn())
        times: dict[str, list[float]] = {name: [] for name in contenders}
        for r in range(rounds):
            self.checkpoint()
            for name in round_order(list(contenders), r):
                t0 = time.perf_counter()
                jax.block_until_ready(contenders[name]())
                times[name].append(time.perf_counter() - t0)
            line = ", ".join(f"{n} {times[n][-1]:.4f} s" for n in contenders)
            print(f"[harness] {label} round {r}: {line}", file=sys.stderr, flush=True)
        return times

    def checkpoint(self) -> None:
        """What precedes every round: the sgemm of each framework and the load average.
        Call it directly before work timed outside :meth:`alternate` (e.g. a subprocess)."""
        self.sgemm.measure()
        self.round_loads.append(os.getloadavg()[0])

    def sgemm_median(self, fw: str) -> float:
        return statistics.median(self.sgemm.gflops[fw])

    def record(self, fields: Mapping) -> dict:
        """``fields`` plus the machine, threads, load averages, sgemm rounds and the verdict."""
        self.sgemm.measure()  # the last sample: drift is measured even with one round
        load_after = list(os.getloadavg())
        reasons = loaded_reasons(
            self.load_before[0], load_after[0], self.threads, self.sgemm.gflops, self.max_drift
        )
        if not self.quiet_before:
            reasons.insert(0, f"no quiet machine within {self.waited_s:.0f} s of waiting")
        if reasons:
            print(f"[harness] WARNING: LOADED RUN, do not quote these figures: "
                  f"{'; '.join(reasons)}", file=sys.stderr, flush=True)
        return {
            **fields,
            "loaded": bool(reasons),
            "loaded_reasons": reasons,
            "loadavg_before": self.load_before,
            "loadavg_after": load_after,
            "loadavg_1min_rounds": [round(v, 2) for v in self.round_loads],
            "waited_for_quiet_s": round(self.waited_s, 1),
            "threads": {**self.thread_counts, "benchmark": self.threads,
                        "load_limit": load_limit(self.threads)},
            "sgemm": self.sgemm.summary(),
            "machine": machine_info(),
            "versions": versions(),
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "host_memory": HOST_MEMORY,
            "command": " ".join(["python", *sys.argv]),
            "jaxood_commit": git_commit(),
            "recorded_at": datetime.datetime.now(datetime.UTC).isoformat(
                timespec="seconds"),
        }


# ------------------------------------------------------------------------- results


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The harness's own flags (the same in every script)."""
    g = p.add_argument_group("timing harness")
    g.add_argument("--wait-quiet", type=float, default=600.0, metavar="SECONDS",
                   help="wait at most this long for a quiet machine before each figure")
    g.add_argument("--sgemm-n", type=int, default=0,
                   help="size of the per-round sgemm (0: sized to take ~0.2 s)")
    g.add_argument("--require-quiet", action="store_true",
                   help="exit with status 3 when any figure is loaded (results still saved)")
    g.add_argument("--reuse-host-memory", action="store_true",
                   help="configure the process as the jaxood command does "
                   "(jaxood.hostmem.reuse_host_memory; it applies to every framework in it)")


def apply_process_options(args: argparse.Namespace) -> None:
    """``--reuse-host-memory``, before JAX runs anything (it configures the CPU client)."""
    global HOST_MEMORY
    if getattr(args, "reuse_host_memory", False):
        reason = hostmem.reuse_host_memory()
        if reason is not None:
            raise SystemExit(f"--reuse-host-memory: {reason}")
        HOST_MEMORY = "reused"


def load_results(path: str | os.PathLike) -> dict:
    """The results JSON at ``path`` as a dict (``{}`` when absent); a corrupt file stops."""
    path = pathlib.Path(path)
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SystemExit(f"{path}: not valid JSON ({e}); move it aside or pass another --out") from None
    if not isinstance(data, dict):
        raise SystemExit(f"{path}: holds a {type(data).__name__}, not a JSON object of results; "
                         "move it aside or pass another --out") from None
    return data


def save(path: str | os.PathLike, records: Mapping[str, dict]) -> dict:
    """Merges ``records`` into the results JSON at ``path`` by key (other keys are kept),
    written atomically. Returns the merged content."""
    path = pathlib.Path(path)
    data = load_results(path)
    data.update(records)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
    return data


def finish(args: argparse.Namespace, path: str | os.PathLike, records: Mapping[str, dict]) -> int:
    """Saves ``records`` (merged by key) and returns the script's exit status: 1 when
    nothing was recorded, 3 with ``--require-quiet`` when a figure is loaded, else 0."""
    if not records:
        print("[harness] nothing was recorded", file=sys.stderr)
        return 1
    save(path, records)
    loaded = [k for k, r in records.items() if r.get("loaded")]
    print(f"[harness] wrote {', '.join(records)} to {path}", file=sys.stderr)
    if loaded:
        print(f"[harness] WARNING: loaded (not quotable): {', '.join(loaded)}", file=sys.stderr)
        return 3 if args.require_quiet else 0
    return 0


def collect(
    args: argparse.Namespace,
    path: str | os.PathLike,
    names: Iterable[str],
    measure: Callable[[str], Mapping[str, dict]],
    stop_on: type[Exception] | tuple[type[Exception], ...] = (),
) -> int:
    """``measure(name)`` for each name, records merged and saved (:func:`finish`). An
    exception of a ``stop_on`` type (e.g. the two sides disagree) saves the figures already
    taken and stops with its message; the script then exits non-zero."""
    apply_process_options(args)
    records: dict[str, dict] = {}
    try:
        for name in names:
            records.update(measure(name))
    except stop_on as e:
        if records:
            save(path, records)
        raise SystemExit(f"error: {e}") from None
    return finish(args, path, records)


def record_key(name: str, label: str = "") -> str:
    """Results key of one figure: its name, with ``@label`` when a label is given."""
    return f"{name}@{label}" if label else name
