"""Where jaxood and PyTorch spend a gradient workload's time, op class by op class.

    python experiments/profile_gaps.py                       # every workload below
    python experiments/profile_gaps.py --workloads train/wrn16_4 grad/vit_b_16

The side-by-side benchmarks (``bench_train.py``, ``bench_imagenet_forward.py``,
``bench_adascale_torch.py``) give one ratio per workload. Where a ratio is short of its
target, this script says which kind of op loses the time. Both frameworks run the same
workload, with the same shapes and threads, under their own profilers:

* **jaxood**: ``jax.profiler``. XLA:CPU's event for a convolution or a matrix product ends
  when the work has been handed to the thread pool, so an op's own event understates it
  (``profile_train_step.py`` leaves most of the step "outside op events"). Here such an op
  runs until the first op that reads its result starts; every other op is its event. Each
  moment of the execution is split equally among the ops running then, and moments when
  none is open are ``unattributed``. Ops XLA made without a source location take the phase
  of the op scheduled before them.
* **PyTorch**: ``torch.profiler``, each aten op's self CPU time. Its ops are synchronous
  (the caller waits for the intra-op threads), so self time is the op's wall time.

Op classes, the same on both sides: ``conv``; ``matmul`` (dense layers, 1x1 convolutions run
as products); ``attention_matmul`` (batched products: attention's QK^T and AV, and PyTorch's
fused attention kernel with its softmax); ``layout`` (copies and transposes);
``other`` (BatchNorm/LayerNorm, activations, softmax, pooling, losses, the optimizer).
Each class is split by phase: ``forward``, ``backward`` and, for training, ``update``.

Workloads: ``train/<model>`` is the library's training step against OpenOOD's loop at batch
128 (the nets of ``bench_train.py``); ``grad/<arch>`` is AdaSCALE's forward + input gradient
and ``forward/<arch>`` the forward alone, converted torchvision weights, batch 16, 224x224
(as ``bench_imagenet_forward.py``). AdaSCALE-A is one ``grad`` and one ``forward``.

Profilers add overhead (PyTorch's about a third here), so each framework's per-class
shares are scaled to its unprofiled median wall time (``*_wall_s``, the frameworks
alternating); the profiled totals are kept in the record. Records
merge into ``experiments/results/profile_gaps.json`` under the workload's name.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import re
import resource
import statistics
import sys
import tempfile
import time

import bench_train
import harness
import jax
import jax.numpy as jnp
import numpy as np
import torch
import torchvision

from jaxood import models
from jaxood.convert.torchvision import convert_state_dict
from jaxood.models import flax_model

OUT = harness.ROOT / "experiments" / "results" / "profile_gaps.json"
WORKLOADS = (
    "train/wrn16_4", "train/resnet18_32x32", "train/densenet_bc_100",
    "grad/resnet50", "grad/vit_b_16", "grad/swin_t",
    "forward/resnet50", "forward/vit_b_16", "forward/swin_t",
)
PHASES = ("forward", "backward", "update")
CLASSES = ("conv", "matmul", "attention_matmul", "layout", "other")


# ---------------------------------------------------------------------- classification


def xla_op_classes(hlo_text: str, train: bool) -> dict[str, str]:
    """HLO instruction name -> ``"<phase>/<class>"`` from the optimised module's text: the
    phase from JAX's transform names in ``op_name`` (``transpose(`` is the backward pass),
    the class from the primitive that produced the op."""
    out = {}
    for name, opcode, rest in instructions(hlo_text):
        op_name = re.search(r'op_name="([^"]*)"', rest)
        op_name = op_name.group(1) if op_name else ""
        if not op_name:  # made by XLA: resolve_phases places it
            phase = "unlabelled"
        elif "transpose(" in op_name:
            phase = "backward"
        elif "jvp(" in op_name or not train:
            phase = "forward"
        else:
            phase = "update"
        out[name] = f"{phase}/{_xla_class(name, opcode, op_name, rest)}"
    return out


def instructions(hlo_text: str):
    """(name, opcode, text after the opcode's parenthesis) of each HLO instruction."""
    for m in re.finditer(r"^\s*(?:ROOT )?%(\S+) = (.*)$", hlo_text, re.M):
        op = re.search(r"(\w[\w-]*)\(((?:%|\)).*)$", m.group(2))
        if op:
            yield m.group(1), op.group(1), op.group(2)


def _xla_class(name: str, opcode: str, op_name: str, rest: str) -> str:
    if opcode == "convolution" or op_name.endswith("conv_general_dilated") and opcode == "dot":
        return "conv"
    if opcode == "dot":
        return "attention_matmul" if "lhs_batch_dims" in rest else "matmul"
    if opcode in ("copy", "transpose") or "transpose" in name or name.startswith("copy"):
        return "layout"
    return "other"


def torch_op_class(name: str) -> str:
    """aten op name -> class (matching :func:`xla_op_classes`)."""
    if "convolution" in name or name.startswith("aten::conv"):
        return "conv"
    if name in ("aten::addmm", "aten::mm", "aten::_addmm_activation"):
        return "matmul"
    if name in ("aten::bmm", "aten::baddbmm") or "attention" in name:
        return "attention_matmul"
    if name in ("aten::copy_", "aten::clone", "aten::contiguous", "aten::_to_copy"):
        return "layout"
    return "other"


#: Opcodes whose XLA:CPU thunk hands its work to the thread pool and returns at once.
ASYNC_OPCODES = ("convolution", "dot", "custom-call")


def async_ops(hlo_text: str) -> set[str]:
    return {name for name, opcode, _ in instructions(hlo_text) if opcode in ASYNC_OPCODES}


def entry_consumers(hlo_text: str) -> dict[str, list[str]]:
    """Instruction name -> the instructions of the ENTRY computation that read it."""
    entry = hlo_text[hlo_text.index("\nENTRY "):]
    out: dict[str, list[str]] = collections.defaultdict(list)
    for name, _, rest in instructions(entry):
        for operand in re.findall(r"%([\w.\-]+)", re.split(r"\), \w+=", rest)[0]):
            out[operand].append(name)
    return out


def op_intervals(ops: list[dict], consumers: dict[str, list[str]], asynchronous: set[str]):
    """(name, start, stop) of each op event of one execution: the event itself, except that
    an asynchronous op (``ASYNC_OPCODES``) runs until the first op that reads its result
    starts (reads through ops without events, such as bitcasts and tuples, count)."""
    starts = {e["name"]: e["ts"] for e in ops}
    out = []
    for e in ops:
        if e["name"] not in asynchronous:
            out.append((e["name"], e["ts"], e["ts"] + e["dur"]))
            continue
        seen, frontier, reads = set(), list(consumers.get(e["name"], ())), []
        while frontier:
            c = frontier.pop()
            if c in seen:
                continue
            seen.add(c)
            if c in starts:
                reads.append(starts[c])
            else:
                frontier.extend(consumers.get(c, ()))
        later = [t for t in reads if t >= e["ts"]]
        stop = min(later) if later else e["ts"] + e["dur"]  # read by the result only
        out.append((e["name"], e["ts"], max(stop, e["ts"] + e["dur"])))
    return out


def shared_time(intervals) -> collections.Counter:
    """Seconds per op name: every moment of the execution is split equally among the ops
    running then (two independent ops may share the thread pool)."""
    bounds = sorted({t for _, a, b in intervals for t in (a, b)})
    out = collections.Counter()
    for a, b in zip(bounds, bounds[1:]):
        active = [n for n, s, t in intervals if s <= a and t >= b]
        for n in active:
            out[n] += (b - a) / len(active) / 1e6
    return out


def resolve_phases(ops: list[dict], classes: dict[str, str]) -> dict[str, str]:
    """Op name -> ``phase/class``, where an op XLA made without a source location (e.g. a
    weight-gradient convolution after canonicalisation) takes the phase of the labelled op
    that ran before it (the thunks run in the program's schedule order), except that XLA
    interleaves the optimizer's updates with the backward pass: after an update op it is
    placed in ``backward``."""
    out, phase = {}, "forward"
    for e in ops:
        p, c = classes[e["name"]].split("/")
        phase = ("backward" if phase == "update" else phase) if p == "unlabelled" else p
        out[e["name"]] = f"{phase}/{c}"
    return out


def execution_charges(events: list[dict], classes: dict[str, str],
                      consumers: dict[str, list[str]], asynchronous: set[str]
                      ) -> collections.Counter:
    """Seconds per class over all executions in ``events`` (a chrome trace), and as
    ``"unattributed"`` the moments of an execution when no op event was open."""
    helpers = sorted(e["ts"] for e in events if e["name"].startswith(
        "CommonPjRtLoadedExecutable::ExecuteHelper"))
    waits = [e for e in events if e["name"] == "ThunkExecutor::Execute (wait for completion)"]
    ops = sorted((e for e in events if e["name"] in classes), key=lambda e: e["ts"])
    out = collections.Counter()
    for k, start in enumerate(helpers):
        stop = helpers[k + 1] if k + 1 < len(helpers) else float("inf")
        mine = [e for e in ops if start <= e["ts"] < stop]
        if not mine:
            continue
        resolved = resolve_phases(mine, classes)
        end = max([w["ts"] + w["dur"] for w in waits if start <= w["ts"] < stop]
                  + [e["ts"] + e["dur"] for e in mine])
        shares = shared_time(op_intervals(mine, consumers, asynchronous))
        for name, s in shares.items():
            out[resolved[name]] += s
        out["unattributed"] += (end - mine[0]["ts"]) / 1e6 - sum(shares.values())
    return out


# ---------------------------------------------------------------------- profiling


def xla_profile(compiled, call, classes: dict[str, str], iters: int) -> dict[str, float]:
    """Seconds per ``phase/class`` per call of ``call()`` (which runs ``compiled``)."""
    text = compiled.as_text()
    consumers = entry_consumers(text)
    with tempfile.TemporaryDirectory() as d:
        with jax.profiler.trace(d):
            for _ in range(iters):
                call()
        (path,) = glob.glob(f"{d}/**/*.trace.json.gz", recursive=True)
        with gzip.open(path) as f:
            events = [e for e in json.load(f)["traceEvents"] if e.get("ph") == "X"]
    charges = execution_charges(events, classes, consumers, async_ops(text))
    return {k: v / iters for k, v in charges.items()}


def torch_profile(call, iters: int) -> dict[str, float]:
    """Seconds per ``phase/class`` per call of ``call()``, which marks its phases with
    ``torch.profiler.record_function(<phase>)``."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(iters):
            call()
    events = list(prof.events())
    ranges = [(e.time_range.start, e.time_range.end, e.name) for e in events if e.name in PHASES]
    out = collections.Counter()
    for e in events:
        if e.name in PHASES or not e.name.startswith("aten::"):
            continue
        phase = next((p for s, t, p in ranges if s <= e.time_range.start < t), None)
        if phase is not None:
            out[f"{phase}/{torch_op_class(e.name)}"] += e.self_cpu_time_total / 1e6 / iters
    return dict(out)


def wall_medians(calls: dict, rounds: int) -> dict[str, dict[str, float]]:
    """Per contender, unprofiled medians per call (the contenders alternating): wall
    seconds, kernel (system) CPU seconds and minor page faults. XLA:CPU maps a fresh
    temporary buffer for every execution, which the kernel zero-fills page by page."""
    samples = collections.defaultdict(lambda: collections.defaultdict(list))
    for _ in range(rounds):
        for name, call in calls.items():
            r0, t = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            call()
            wall, r1 = time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF)
            samples[name]["wall_s"].append(wall)
            samples[name]["system_cpu_s"].append(r1.ru_stime - r0.ru_stime)
            samples[name]["minor_faults"].append(r1.ru_minflt - r0.ru_minflt)
    return {name: {k: statistics.median(v) for k, v in per.items()}
            for name, per in samples.items()}


# ---------------------------------------------------------------------- workloads


def train_workload(name: str):
    """(jaxood compiled step, its call, torch call) of one training step, batch 128."""
    arch, kwargs, make_torch = bench_train.ARCHS[name]
    module = models.create(arch, 10, **kwargs)
    data = bench_train.make_data(256)
    jx = bench_train.JaxContender(arch, kwargs, module, data, 128, pipeline=False)
    tc = bench_train.TorchContender(make_torch(bench_train.torch_models()), data, 128, False, 0)
    rf = torch.profiler.record_function

    def torch_step():
        with rf("forward"):
            loss = torch.nn.functional.cross_entropy(tc.net(tc.x)[0], tc.y)
        with rf("backward"):
            tc.opt.zero_grad()
            loss.backward()
        with rf("update"):
            tc.opt.step()
            tc.sched.step()

    return jx.compiled, lambda: jx.run(1), torch_step


def imagenet_workload(mode: str, arch: str):
    """(compiled, its call, torch call) of a converted torchvision model at batch 16,
    224x224: the forward, or the forward + AdaSCALE's input gradient (weights frozen)."""
    torch.manual_seed(0)
    tv = getattr(torchvision.models, arch)().eval()
    for prm in tv.parameters():
        prm.requires_grad_(False)
    module, variables, _ = convert_state_dict(tv.state_dict(), arch, input_size=224)
    model, variables = flax_model(module), jax.device_put(variables)
    x = np.random.default_rng(0).standard_normal((16, 3, 224, 224)).astype(np.float32)
    x_t, x_j = torch.from_numpy(x), jax.device_put(x.transpose(0, 2, 3, 1))
    rf = torch.profiler.record_function

    def jax_grad(v, x):
        logits, vjp = jax.vjp(lambda x: model.features(v, x).logits, x)
        return vjp(jax.nn.one_hot(jnp.argmax(logits, -1), logits.shape[-1]))[0]

    def torch_grad():
        xg = x_t.clone().requires_grad_(True)
        with rf("forward"):
            logits = tv(xg)
            onehot = torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1])
        with rf("backward"):
            torch.autograd.grad(logits, xg, grad_outputs=onehot.to(logits.dtype))

    def torch_forward():
        with torch.inference_mode(), rf("forward"):
            tv(x_t)

    fn = jax_grad if mode == "grad" else lambda v, x: model.features(v, x).logits
    compiled = jax.jit(fn).lower(variables, x_j).compile()
    call = lambda: jax.block_until_ready(compiled(variables, x_j))
    return compiled, call, torch_grad if mode == "grad" else torch_forward


def profile_workload(workload: str, args, run: harness.Run) -> dict:
    mode, name = workload.split("/")
    if mode == "train":
        compiled, jax_call, torch_call = train_workload(name)
    else:
        compiled, jax_call, torch_call = imagenet_workload(mode, name)
    classes = xla_op_classes(compiled.as_text(), train=mode == "train")
    jax_call(), torch_call()  # warm-up
    medians = wall_medians({"jaxood": jax_call, "torch": torch_call}, args.rounds)
    wall = {name: m["wall_s"] for name, m in medians.items()}
    run.checkpoint()
    jx = xla_profile(compiled, jax_call, classes, args.iters)
    tc = torch_profile(torch_call, args.iters)
    run.checkpoint()
    # Each framework's profiled shares, scaled to its unprofiled wall time.
    sj, st = wall["jaxood"] / sum(jx.values()), wall["torch"] / sum(tc.values())
    table = {
        key: {"jaxood_s": round(jx.get(key, 0.0) * sj, 4), "torch_s": round(tc.get(key, 0.0) * st, 4)}
        for key in [f"{p}/{c}" for p in PHASES for c in CLASSES] + ["unattributed"]
        if jx.get(key) or tc.get(key)
    }
    return {
        "workload": workload,
        "jaxood_wall_s": round(wall["jaxood"], 4),
        "torch_wall_s": round(wall["torch"], 4),
        "ratio_jaxood_over_torch": round(wall["torch"] / wall["jaxood"], 3),
        "per_call_medians": {n: {k: round(v, 4) for k, v in m.items()} for n, m in medians.items()},
        "jaxood_profiled_s": round(sum(jx.values()), 4),
        "torch_profiled_s": round(sum(tc.values()), 4),
        "by_phase_class": table,
        "rounds": args.rounds,
        "profiled_iters": args.iters,
    }


def print_table(rec: dict) -> None:
    print(f"\n{rec['workload']}: wall jaxood {rec['jaxood_wall_s']:.3f} s, torch "
          f"{rec['torch_wall_s']:.3f} s (jaxood {rec['ratio_jaxood_over_torch']:.2f}x)")
    for n, m in rec["per_call_medians"].items():
        print(f"  {n}: {m['minor_faults']:.0f} minor page faults, {m['system_cpu_s']:.2f} s "
              "kernel CPU per call")
    print(f"  {'phase/class':28s} {'jaxood s':>9s} {'torch s':>9s} {'jaxood - torch':>15s}")
    for key, v in rec["by_phase_class"].items():
        d = v["jaxood_s"] - v["torch_s"]
        print(f"  {key:28s} {v['jaxood_s']:9.3f} {v['torch_s']:9.3f} {d:+15.3f}")
    print(f"  (profiled totals before scaling to the wall time: jaxood "
          f"{rec['jaxood_profiled_s']:.3f} s, torch {rec['torch_profiled_s']:.3f} s)", flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=WORKLOADS)
    p.add_argument("--rounds", type=int, default=3, help="unprofiled alternating rounds")
    p.add_argument("--iters", type=int, default=2, help="profiled calls per framework")
    p.add_argument("--label", default="", help="free text stored in the JSON and its keys")
    p.add_argument("--out", default=str(OUT))
    harness.add_arguments(p)
    args = p.parse_args()

    def one(workload: str) -> dict:
        run = harness.Run.from_args(args)
        rec = run.record(profile_workload(workload, args, run))
        print_table(rec)
        return {harness.record_key(workload, args.label): rec}

    return harness.collect(args, args.out, args.workloads, one)


if __name__ == "__main__":
    sys.exit(main())
