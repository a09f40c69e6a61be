"""Counting how often jitted functions are traced (each trace is a compilation), by name,
through ``jax.monitoring``'s trace events."""

from __future__ import annotations

import collections
import contextlib

import jax

TRACE_EVENT = "/jax/core/compile/jaxpr_trace_duration"


@contextlib.contextmanager
def count_traces():
    """Yields a ``Counter`` of ``{function name: traces}`` while the block runs."""
    counts: collections.Counter = collections.Counter()

    def listener(event, duration, **kw):
        if event == TRACE_EVENT:
            counts[kw.get("fun_name")] += 1

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield counts
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
