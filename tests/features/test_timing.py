"""Stage timing: exclusive seconds of nested stages, on a fake clock."""

import pytest

from jaxood.features import timing


@pytest.fixture
def clock(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(timing.time, "perf_counter", lambda: now[0])
    return now


def test_nested_stages_record_exclusive_seconds(clock):
    t = timing.StageTimes()
    with t.stage("aps"):
        clock[0] += 1.0  # APS's own work
        with t.stage("features", items=10):
            clock[0] += 4.0
        t.add("decode", 2.0, items=10)  # measured by hand inside APS
        clock[0] += 2.0  # ... the span it measured
        clock[0] += 0.5
    with t.stage("aps"):
        clock[0] += 3.0
    d = t.to_dict()
    assert d["aps"] == {"seconds": 4.5, "items": 0}  # (7.5 - 4 - 2) + 3
    assert d["features"] == {"seconds": 4.0, "items": 10, "items_per_s": 2.5}
    assert d["decode"]["seconds"] == 2.0
    # Exclusive stages add up to the wall time (10.5 s on the fake clock).
    assert sum(r["seconds"] for r in d.values()) == pytest.approx(clock[0])


def test_first_call_only_once_per_key():
    t = timing.StageTimes()
    assert t.first_call(("f", (4, 8)))
    assert not t.first_call(("f", (4, 8)))
    assert t.first_call(("f", (2, 8)))
