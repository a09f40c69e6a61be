"""The per-op attribution of experiments/profile_gaps.py on a hand-made HLO module and trace
(no timing is measured)."""

from __future__ import annotations

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "experiments"))
import profile_gaps as pg  # noqa: E402

HLO = """\
HloModule jit_step

%fused_computation (p: f32[8]) -> f32[8] {
  %p = f32[8]{0} parameter(0)
  ROOT %m = f32[8]{0} multiply(%p, %p)
}

ENTRY %main.1 (x: f32[8,4,4,2], w: f32[3,3,2,2]) -> (f32[8,4,4,2], f32[3,3,2,2]) {
  %x = f32[8,4,4,2]{3,2,1,0} parameter(0), metadata={op_name="x"}
  %w = f32[3,3,2,2]{3,2,1,0} parameter(1), metadata={op_name="w"}
  %conv.1 = f32[8,4,4,2]{3,2,1,0} convolution(%x, %w), window={size=3x3 pad=1_1x1_1}, dim_labels=b01f_01io->b01f, metadata={op_name="jit(step)/jvp(Net)/conv/conv_general_dilated"}
  %bitcast.1 = f32[8,32]{1,0} bitcast(%conv.1)
  %relu_fusion = f32[8,32]{1,0} fusion(%bitcast.1), kind=kLoop, calls=%fused_computation, metadata={op_name="jit(step)/jvp(Net)/relu/max"}
  %dot.2 = f32[2,4,4]{2,1,0} dot(%x, %x), lhs_batch_dims={0}, lhs_contracting_dims={2}, rhs_batch_dims={0}, rhs_contracting_dims={1}, metadata={op_name="jit(step)/transpose(jvp(Net))/attn/dot_general"}
  %convolution.9 = f32[3,3,2,2]{3,2,1,0} convolution(%x, %relu_fusion), window={size=4x4 pad=1_1x1_1}, dim_labels=b01f_01io->b01f
  %transpose_copy_fusion = f32[3,3,2,2]{3,2,1,0} fusion(%convolution.9), kind=kLoop, calls=%fused_computation
  %update_fusion = f32[3,3,2,2]{3,2,1,0} fusion(%w, %transpose_copy_fusion), kind=kLoop, calls=%fused_computation, metadata={op_name="jit(step)/sub"}
  ROOT %tuple = (f32[8,4,4,2]{3,2,1,0}, f32[3,3,2,2]{3,2,1,0}) tuple(%conv.1, %update_fusion)
}
"""


def test_op_classes_and_phases_from_hlo():
    classes = pg.xla_op_classes(HLO, train=True)
    assert classes["conv.1"] == "forward/conv"
    assert classes["relu_fusion"] == "forward/other"
    assert classes["dot.2"] == "backward/attention_matmul"  # a dot with batch dims
    assert classes["convolution.9"] == "unlabelled/conv"  # made by XLA, no op_name
    assert classes["transpose_copy_fusion"] == "unlabelled/layout"
    assert classes["update_fusion"] == "update/other"
    # without training there is no update phase
    assert pg.xla_op_classes(HLO, train=False)["update_fusion"] == "forward/other"
    assert pg.async_ops(HLO) == {"conv.1", "dot.2", "convolution.9"}


def test_consumers_are_read_through_the_entry_computation_only():
    consumers = pg.entry_consumers(HLO)
    assert consumers["conv.1"] == ["bitcast.1", "tuple"]
    assert consumers["bitcast.1"] == ["relu_fusion"]
    assert sorted(consumers["x"]) == ["conv.1", "convolution.9", "dot.2", "dot.2"]
    assert "p" not in consumers  # the fused computation's parameter is not an entry op


def ev(name, ts, dur):
    return {"name": name, "ts": ts, "dur": dur, "ph": "X"}


def test_an_asynchronous_op_runs_until_its_first_reader_starts():
    consumers = pg.entry_consumers(HLO)
    ops = [ev("conv.1", 0, 1), ev("relu_fusion", 50, 10), ev("dot.2", 60, 2)]
    intervals = pg.op_intervals(ops, consumers, pg.async_ops(HLO))
    # conv.1 is read by relu_fusion through bitcast.1 (no event); dot.2 has no reader with
    # an event, so it keeps its own event
    assert intervals == [("conv.1", 0, 50), ("relu_fusion", 50, 60), ("dot.2", 60, 62)]


def test_shared_time_splits_overlaps_equally_and_sums_to_the_busy_time():
    shares = pg.shared_time([("a", 0, 10), ("b", 4, 6), ("c", 20, 30)])
    assert shares["a"] == pytest.approx(9e-6)  # 0-4 and 6-10 alone, 4-6 shared
    assert shares["b"] == pytest.approx(1e-6)
    assert shares["c"] == pytest.approx(10e-6)


def test_unlabelled_ops_take_the_phase_before_them_but_never_update():
    classes = {"f": "forward/conv", "u1": "unlabelled/layout", "b": "backward/other",
               "up": "update/other", "u2": "unlabelled/conv"}
    ops = [ev(n, t, 1) for t, n in enumerate(["f", "u1", "b", "up", "u2"])]
    assert pg.resolve_phases(ops, classes) == {
        "f": "forward/conv", "u1": "forward/layout", "b": "backward/other",
        "up": "update/other", "u2": "backward/conv"}


def test_execution_charges_cover_each_execution_once():
    classes = pg.xla_op_classes(HLO, train=True)
    consumers, asynchronous = pg.entry_consumers(HLO), pg.async_ops(HLO)
    events = []
    for start in (0, 1000):  # two executions
        events += [
            ev("CommonPjRtLoadedExecutable::ExecuteHelperOnSingleDevice", start, 1),
            ev("conv.1", start + 10, 1),
            ev("ThunkExecutor::Execute (wait for completion)", start + 11, 189),
            ev("relu_fusion", start + 60, 40),
            ev("update_fusion", start + 150, 10),
        ]
    out = pg.execution_charges(events, classes, consumers, asynchronous)
    assert out["forward/conv"] == pytest.approx(2 * 50e-6)
    assert out["forward/other"] == pytest.approx(2 * 40e-6)
    assert out["update/other"] == pytest.approx(2 * 10e-6)
    # 100-150 and 160-200 of each execution: no op event open
    assert out["unattributed"] == pytest.approx(2 * 90e-6)
    assert sum(out.values()) == pytest.approx(2 * 190e-6)


@pytest.mark.parametrize("name, cls", [
    ("aten::mkldnn_convolution", "conv"), ("aten::convolution_backward", "conv"),
    ("aten::addmm", "matmul"), ("aten::mm", "matmul"), ("aten::bmm", "attention_matmul"),
    ("aten::_scaled_dot_product_flash_attention_for_cpu", "attention_matmul"),
    ("aten::copy_", "layout"), ("aten::native_batch_norm", "other"),
])
def test_torch_op_classes(name, cls):
    assert pg.torch_op_class(name) == cls
