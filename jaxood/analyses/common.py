"""Shared plumbing of the analyses: the settings of a run of experiments, one model opened on
a benchmark through the cached :class:`~jaxood.features.store.DataStore`, fixed
random subsets, AdaSCALE statistics and fast re-scoring from cached features, and metrics.

Everything that needs the network goes through the DataStore, so a feature computed once
(by ``jaxood bench`` or an earlier experiment) is read from the cache afterwards; only the
perturbation-changing experiments (paper Tables 9 and 10) add new extraction passes.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxood import detectors as det_registry
from jaxood import metrics, models, parallel, scoring
from jaxood.analyses import published
from jaxood.data import benchmarks
from jaxood.detectors import adascale
from jaxood.features.cache import FeatureCache
from jaxood.features.store import DataStore

#: The AdaSCALE detector whose ``extract`` (perturbed features) the analyses read.
ADASCALE = "adascale_a"


@dataclasses.dataclass
class Context:
    """Settings shared by every experiment of one invocation.

    Attributes:
      benchmark: benchmark name (``jaxood.data.benchmarks.names()``).
      models: saved-model directories (or ``jaxood train`` workdirs), one per run/seed.
        Every analysis runs on all of them: tables give mean ± population std, the JSON the
        per-run rows, the verdicts use the paired per-run differences.
      data_root: the benchmark's data root.
      out_dir: where each experiment writes ``<name>.json``, ``<name>.md`` and PNGs.
      work_dir: the runner's result store (default ``<out_dir>/work``).
      cache_dir: the feature cache (default ``<work_dir>/cache``); share it with
        ``jaxood bench --cache`` to reuse its features.
      batch_size: extraction batch.
      aps: tune with OpenOOD's APS; otherwise use the published per-benchmark defaults
        (:mod:`jaxood.analyses.published`).
      subset: images per split (fixed random subset) for experiments that re-extract.
      seed: seed of subsets and random draws.
      progress: progress bars and log lines.
      method_models: ``{label: model dir}`` for the training-method table.
      published_like: benchmark whose published defaults to borrow when none exist for
        ``benchmark`` (APS off only).
      options: per-experiment overrides, e.g. ``{"eps": [0.0, 0.5]}`` (see each module).
      command: the command line that ran the experiments (recorded).
    """

    benchmark: str
    models: Sequence[str]
    data_root: str | None = None
    out_dir: str = "runs/experiments"
    work_dir: str | None = None
    cache_dir: str | None = None
    batch_size: int = 256
    aps: bool = True
    subset: int = 2000
    seed: int = 0
    progress: bool = True
    method_models: Mapping[str, str] = dataclasses.field(default_factory=dict)
    published_like: str | None = None
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    command: str = ""
    network_passes: int = 0
    _runs: dict = dataclasses.field(default_factory=dict, repr=False)

    @property
    def work(self) -> str:
        return self.work_dir or os.path.join(self.out_dir, "work")

    @property
    def cache(self) -> str:
        return self.cache_dir or os.path.join(self.work, "cache")

    def option(self, name: str, default: Any) -> Any:
        return self.options.get(name, default)

    def log(self, msg: str) -> None:
        if self.progress:
            print(msg, flush=True)

    def run_data(self, model_dir: str, subset: int | None = None) -> RunData:
        """The (memoised) :class:`RunData` of a model, on the full splits or a subset."""
        key = (model_dir, subset)
        if key not in self._runs:
            self._runs[key] = RunData(self, model_dir, subset)
        return self._runs[key]

    def passes(self) -> int:
        """Network passes so far (runner runs + every opened DataStore)."""
        return self.network_passes + sum(r.store.network_passes for r in self._runs.values())


# --------------------------------------------------------------------------- subsets


class SubsetSource:
    """Rows ``idx`` (sorted) of a source: the extraction ``Source`` protocol."""

    def __init__(self, source, idx: np.ndarray):
        self.source, self.idx = source, np.sort(np.asarray(idx, np.int64))
        self.labels = np.asarray(source.labels)[self.idx]
        self.name = getattr(source, "name", "")

    def __len__(self) -> int:
        return len(self.idx)

    def batch(self, start: int, stop: int) -> np.ndarray:
        if isinstance(self.source, benchmarks.ArraySource):
            sub = benchmarks.ArraySource(self.source.images[self.idx[start:stop]],
                                         self.labels[start:stop], self.source.spec, self.name)
            return sub.batch(0, stop - start)
        return np.concatenate([self.source.batch(int(i), int(i) + 1)
                               for i in self.idx[start:stop]])

    def fingerprint(self) -> str:
        h = hashlib.sha256(self.source.fingerprint().encode())
        h.update(self.idx.tobytes())
        return h.hexdigest()


def subset_indices(n: int, size: int, seed: int) -> np.ndarray | None:
    """A fixed random subset of ``size`` of ``n`` rows (sorted), ``None`` when ``size >= n``."""
    if size >= n:
        return None
    return np.sort(np.random.default_rng(seed).permutation(n)[:size])


def subset_opened(opened: benchmarks.OpenedBenchmark, size: int, seed: int):
    """The benchmark with every split cut to at most ``size`` rows; splits that are already
    small stay the same source (same cache entries as the full runs)."""

    def cut(src):
        if src is None:
            return None
        idx = subset_indices(len(src), size, seed)
        return src if idx is None else SubsetSource(src, idx)

    return dataclasses.replace(
        opened,
        id_train=None,
        id_val=cut(opened.id_val),
        id_test=cut(opened.id_test),
        ood_val=cut(opened.ood_val),
        near={k: cut(v) for k, v in opened.near.items()},
        far={k: cut(v) for k, v in opened.far.items()},
        csid={k: cut(v) for k, v in opened.csid.items()},
    )


# --------------------------------------------------------------------------- one model


class RunData:
    """One model opened on the benchmark: per-split cached arrays through the pipeline's
    DataStore (same cache keys as ``jaxood bench``)."""

    def __init__(self, ctx: Context, model_dir: str, subset: int | None = None):
        bench = benchmarks.get(ctx.benchmark)
        self.model_dir = models.resolve_model_dir(model_dir, verbose=False)
        self.loaded = models.load(self.model_dir, expected_num_classes=bench.num_classes)
        opened = benchmarks.open_benchmark(
            bench, ctx.data_root, self.loaded.preprocess, need_train=False
        )
        if subset is not None:
            opened = subset_opened(opened, subset, ctx.seed)
        self.opened, self.subset = opened, subset
        self.store = DataStore(
            opened, self.loaded, FeatureCache(ctx.cache), batch_size=ctx.batch_size,
            mesh=parallel.data_mesh(), progress=ctx.progress,
        )
        self.model, self.variables = self.loaded.model, self.loaded.variables
        self.det = det_registry.get(ADASCALE)
        self.near = [f"near/{n}" for n in opened.near]
        self.far = [f"far/{n}" for n in opened.far]

    @property
    def ood_sets(self) -> list[str]:
        return self.near + self.far

    def sizes(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.opened.all_sources().items()}

    def feature(self, split: str) -> np.ndarray:
        """``[N, D]`` clean penultimate features."""
        return np.asarray(self.store.base(split)["feature"])

    def logits(self, split: str) -> np.ndarray:
        return np.asarray(self.store.base(split)["logits"])

    @property
    def feature_dim(self) -> int:
        return int(self.feature("id_val").shape[-1])

    def perturbed(self, split: str, **extract_hp) -> np.ndarray:
        """``[N, D]`` AdaSCALE's perturbed features at the extract hyperparameters
        (``o``, ``eps``, ``region``; defaults filled in)."""
        extract_kw, _, _ = self.det.split_hparams(extract_hp)
        return np.asarray(self.store.extras(self.det, split, extract_kw)["feature_perturbed"])

    def accuracy(self) -> float:
        return metrics.accuracy(np.argmax(self.logits("id_test"), -1),
                                self.store.labels("id_test"))


# --------------------------------------------------------------------------- AdaSCALE


# The programs of this section: two pure kernels (arrays, the stats pytree, static settings)
# jitted at module level, called on fixed-size padded chunks so that each compiles once per
# static setting whatever the split size or the number of percentile pairs; and AdaSCALE's
# per-split grid cache, from scoring's cache (it needs the model).


@functools.partial(jax.jit, static_argnames=("k1", "k2", "form"))
def _q_values(feature, feature_perturbed, lmbda, *, k1, k2, form):
    """``[N]`` Q' (or an ablation ``form``) of cached features (jitted)."""
    return adascale.q_statistic(feature, feature_perturbed, k1=k1, k2=k2, lmbda=lmbda, form=form)


_grid_program = jax.jit(adascale.grid_scores, static_argnames=("variant",))

#: Rows per call of the programs above (padded; padding rows are dropped).
Q_CHUNK = 4096
#: Percentile pairs per call of the grid program (padded by repeating the last pair).
PAIR_CHUNK = 8


def _row_chunks(n: int):
    """``(start, stop)`` of the :data:`Q_CHUNK`-row chunks of ``n`` rows."""
    return [(start, min(start + Q_CHUNK, n)) for start in range(0, n, Q_CHUNK)]


def _padded(arrays: Mapping[str, Any], start: int, stop: int) -> dict:
    """Rows ``start:stop`` of each float32 array, zero-padded to :data:`Q_CHUNK` rows."""
    part = {k: np.asarray(v[start:stop], np.float32) for k, v in arrays.items()}
    return parallel.pad_batch(part, Q_CHUNK)[0]


def chunked_q(feature, feature_perturbed, lmbda, *, k1, k2, form) -> np.ndarray:
    """``[N]`` Q' (or an ablation ``form``) of cached features, computed on fixed-size padded
    chunks: one compilation per static setting whatever ``N`` is."""
    n = len(feature)
    out = np.empty(n, np.float32)
    lam = jnp.float32(lmbda)
    for start, stop in _row_chunks(n):
        part = _padded({"f": feature, "ft": feature_perturbed}, start, stop)
        q = _q_values(part["f"], part["ft"], lam, k1=float(k1), k2=float(k2), form=form)
        out[start:stop] = np.asarray(q)[:stop - start]
    return out


def fit_stats(feature, feature_perturbed, *, k1=1.0, k2=5.0, lmbda=10.0,
              q_form=adascale.Q_FORMS[0], num_samples=5000, seed=0,
              flip: bool = False) -> adascale.AdaScaleStats:
    """AdaSCALE's eCDF fitted on ID-val arrays (as the detector's ``fit``; ``seed`` draws the
    ``num_samples`` subset when there are more values). ``flip`` (beyond the paper): the eCDF
    of ``-Q'``, so that ``1 - F`` becomes ``F`` of Q' (ties aside) and high Q' maps to p near
    ``p_max``; score it with an :class:`AdaScorer` made with ``flip=True``."""
    q = chunked_q(feature, feature_perturbed, lmbda, k1=k1, k2=k2, form=q_form)
    q = -q if flip else q
    return adascale.fit_ecdf(q, num_samples=num_samples, seed=seed, k1=k1, k2=k2,
                             lmbda=lmbda, feature_dim=np.shape(feature)[-1], q_form=q_form)


def _pair_chunks(percentiles) -> list[jax.Array]:
    """``percentiles [P, 2]`` as ``[PAIR_CHUNK, 2]`` float32 chunks (the last padded by
    repeating its last pair)."""
    pairs = np.asarray(percentiles, np.float32).reshape(-1, 2)
    padded = np.concatenate([pairs, np.repeat(pairs[-1:], (-len(pairs)) % PAIR_CHUNK, 0)])
    return [jnp.asarray(padded[i:i + PAIR_CHUNK]) for i in range(0, len(padded), PAIR_CHUNK)]


class AdaScorer:
    """AdaSCALE scores at many settings from one run's cached ``(f, f~)`` per split: the
    percentile- and eCDF-independent parts (sorted cumulative activations, head outputs) are
    computed once per split; each setting only recomputes Q' and the percentile mapping.
    ``flip`` (beyond the paper): score with ``-Q'``, for stats from ``fit_stats(flip=True)``."""

    def __init__(self, run: RunData, arrays: Mapping[str, tuple[np.ndarray, np.ndarray]],
                 share: AdaScorer | None = None, flip: bool = False):
        self.run, self.arrays, self.flip = run, dict(arrays), flip
        # The per-split base only depends on the clean features: scorers of other perturbed
        # features of the same run can share it (``share``).
        self._base: dict[str, list[adascale.GridCache]] = {} if share is None else share._base
        self._dummy = adascale.fit_ecdf(np.array([0.0, 1.0], np.float32))

    def base(self, split: str) -> list[adascale.GridCache]:
        """The split's :class:`~jaxood.detectors.adascale.GridCache`, cut into padded
        :data:`Q_CHUNK`-row chunks for the grid program."""
        if split not in self._base:
            f, ft = self.arrays[split]
            # On the whole split, so the head outputs are the split's own (a matmul over padded
            # chunks rounds differently): one compilation per split size, once per split.
            whole = scoring.model_program(adascale.grid_cache, self.run.model)(
                self.run.variables, self._dummy, jnp.asarray(f), jnp.asarray(ft))
            rows = {k: v for k, v in whole._asdict().items() if k != "bias"}
            self._base[split] = [
                whole._replace(**{k: jnp.asarray(v) for k, v in _padded(rows, *span).items()})
                for span in _row_chunks(len(f))]
        return self._base[split]

    def scores(self, stats, percentiles, split: str, variant: str = "a") -> np.ndarray:
        """``[P, N]`` scores of ``split`` for ``percentiles [P, 2]`` (higher = more ID)."""
        f, ft = self.arrays[split]
        q = chunked_q(f, ft, float(np.asarray(stats.lmbda)), k1=stats.k1, k2=stats.k2,
                      form=stats.q_form)
        q = -q if self.flip else q  # the eCDF of -Q' (fit_stats(flip=True))
        plain = adascale.AdaScaleStats(sorted_q=jnp.asarray(stats.sorted_q),
                                       lmbda=jnp.asarray(stats.lmbda))
        pairs = _pair_chunks(percentiles)
        out = np.empty((len(pairs) * PAIR_CHUNK, len(f)), np.float32)
        for (start, stop), cache in zip(_row_chunks(len(f)), self.base(split)):
            cache = cache._replace(q=_padded({"q": q}, start, stop)["q"])
            rows = [np.asarray(_grid_program(plain, cache, c, variant=variant)) for c in pairs]
            out[:, start:stop] = np.concatenate(rows)[:, :stop - start]
        return out[:len(np.asarray(percentiles).reshape(-1, 2))]

    def evaluate(self, stats, percentiles, variant: str = "a") -> list[dict]:
        """:func:`summary` metrics for each pair of ``percentiles``."""
        splits = [s for s in ("id_val", "ood_val", "id_test", *self.run.ood_sets)
                  if s in self.arrays]
        s = {k: self.scores(stats, percentiles, k, variant) for k in splits}
        n = len(np.asarray(percentiles).reshape(-1, 2))
        return [summary(self.run, {k: v[i] for k, v in s.items()}) for i in range(n)]


def default_arrays(run: RunData, splits: Sequence[str] | None = None, **extract_hp):
    """``{split: (f, f~)}`` for ID-val, OOD-val, ID-test and every OOD set."""
    splits = splits or ["id_val", "ood_val", "id_test", *run.ood_sets]
    return {s: (run.feature(s), run.perturbed(s, **extract_hp)) for s in splits}


def valid_pairs(d: int, pairs: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The pairs whose ``p_max`` keeps at least one of ``d`` activations."""
    # k_p = d - round_half_even(d * p / 100) must stay >= 1 (spec §1.5).
    return [tuple(p) for p in pairs if int(d - np.round(d * float(p[1]) / 100.0)) >= 1]


def aps_pick(rows: Sequence[dict], pairs: Sequence) -> tuple[tuple, float]:
    """OpenOOD's APS rule over evaluated pairs: the first strictly greater validation AUROC."""
    best, best_auroc = pairs[0], 0.0
    for pair, row in zip(pairs, rows):
        if row["val_AUROC"] > best_auroc:
            best, best_auroc = pair, row["val_AUROC"]
    return tuple(best), best_auroc


def base_percentile(ctx: Context, scorer: AdaScorer, stats, variant: str = "a"):
    """``((p_min, p_max), source)``: APS over the published grid (``ctx.aps``), else the
    published per-benchmark default (or the detector default when nothing is published)."""
    if not ctx.aps:
        hp, record = published.overrides(ctx.benchmark, scorer.run.loaded.manifest,
                                         [f"adascale_{variant}"], like=ctx.published_like)
        pair = hp.get(f"adascale_{variant}", {}).get("percentile",
                                                      adascale.HPARAMS["percentile"].default)
        return tuple(pair), record[f"adascale_{variant}"]["source"]
    pairs = valid_pairs(scorer.run.feature_dim, adascale.PERCENTILE_GRID)
    rows = scorer.evaluate(stats, pairs, variant)
    pair, auroc = aps_pick(rows, pairs)
    return pair, f"APS over the {len(pairs)}-pair grid (val AUROC {auroc:.2f})"


# --------------------------------------------------------------------------- metrics


def summary(run: RunData, scores: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Percent metrics of one scoring: validation AUROC (ID-val vs OOD-val, what APS
    maximises), near-/far-OOD FPR@95 and AUROC on the test sets (unweighted means over
    sets, OpenOOD) and per set."""
    out: dict[str, float] = {}
    if "id_val" in scores and "ood_val" in scores:
        out["val_AUROC"] = 100.0 * metrics.auroc(scores["id_val"], scores["ood_val"])
    s_id = scores["id_test"]
    for group, sets in (("near", run.near), ("far", run.far)):
        fprs, aurocs = [], []
        for key in sets:
            fprs.append(100.0 * metrics.fpr_at_95(s_id, scores[key]))
            aurocs.append(100.0 * metrics.auroc(s_id, scores[key]))
            out[f"{key}_FPR@95"], out[f"{key}_AUROC"] = fprs[-1], aurocs[-1]
        if sets:
            out[f"{group}_FPR@95"] = float(np.mean(fprs))
            out[f"{group}_AUROC"] = float(np.mean(aurocs))
    return out


#: The columns most tables report.
MAIN_METRICS = ["near_FPR@95", "near_AUROC", "far_FPR@95", "far_AUROC", "val_AUROC"]


def keep(row: Mapping[str, float], names: Sequence[str] = MAIN_METRICS) -> dict[str, float]:
    return {k: row[k] for k in names if k in row}
