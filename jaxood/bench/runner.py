"""The benchmark runner: model checkpoint(s) + benchmark + detectors -> OpenOOD result table.

Flow (one direction)::

    check everything (names, data, checkpoints, output dir)      before any compute
    for each run (checkpoint):
        extract logits/features (+ feature maps, + detector extras) once per dataset -> cache
        for each detector not stored yet with the same settings (resume):
            APS over its sweep: fit (memoised per fit-hparams) + score ID-val / OOD-val
            fit with the chosen point, score ID-test and every OOD set, metrics
            write its fitted detector and its record into the result store
    aggregate runs (mean, population std), write MD/CSV/JSON + aps.json + plots

One detector on one run's data is a :class:`~jaxood.bench.detector_run.DetectorRun`; the
fitted detectors are written by :mod:`jaxood.bench.deploy`, the records and tables by
:mod:`jaxood.bench.store` and :mod:`jaxood.bench.report`.

Python API::

    from jaxood.bench import runner
    result = runner.run(runner.BenchConfig(benchmark="fashion-openset", models=[ckpt_dir],
                                           data_root="../shared/data", out_dir="runs/bench"))
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jaxood import detectors as det_registry
from jaxood import fsutil, metrics, models, parallel, validate
from jaxood.bench import report
from jaxood.bench.deploy import save_fitted
from jaxood.bench.detector_run import DetectorRun
from jaxood.bench.report import BenchResult
from jaxood.bench.store import METRIC_NAMES, ResultStore
from jaxood.data import benchmarks
from jaxood.distributed import Processes, exit_promptly_when_a_peer_dies
from jaxood.features.cache import FeatureCache
from jaxood.features.model import model_capabilities, model_identity
from jaxood.features.store import FIT_IMAGES_MB, FIT_SPLITS, DataStore, splits_read
from jaxood.features.timing import StageTimes
from jaxood.fitted.detector import model_feature_dim
from jaxood.fsutil import locked, plain
from jaxood.types import Detector
from jaxood.version import __version__


@dataclasses.dataclass
class BenchConfig:
    """Everything a benchmark run needs.

    Attributes:
      benchmark: a name from ``jaxood.data.benchmarks.names()``.
      models: saved-model directories, one per run (e.g. seeds s0, s1, s2).
      detectors: detector names; ``None`` = every registered detector the model supports.
      data_root: data root (OpenOOD layout, or the folder of the ``.npz`` files).
      out_dir: results go to ``<out_dir>/<benchmark>/<name>-<fingerprint>/``, merged with
        what earlier runs stored there.
      cache_dir: feature cache (default ``<out_dir>/cache``).
      batch_size: extraction batch (rounded up to a multiple of the device count).
      aps: run APS for detectors with a sweep (else use defaults / ``hparams``).
      hparams: per-detector fixed hyperparameter overrides (``{"react": {"percentile": 90}}``);
        with APS they are applied to every grid point.
      fsood: full-spectrum mode: ID = ID-test ∪ covariate-shifted ID sets.
      plots: write PNG plots.
      progress: show progress bars / print the table.
      checksums: optional SHA-256 manifest for the image files.
      strict_counts: require OpenOOD v1.5 list line counts.
      model_name: results folder name (default: the manifest name / arch); the folder is
        ``<out_dir>/<benchmark>/<name>-<8 hex of the weights' SHA-256>``.
      strict: re-raise a detector's error instead of recording it and going on.
      fit_images_mb: ID splits up to this size (as float32) are given to ``fit`` as an image
        array (``Inputs.x``); larger splits as the lazily batched source itself (``len`` +
        ``batch(start, stop)``), which fits that use images (OODD's crops) read batch by
        batch with bounded memory (:func:`jaxood.features.store.fit_inputs`, the same rule
        as ``jaxood.fit``).
      plot_detectors: detectors that get histogram/ROC plots (default all; the near/far
        bar chart always shows every detector).
      rerun: recompute detectors whose results are already stored with the same settings
        (default: skip them, which is how an interrupted run resumes).
      save_detectors: write each tuned detector of each run as a deployable fitted detector
        to ``<results>/fitted/<detector>/run<r>/`` (``jaxood score`` loads it).
      distributed: a multi-host run (``jaxood.distributed.initialize`` called first): network
        passes are shared out over the processes; process 0 writes the results.
    """

    benchmark: str
    models: Sequence[str]
    detectors: Sequence[str] | None = None
    data_root: str | None = None
    out_dir: str = "runs/bench"
    cache_dir: str | None = None
    batch_size: int = 256
    aps: bool = True
    hparams: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    fsood: bool = False
    plots: bool = True
    progress: bool = True
    checksums: str | None = None
    strict_counts: bool = False
    model_name: str | None = None
    strict: bool = False
    fit_images_mb: float = FIT_IMAGES_MB
    plot_detectors: Sequence[str] | None = None
    rerun: bool = False
    save_detectors: bool = True
    distributed: bool = False
    print_per_dataset: bool = True


# --------------------------------------------------------------------------- the run


@dataclasses.dataclass
class Plan:
    """What :func:`prepare` checked: the benchmark, resolved model dirs, results folder."""

    bench: benchmarks.Benchmark
    model_dirs: list[str]
    fingerprints: list[dict]
    out_dir: str
    results: ResultStore


def check_given_fit_dim(hparams: Mapping[str, Mapping], d: int | None, model_dir: str) -> None:
    """``--hparams`` values that cannot work at the model's feature dimension (a percent of D
    rounding to 0 elements) fail before any network pass, naming the model."""
    for name, hp in hparams.items():
        det = det_registry.get(name)
        try:
            det_registry.adapt_to_dim(det, det.resolve(hp), hp, d)
        except ValueError as e:
            raise ValueError(f"--hparams for {name!r} on {model_dir}: {e}") from None


def check_folder_name(name: str, what: str) -> None:
    """``name`` becomes one folder under ``--out``: no separators, no ``..``, not hidden."""
    if not isinstance(name, str) or not name or name in (".", "..") or name.startswith(".") \
            or any(c in name for c in ("/", "\\", "\0")):
        raise ValueError(f"{what} {name!r} must be a plain folder name (no '/', no '..', not "
                         "starting with '.'): results are written to <out>/<benchmark>/<name>-…")


def results_folder(cfg: BenchConfig, bench, manifests, fingerprints) -> str:
    """``<out>/<benchmark>/<name>-<8 hex of the weights>``: two different checkpoints with the
    same name never share a folder."""
    name = cfg.model_name or manifests[0].get("name") or manifests[0]["arch"]
    check_folder_name(name, "name (--name)" if cfg.model_name else "the model's manifest name")
    digest = hashlib.sha256("|".join(f["weights"] for f in fingerprints).encode()).hexdigest()
    return os.path.join(cfg.out_dir, bench.name, f"{name}-{digest[:8]}")


def prepare(cfg: BenchConfig) -> Plan:
    """All checks that must pass before compute (names, models, output folder)."""
    bench = benchmarks.get(cfg.benchmark)  # ValueError lists valid names
    validate.check_positive_int(cfg.batch_size, "batch_size")
    validate.check_nonnegative(cfg.fit_images_mb, "fit_images_mb")
    for field in ("models", "detectors", "plot_detectors"):
        if isinstance(getattr(cfg, field), (str, os.PathLike)):
            raise ValueError(f"`{field}` must be a list, got the string "
                             f"{getattr(cfg, field)!r}; use [{getattr(cfg, field)!r}]")
    if not cfg.models:
        raise ValueError("no model checkpoint given (pass at least one saved-model directory)")
    twice = sorted({m for m in cfg.models if list(cfg.models).count(m) > 1})
    if twice:
        raise ValueError(f"model(s) {twice} given more than once; each run needs its own "
                         "checkpoint (e.g. seeds s0 s1 s2)")
    for name in cfg.plot_detectors or ():
        det_registry.get(name)  # a typo would silently plot nothing
    if cfg.detectors is not None:
        for n in cfg.detectors:
            det_registry.get(n)  # unknown names fail here, listing the valid ones
        if not cfg.detectors:
            raise ValueError(f"empty detector list; valid names: {', '.join(det_registry.names())}")
    unknown = set(cfg.hparams) - set(det_registry.names())
    if unknown:
        raise ValueError(f"hparams given for unknown detector(s) {sorted(unknown)}")
    for name, hp in cfg.hparams.items():
        if not isinstance(hp, Mapping):
            raise ValueError(f"hparams[{name!r}] must be a dict of hyperparameters like "
                             f"{{'percentile': 90}}, got {hp!r}")
        det_registry.get(name).resolve(hp)  # bad names/values fail before any compute
    dirs = [models.resolve_model_dir(d, verbose=cfg.progress) for d in cfg.models]
    manifests, fingerprints = [], []
    for d in dirs:
        m = models.read_manifest(d)
        if int(m["num_classes"]) != bench.num_classes:
            raise ValueError(
                f"checkpoint {d!r} has {m['num_classes']} classes but benchmark "
                f"{bench.name!r} has {bench.num_classes}; use a model trained on its ID classes"
            )
        manifests.append(m)
        loaded = models.load(d)
        fingerprints.append(model_identity(loaded))
        check_given_fit_dim(cfg.hparams, model_feature_dim(loaded), d)
    out = results_folder(cfg, bench, manifests, fingerprints)
    fsutil.check_writable(out)
    fsutil.check_writable(cfg.cache_dir or os.path.join(cfg.out_dir, "cache"))
    store = ResultStore(out, bench.name, [{"dir": d, "fingerprint": f}
                                          for d, f in zip(dirs, fingerprints)])
    return Plan(bench, dirs, fingerprints, out, store)


@dataclasses.dataclass
class RunContext:
    """One run (model) opened on the benchmark: its data store and detectors."""

    loaded: Any
    opened: Any
    store: DataStore
    dets: list[Detector]
    id_keys: list[str]
    acc: float
    extract_s: float


def open_run(cfg: BenchConfig, plan: Plan, r: int, cache, mesh, procs=None) -> RunContext:
    """Loads run ``r``'s model, opens (and verifies) the data, selects the detectors, measures
    ACC."""
    timer = StageTimes()
    with timer.stage("open"):  # loading, list verification, ID-test features + ACC
        return _open_run(cfg, plan, r, cache, mesh, procs, timer)


def _open_run(cfg, plan, r, cache, mesh, procs, timer) -> RunContext:
    t0 = time.perf_counter()
    bench, model_dir = plan.bench, plan.model_dirs[r]
    loaded = models.load(model_dir, expected_num_classes=bench.num_classes)
    if loaded.preprocess is None and bench.preprocess is None:
        raise ValueError(f"{model_dir}: manifest has no 'preprocess' spec; cannot prepare images")

    def open_(need_train):
        return benchmarks.open_benchmark(
            bench, cfg.data_root, loaded.preprocess, need_train=need_train, csid=cfg.fsood,
            checksums=cfg.checksums, strict_counts=cfg.strict_counts,
        )

    opened = open_(False)
    sample_shape = opened.id_val.batch(0, 1).shape[1:]
    dets = det_registry.select(cfg.detectors, model_capabilities(
        loaded.model, loaded.variables, sample_shape))
    if any("train" in d.fit_splits for d in dets):
        opened = open_(True)
    # Feature maps are extracted in the same network pass as logits/features for every
    # split a feature-map detector reads (ID-train only if it fits on train).
    map_splits = set()
    for d in dets:
        if "feature_map" in d.needs:
            map_splits |= splits_read(d, opened.all_sources())
    store = DataStore(opened, loaded, cache, batch_size=cfg.batch_size, mesh=mesh,
                      progress=cfg.progress, map_splits=map_splits, processes=procs, timer=timer,
                      sample_shape=sample_shape)
    for d in dets:  # before any features pass, so those passes can carry the extracts
        if d.extract_features is not None and to_compute(cfg, plan, r, opened, d):
            share_forward(cfg, store, opened, d)
    id_keys = ["id_test"] + ([f"csid/{n}" for n in opened.csid] if cfg.fsood else [])
    id_labels = np.concatenate([store.labels(k) for k in id_keys])
    id_logits = np.concatenate([np.asarray(store.base(k)["logits"]) for k in id_keys])
    acc = metrics.accuracy(np.argmax(id_logits, -1), id_labels)
    return RunContext(loaded, opened, store, dets, id_keys, acc, time.perf_counter() - t0)


def share_forward(cfg: BenchConfig, store: DataStore, opened, det: Detector) -> None:
    """Has the features pass of every split ``det`` reads compute its extract too (at its
    grid's first extract setting): one decode and one clean forward per image."""
    overrides = _overrides(cfg, opened, det)
    try:
        grid = DetectorRun(det, store, overrides, cfg.fit_images_mb).grid(cfg.aps)
    except ValueError:  # recorded as this detector's failure when it runs
        return
    store.share_forward(det, grid[0].extract, sorted(splits_read(det, opened.all_sources())))


def to_compute(cfg: BenchConfig, plan: Plan, r: int, opened, det: Detector) -> bool:
    """False when ``det``'s result for run ``r`` is stored with the same settings (resume)."""
    settings = settings_of(cfg, det, _overrides(cfg, opened, det))
    return cfg.rerun or not plan.results.done(det.name, r, settings)


def settings_of(cfg: BenchConfig, det: Detector, overrides) -> dict:
    """What a stored result depends on besides the model and data: a result computed with the
    same settings is reused (resume) unless ``cfg.rerun``."""
    return plain({
        "detector_version": det.version, "aps": cfg.aps, "fsood": cfg.fsood,
        "overrides": dict(overrides), "jaxood_version": __version__,
    })


def run_detector(cfg: BenchConfig, ctx: RunContext, det: Detector, r: int, plan: Plan):
    """APS, evaluation, the fitted detector and the stored result of one detector; returns
    this run's scores (for plots)."""
    t1 = time.perf_counter()
    overrides = _overrides(cfg, ctx.opened, det)
    dr = DetectorRun(det, ctx.store, overrides, cfg.fit_images_mb)
    timer = ctx.store.timer  # APS / evaluation time excludes the network passes they trigger
    with timer.stage(f"aps/{det.name}"):
        found = dr.search(cfg.aps)
    point = found.best
    with timer.stage(f"evaluate/{det.name}"):  # test-set scores (metrics: a nested stage)
        row, run_scores = _evaluate(dr, ctx.store, ctx.opened, ctx.id_keys, point, ctx.acc)
    if cfg.save_detectors:
        with timer.stage(f"save_fitted/{det.name}"):
            save_fitted(dr, ctx.loaded, point,
                        os.path.join(plan.out_dir, "fitted", det.name, f"run{r}"))
    aps_entry = {
        "chosen": dict(point), "aps_auroc": found.best_auroc,
        "grid": [{"hparams": dict(p), "auroc": a} for p, a in found.table],
    }
    d = ctx.store.feature_dim
    adapted = det_registry.dim_adapted(det, d)
    if adapted:
        aps_entry["adapted_grid"] = {"feature_dim": d, "published": {
            k: det.hparams[k].sweep for k in adapted}, "used": adapted}
        if cfg.progress:
            print(f"[run {r}] {det.name}: published grid does not fit D = {d}; using {adapted}")
    seconds = time.perf_counter() - t1
    with timer.stage("write_results"):
        plan.results.put(det.name, r, row=row, aps=aps_entry,
                         settings=settings_of(cfg, det, overrides), seconds=seconds)
    if cfg.progress:
        summary = "  ".join(
            f"{g} AUROC {row[f'{g}ood']['AUROC']:6.2f}" for g in ("near", "far") if f"{g}ood" in row
        )
        print(f"[run {r}] {det.name:<14} {summary}  ({seconds:.1f}s)", flush=True)
    return run_scores


def _overrides(cfg: BenchConfig, opened, det: Detector) -> dict:
    return {**det_registry.model_hparams(det, opened.id_val.spec), **cfg.hparams.get(det.name, {})}


def prefetch(cfg: BenchConfig, ctx: RunContext, det: Detector) -> None:
    """Every network pass a detector will need (features, extras at each APS point, network
    scores), so a multi-host run shares them out; APS of network detectors runs here too, on
    every process alike from the shared cached val scores, to agree on the test passes."""
    dr = DetectorRun(det, ctx.store, _overrides(cfg, ctx.opened, det), cfg.fit_images_mb)
    splits = ["id_val", "ood_val", *ctx.id_keys, *(FIT_SPLITS[s] for s in det.fit_splits)]
    splits += [f"{g}/{n}" for g in ("near", "far") for n in getattr(ctx.opened, g)]
    settings = {}
    for point in dr.grid(cfg.aps):  # one pass per distinct extract setting
        settings.setdefault(tuple(point.extract.items()), point)
    for point in settings.values():
        for split in dict.fromkeys(splits):
            dr.arrays(split, point)
    if det.needs_network:
        best = dr.search(cfg.aps).best
        tests = [*ctx.id_keys, *(f"{g}/{n}" for g in ("near", "far") for n in getattr(ctx.opened, g))]
        for split in tests:
            dr.score(split, best)


def distributed_extraction(cfg: BenchConfig, plan: Plan, cache, mesh, procs: Processes):
    """Multi-host phase: every process computes its shards of every network pass into the
    shared cache. Returns the opened runs (process 0 continues with them)."""
    contexts = []
    with exit_promptly_when_a_peer_dies():
        for r in range(len(plan.model_dirs)):
            ctx = open_run(cfg, plan, r, cache, mesh, procs)
            for det in ctx.dets:
                if to_compute(cfg, plan, r, ctx.opened, det):
                    try:
                        prefetch(cfg, ctx, det)
                    except ValueError as e:  # the same on every process; recorded later
                        print(f"[run {r}] {det.name}: prefetch failed ({e})", flush=True)
            contexts.append(ctx)
        procs.barrier("jaxood bench: extraction done")
    for ctx in contexts:
        ctx.store.processes = Processes()
    if cfg.progress:
        print(f"process {procs.index}: network passes done ({procs.count} processes)", flush=True)
    return contexts


def run(cfg: BenchConfig) -> BenchResult | None:
    """Runs a benchmark end to end, merging into the folder's result store (see module
    docstring). Detectors already stored with the same settings are skipped (resume).

    With ``cfg.distributed`` (after ``jaxood.distributed.initialize``), the network passes are
    shared out over the processes (:func:`distributed_extraction`), then process 0 does the
    fits, APS, metrics and files; the other processes return ``None``.
    """
    t_start = time.perf_counter()
    procs = Processes.current() if cfg.distributed else Processes()
    plan = prepare(cfg)
    cache = FeatureCache(cfg.cache_dir or os.path.join(cfg.out_dir, "cache"))
    mesh = parallel.data_mesh()
    contexts = None
    if procs.count > 1:
        done = procs.done_marker(plan.out_dir)
        contexts = distributed_extraction(cfg, plan, cache, mesh, procs)
        if not procs.is_main:
            done.wait()  # stay in the cluster until process 0 has written everything
            return None
        with done.signal_when_finished():
            return _finish(cfg, plan, cache, mesh, contexts, t_start)
    return _finish(cfg, plan, cache, mesh, contexts, t_start)


def _finish(cfg, plan, cache, mesh, contexts, t_start) -> BenchResult:
    """Fits, APS, metrics, fitted detectors and result files (process 0 of a multi-host run)."""
    scores, timings, failed, computed, skipped = {}, [], {}, [], []
    passes = 0
    for r, model_dir in enumerate(plan.model_dirs):
        ctx = contexts[r] if contexts else open_run(cfg, plan, r, cache, mesh)
        det_times = {}
        for det in ctx.dets:
            if not to_compute(cfg, plan, r, ctx.opened, det):
                skipped.append(det.name)
                continue
            t1 = time.perf_counter()
            try:
                run_scores = run_detector(cfg, ctx, det, r, plan)
            except Exception as e:  # one broken detector must not lose the whole table
                if cfg.strict:
                    raise
                msg = f"{type(e).__name__}: {e}".splitlines()[0][:300]
                failed.setdefault(det.name, msg)
                print(f"[run {r}] {det.name}: FAILED ({msg})", flush=True)
                continue
            computed.append(det.name)
            det_times[det.name] = time.perf_counter() - t1
            if r == 0 and (cfg.plot_detectors is None or det.name in cfg.plot_detectors):
                scores[det.name] = run_scores
        passes += ctx.store.network_passes
        timings.append({"model": model_dir, "extract_and_acc_s": ctx.extract_s,
                        "detectors_s": det_times, "stages": ctx.store.timer.to_dict()})
    t_report = time.perf_counter()
    # Under the store's lock: the tables are written from the store as it is now, so a run
    # into the same folder that finished meanwhile is in them, never overwritten by a stale one.
    with locked(plan.results.path):
        plan.results.reload()
        result = report.bench_result(plan.results, plan.bench, plan.out_dir, plan.model_dirs,
                                     scores, {
            "computed": sorted(set(computed)), "skipped": sorted(set(skipped)),
            "devices": int(mesh.devices.size), "fsood": cfg.fsood, "network_passes": passes,
            "failed": failed, "timings": timings, "total_s": time.perf_counter() - t_start})
        report.write_all(result, plots=cfg.plots)
    plan.results.log({"detectors": sorted(set(computed)), "skipped": sorted(set(skipped)),
                      "failed": failed, "models": plan.model_dirs,
                      "jaxood_version": result.info["jaxood_version"],
                      "stages": [t["stages"] for t in timings],
                      "write_report_s": round(time.perf_counter() - t_report, 4),
                      "total_s": round(time.perf_counter() - t_start, 4)})
    if cfg.progress:
        print(report.markdown(result, per_dataset=cfg.print_per_dataset))
    return result


def _evaluate(dr: DetectorRun, store: DataStore, opened, id_keys, point, acc):
    """Per-OOD-set metrics (+ near/far means) for one detector at ``point``."""
    row: dict[str, dict] = {}
    run_scores: dict[str, np.ndarray] = {}
    id_scores = None
    if not dr.det.stream:
        id_scores = np.concatenate([dr.score(k, point) for k in id_keys])
        run_scores["id"] = id_scores
    for group in ("near", "far"):
        names = list(getattr(opened, group))
        for name in names:
            key = f"{group}/{name}"
            if dr.det.stream:
                # The stream re-mixes ID with each OOD set, so ID scores differ per set.
                s_id, s_ood = dr.score_stream(id_keys, key, point)
                run_scores.setdefault("id", s_id)
            else:
                s_id, s_ood = id_scores, dr.score(key, point)
            with store.timer.stage(f"metrics/{dr.det.name}"):
                m = metrics.compute_all_metrics(s_id, s_ood, acc)
            row[name] = dict(zip(METRIC_NAMES, m))
            run_scores[key] = s_ood
        if names:  # a benchmark may have no near (or no far) sets: no summary row then
            row[f"{group}ood"] = {
                k: float(np.mean([row[n][k] for n in names])) for k in METRIC_NAMES
            }
    return row, run_scores
