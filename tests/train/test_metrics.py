"""MetricsWindow: one fetch per window, NaN stop naming the step, honest throughput."""

from __future__ import annotations

import time

import jax.numpy as jnp
import pytest

from jaxood.train.metrics import MetricsWindow, TrainingDiverged


def _m(loss, correct, count=4):
    return {"loss": jnp.float32(loss), "correct": jnp.int32(correct), "count": jnp.int32(count)}


def test_window_summaries_and_epoch_means():
    w = MetricsWindow()
    assert w.flush(None) is None
    w.add(0, _m(1.0, 1), 4)
    w.add(1, _m(3.0, 3), 4)
    r = w.flush(None)
    assert r["loss"] == 2.0 and r["train_acc"] == 0.5 and r["images_per_s"] is None  # compile
    w.add(2, _m(5.0, 4), 4)
    time.sleep(0.05)
    r = w.flush(None)
    assert r["loss"] == 5.0 and r["train_acc"] == 1.0
    assert 0 < r["images_per_s"] <= 4 / 0.05 and w.images_per_s == r["images_per_s"]
    assert w.end_epoch() == (3.0, 8 / 12)  # mean over the 3 steps, 8 of 12 correct
    assert w.end_epoch() == (0.0, 0.0) and len(w) == 0


def test_excluded_and_restarted_windows_do_not_count():
    w = MetricsWindow()
    w.add(0, _m(1.0, 1), 4)
    w.flush(None)
    w.add(1, _m(1.0, 1), 4)
    w.exclude()  # e.g. a new batch shape compiled
    assert w.flush(None)["images_per_s"] is None and w.images_per_s is None
    time.sleep(0.2)  # evaluation / checkpointing
    w.restart_clock()
    w.add(2, _m(1.0, 1), 1000)
    rate = w.flush(None)["images_per_s"]
    assert rate > 1000 / 0.2  # the sleep before restart_clock is not in the window


def test_first_non_finite_loss_is_named_with_the_last_good_checkpoint():
    w = MetricsWindow()
    for s, loss in enumerate([1.0, float("nan"), float("inf")]):
        w.add(10 + s, _m(loss, 0), 4)
    with pytest.raises(TrainingDiverged, match=r"nan at step 11.*step 8\)"):
        w.flush(8)
