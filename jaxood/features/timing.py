"""Wall time per stage of a benchmark run (decode, network passes, APS, evaluation, writing).

Stages nest (APS triggers the network passes of the sets it reads); each stage records its
*exclusive* seconds (its own time minus its nested stages'), so the stages of a run add up to
its wall time and a rate ``items / seconds`` is the rate of that stage alone.
"""

from __future__ import annotations

import contextlib
import time


class StageTimes:
    """Accumulates exclusive wall seconds and item counts per stage name."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.items: dict[str, int] = {}
        self._nested = [0.0]  # time spent in stages nested in the open one, per open stage
        self._called: set = set()

    @contextlib.contextmanager
    def stage(self, name: str, items: int = 0):
        """Times the ``with`` body as ``name`` (minus stages timed inside it)."""
        t0 = time.perf_counter()
        self._nested.append(0.0)
        try:
            yield
        finally:
            elapsed = time.perf_counter() - t0
            self._record(name, elapsed - self._nested.pop(), items)
            self._nested[-1] += elapsed

    def add(self, name: str, seconds: float, items: int = 0) -> None:
        """Records ``seconds`` measured by hand (inside any open stage, which they are
        subtracted from) and ``items`` under ``name``."""
        self._record(name, seconds, items)
        self._nested[-1] += seconds

    def first_call(self, key) -> bool:
        """True the first time ``key`` (e.g. a jitted function and its input shape) is seen:
        that call includes compiling."""
        new = key not in self._called
        self._called.add(key)
        return new

    def _record(self, name: str, seconds: float, items: int) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        self.items[name] = self.items.get(name, 0) + int(items)

    def to_dict(self) -> dict[str, dict]:
        """``{stage: {"seconds", "items", "items_per_s"}}`` (``items_per_s`` only with items)."""
        out = {}
        for name, s in self.seconds.items():
            row = {"seconds": round(s, 4), "items": self.items[name]}
            if self.items[name] and s > 0:
                row["items_per_s"] = round(self.items[name] / s, 3)
            out[name] = row
        return out
