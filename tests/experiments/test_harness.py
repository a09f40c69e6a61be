"""The timing harness's pure logic: the loaded verdict, round bookkeeping, ISA parsing, the
quiet wait and the merged results file (no timing is asserted)."""

from __future__ import annotations

import json
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "experiments"))
import harness  # noqa: E402

AMD_BF16 = """\
processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9R14 96-Core Processor
flags\t\t: fpu vme sse4_1 sse4_2 avx avx2 fma avx512f avx512dq avx512bw avx512vl avx512_vnni avx512_bf16

processor\t: 1
model name\t: AMD EPYC 9R14 96-Core Processor
flags\t\t: fpu vme sse4_1 sse4_2 avx avx2 fma avx512f avx512dq avx512bw avx512vl avx512_vnni avx512_bf16
"""
INTEL_AVX2 = """\
processor\t: 0
model name\t: Intel(R) Xeon(R) CPU E5-2686 v4 @ 2.30GHz
flags\t\t: fpu sse4_2 avx avx2 fma
"""
INTEL_AMX = "model name\t: Intel(R) Xeon(R) Processor\nflags\t: avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n"


def test_isa_from_cpuinfo():
    amd = harness.parse_cpuinfo(AMD_BF16)
    assert amd["model_name"] == "AMD EPYC 9R14 96-Core Processor"
    assert amd["isa"] == {"AVX2": True, "AVX-512": True, "AVX512_BF16": True, "AMX": False,
                          "AMX_BF16": False}
    old = harness.parse_cpuinfo(INTEL_AVX2)
    assert old["isa"]["AVX2"] and not old["isa"]["AVX-512"] and not old["isa"]["AVX512_BF16"]
    assert old["simd_flags"] == ["avx", "avx2", "fma", "sse4_2"]
    amx = harness.parse_cpuinfo(INTEL_AMX)
    assert amx["isa"]["AMX"] and amx["isa"]["AMX_BF16"]


def test_isa_of_text_without_flags_is_all_false():
    info = harness.parse_cpuinfo("processor : 0\n")
    assert info["model_name"] is None and not any(info["isa"].values())


def test_quiet_run_has_no_reasons():
    sgemm = {"xla": [200.0, 190.0, 195.0], "torch": [180.0, 185.0]}
    assert harness.loaded_reasons(1.2, 2.4, 2, sgemm) == []


@pytest.mark.parametrize("before, after", [(2.6, 1.0), (1.0, 2.51)])
def test_load_above_threads_plus_half_is_loaded(before, after):
    reasons = harness.loaded_reasons(before, after, 2, {"xla": [200.0, 200.0]})
    assert len(reasons) == 1 and "> 2.5" in reasons[0]


def test_load_limit_follows_the_benchmark_threads():
    assert harness.loaded_reasons(1.4, 1.4, 1, {}) == []
    assert len(harness.loaded_reasons(1.6, 1.6, 1, {})) == 2


def test_sgemm_drift_over_15_percent_is_loaded():
    assert harness.drift([200.0, 171.0]) == pytest.approx(0.145)
    assert harness.loaded_reasons(0.5, 0.5, 2, {"torch": [200.0, 171.0]}) == []
    reasons = harness.loaded_reasons(0.5, 0.5, 2, {"xla": [200.0, 201.0], "torch": [200.0, 169.0]})
    assert len(reasons) == 1 and reasons[0].startswith("torch sgemm drifted 16 %")


def test_drift_of_fewer_than_two_rounds_is_zero():
    assert harness.drift([]) == 0.0 and harness.drift([123.0]) == 0.0


def test_round_order_alternates():
    names = ["jaxood", "torch"]
    order = [harness.round_order(names, r) for r in range(4)]
    assert order == [names, names[::-1], names, names[::-1]]
    assert names == ["jaxood", "torch"]  # not reversed in place


def test_compare_medians_and_ratio():
    times = {"jaxood": [2.0, 1.0, 4.0], "torch": [2.0, 8.0, 3.0]}
    out = harness.compare(times, work=12.0, unit="images")
    assert out["jaxood_images_per_s"] == 6.0  # 12 / median(2, 1, 4)
    assert out["torch_images_per_s"] == 4.0  # 12 / median(2, 8, 3)
    assert out["ratio_jaxood_over_torch"] == 1.5
    assert out["paired_ratio_rounds_jaxood_over_torch"] == [1.0, 8.0, 0.75]
    assert out["jaxood_s_rounds"] == [2.0, 1.0, 4.0]


def test_sgemm_size_targets_the_duration():
    n = harness.sgemm_size(200.0, 0.2)  # 2 n^3 = 4e10 -> n ~ 2714
    assert n % 128 == 0 and abs(2 * n**3 / 200e9 - 0.2) < 0.05
    assert harness.sgemm_size(1e-3) == 256 and harness.sgemm_size(1e6) == 4096


class FakeClock:
    def __init__(self, loads):
        self.loads, self.now, self.sleeps = list(loads), 0.0, []

    def getload(self):
        return (self.loads.pop(0) if len(self.loads) > 1 else self.loads[0], 0.0, 0.0)

    def sleep(self, s):
        self.sleeps.append(s)
        self.now += s


def test_wait_for_quiet_returns_once_the_load_drops():
    fake = FakeClock([3.0, 2.7, 2.4])
    quiet, waited = harness.wait_for_quiet(2.5, 60, poll_s=5, getload=fake.getload,
                                           sleep=fake.sleep, clock=lambda: fake.now)
    assert quiet and waited == 10.0 and fake.sleeps == [5, 5]


def test_wait_for_quiet_is_bounded():
    fake = FakeClock([4.0])
    quiet, waited = harness.wait_for_quiet(2.5, 12, poll_s=5, getload=fake.getload,
                                           sleep=fake.sleep, clock=lambda: fake.now)
    assert not quiet and waited == 12.0 and fake.sleeps == [5, 5, 2]


def test_save_merges_by_key_atomically(tmp_path):
    path = tmp_path / "r" / "bench.json"
    harness.save(path, {"wrn16_4": {"x": 1}, "resnet18": {"x": 2}})
    harness.save(path, {"wrn16_4": {"x": 3}})
    assert json.loads(path.read_text()) == {"wrn16_4": {"x": 3}, "resnet18": {"x": 2}}
    assert [p.name for p in path.parent.iterdir()] == ["bench.json"]  # no temp file left


@pytest.mark.parametrize("content", ["{not json", "[1, 2]"])
def test_save_refuses_a_corrupt_results_file(tmp_path, content):
    path = tmp_path / "bench.json"
    path.write_text(content)
    with pytest.raises(SystemExit, match="bench.json"):
        harness.save(path, {"k": {}})
    assert path.read_text() == content


def test_finish_exit_status(tmp_path):
    class Args:
        require_quiet = True

    path = tmp_path / "b.json"
    assert harness.finish(Args, path, {}) == 1 and not path.exists()
    assert harness.finish(Args, path, {"a": {"loaded": False}}) == 0
    assert harness.finish(Args, path, {"b": {"loaded": True}}) == 3
    Args.require_quiet = False
    assert harness.finish(Args, path, {"b": {"loaded": True}}) == 0
    assert set(json.loads(path.read_text())) == {"a", "b"}


def test_record_key():
    assert harness.record_key("wrn16_4") == "wrn16_4"
    assert harness.record_key("wrn16_4", "bf16") == "wrn16_4@bf16"


def test_run_bookkeeping_at_tiny_size():
    run = harness.Run(("xla", "numpy"), wait_s=0, sgemm_n=256)
    calls = []
    contenders = {"jaxood": lambda: calls.append("j"), "ref": lambda: calls.append("r")}
    times = run.alternate(contenders, rounds=3, warmup=1)
    assert calls == ["j", "r", "j", "r", "r", "j", "j", "r"]  # warm-up, then alternating
    assert {k: len(v) for k, v in times.items()} == {"jaxood": 3, "ref": 3}
    rec = run.record({"figure": 1})
    assert rec["figure"] == 1 and isinstance(rec["loaded"], bool)
    assert rec["loaded"] == bool(rec["loaded_reasons"])
    assert rec["sgemm"]["n"] == 256
    assert [len(v) for v in rec["sgemm"]["gflops_rounds"].values()] == [4, 4]  # + the last
    assert rec["threads"]["load_limit"] == rec["threads"]["benchmark"] + 0.5
    assert len(rec["loadavg_1min_rounds"]) == 3 and "isa" in rec["machine"]


def test_collect_keeps_figures_taken_before_a_stop(tmp_path):
    class Args:
        require_quiet = False

    class Disagree(RuntimeError):
        pass

    def measure(name):
        if name == "b":
            raise Disagree("b: the two sides disagree")
        return {name: {"loaded": False}}

    path = tmp_path / "r.json"
    assert harness.collect(Args, path, ["a"], measure, Disagree) == 0
    with pytest.raises(SystemExit, match="error: b: the two sides disagree"):
        harness.collect(Args, path, ["c", "b", "d"], measure, Disagree)
    assert set(json.loads(path.read_text())) == {"a", "c"}
    with pytest.raises(ValueError):  # other errors are not swallowed
        harness.collect(Args, path, ["x"], lambda n: int("x"), Disagree)
