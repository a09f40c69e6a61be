"""Score stability of AdaSCALE (beyond the paper): how much the score depends on which input
elements the float32 attribution happens to pick.

AdaSCALE perturbs the ``o = 5 %`` input elements with the smallest ``|gradient|``. Near ReLU
kinks a float32 gradient is ill-conditioned, so a tiny change of the input, or another correct
implementation of the same network, can pick other elements and move the score. On a fixed
random subset of every split (``ctx.subset`` images, seed ``ctx.seed``) and on every model,
four extraction passes per batch (not cached: the network run is what it measures):

* ``float32``: the method as published; ``float32 + jitter``: the same inputs plus Gaussian
  noise of std ``jitter`` (option, default 1e-6, in normalised input units);
* ``float64`` and ``float64 + jitter``: the attribution in float64 (``attribution_dtype``).

Three comparisons, each per split group (ID test, all OOD sets pooled): the share of selected
elements that change, the share of samples with any change, the score change (median, max,
relative to the score), and the decisions that flip at the 95 %-TPR threshold on ID-val. The
jitter comparisons score both sides with the detector fitted on clean ID-val; ``float64 vs
float32`` fits each side on its own ID-val (as each would be deployed). The APS pair is chosen
on the float32 features. A model whose float64 gradient cannot be compiled (flax's max pooling
in JAX 0.10, see ``adascale.input_gradient``) gets the float32 comparison only, with the reason in
the settings. Options: ``jitter``.
"""

from __future__ import annotations

import time

import jax.numpy as jnp
import numpy as np

from jaxood import scoring
from jaxood.analyses import verdicts as V
from jaxood.analyses.common import AdaScorer, Context, RunData, base_percentile, fit_stats
from jaxood.analyses.output import Outcome, Table, aggregate, per_run_metrics
from jaxood.detectors import adascale

JITTER = 1e-6
#: ``name -> (attribution dtype, jittered)`` of the extraction passes.
PASSES = {"float32": ("float32", False), "float32 + jitter": ("float32", True),
          "float64": ("float64", False), "float64 + jitter": ("float64", True)}
#: ``name -> (reference pass, compared pass, compared side refitted on its own ID-val)``.
COMPARISONS = {"input jitter, float32": ("float32", "float32 + jitter", False),
               "float64 vs float32 attribution": ("float32", "float64", True),
               "input jitter, float64": ("float64", "float64 + jitter", False)}
COLUMNS = ["selected changed %", "samples changed %", "median |Δscore|", "max |Δscore|",
           "median |Δscore|/|score| %", "decision flips", "decision flips %"]


def _pass(model, variables, x, *, dtype: str):
    """``(f [B, D], f~ [B, D], selected [B, N])`` of images ``x`` at the detector's default
    ``o``, ``eps`` and ``region`` with the attribution in ``dtype``."""
    hp = adascale.DEFAULTS
    feats, grad = adascale.input_gradient(model, variables, x, dtype)
    mask = adascale.selected_elements(grad, x, o=hp["o"], region=hp["region"])
    x_tilde = adascale.perturbed_input(x, grad, mask, hp["eps"])
    return feats.feature, model.features(variables, x_tilde).feature, mask


def _pass_program(model, dtype: str):
    """jitted ``(variables, x) -> _pass(...)``: one program per model and ``dtype``."""
    return scoring.model_program(_pass, model, (("dtype", dtype),))


def float64_unavailable(run: RunData, source) -> str | None:
    """Why the float64 attribution cannot run for this model (``None`` when it can)."""
    x = np.asarray(source.batch(0, 1), np.float32)
    try:
        _pass_program(run.model, "float64").lower(run.variables, jnp.asarray(x))
    except ValueError as e:
        return str(e)
    return None


def _extract(run: RunData, source, jitter: float, seed: int, batch: int,
             passes: dict, comparisons: dict) -> dict:
    """``{pass: (f, f~)}`` of one split and ``{comparison: [N] changed share}`` of its masks."""
    noise_rng = np.random.default_rng(seed)
    out = {p: ([], []) for p in passes}
    changed = {c: [] for c in comparisons}
    for start in range(0, len(source), batch):
        x = np.asarray(source.batch(start, min(start + batch, len(source))), np.float32)
        xj = (x + noise_rng.normal(0.0, jitter, x.shape)).astype(np.float32)
        masks = {}
        for name, (dtype, jittered) in passes.items():
            f, ft, mask = _pass_program(run.model, dtype)(run.variables,
                                                          jnp.asarray(xj if jittered else x))
            out[name][0].append(np.asarray(f))
            out[name][1].append(np.asarray(ft))
            masks[name] = np.asarray(mask)
        for comp, (a, b, _) in comparisons.items():
            m = np.maximum(masks[a].sum(1), 1)
            changed[comp].append((masks[a] != masks[b]).sum(1) / (2.0 * m))
    arrays = {p: (np.concatenate(f), np.concatenate(ft)) for p, (f, ft) in out.items()}
    return arrays, {c: np.concatenate(v) for c, v in changed.items()}


def _threshold(id_val_scores: np.ndarray) -> float:
    """The score keeping 95 % of ID-val (higher = more ID)."""
    return float(np.quantile(id_val_scores, 0.05))


def _compare(ref: np.ndarray, other: np.ndarray, thr: tuple[float, float],
             changed: np.ndarray) -> dict:
    d = np.abs(other - ref)
    flips = (ref >= thr[0]) != (other >= thr[1])
    return {"selected changed %": 100.0 * float(changed.mean()),
            "samples changed %": 100.0 * float((changed > 0).mean()),
            "median |Δscore|": float(np.median(d)), "max |Δscore|": float(d.max()),
            "median |Δscore|/|score| %": 100.0 * float(np.median(d / np.maximum(np.abs(ref),
                                                                               1e-12))),
            "decision flips": int(flips.sum()), "decision flips %": 100.0 * float(flips.mean())}


def _run_rows(ctx: Context, i: int, model: str, jitter: float) -> tuple[list[dict], dict]:
    run = ctx.run_data(model, subset=ctx.subset)
    splits = ["id_val", "ood_val", "id_test", *run.ood_sets]
    sources = run.opened.all_sources()
    no64 = float64_unavailable(run, sources["id_val"])
    passes = {p: v for p, v in PASSES.items() if no64 is None or v[0] == "float32"}
    comparisons = {c: v for c, v in COMPARISONS.items() if v[0] in passes and v[1] in passes}
    if no64 is not None:
        ctx.log(f"  stability: float64 attribution skipped: {no64}")
    per_pass, changed, t0 = {p: {} for p in passes}, {}, time.perf_counter()
    for k, split in enumerate(splits):
        arrays, ch = _extract(run, sources[split], jitter, ctx.seed + 7919 * k, ctx.batch_size,
                              passes, comparisons)
        for p in passes:
            per_pass[p][split] = arrays[p]
        changed[split] = ch
    wall = time.perf_counter() - t0
    ctx.network_passes += len(passes) * len(splits)
    scorers = {p: AdaScorer(run, per_pass[p]) for p in passes}
    stats = {dt: fit_stats(*per_pass[dt]["id_val"]) for dt in ("float32", "float64")
             if dt in passes}
    pair, source = base_percentile(ctx, scorers["float32"], stats["float32"])
    rows = []
    for comp, (a, b, refit) in comparisons.items():
        sa, sb = stats[PASSES[a][0]], stats[PASSES[b][0] if refit else PASSES[a][0]]
        score = {p: {s: scorers[p].scores(st, [pair], s)[0] for s in splits}
                 for p, st in ((a, sa), (b, sb))}
        thr = (_threshold(score[a]["id_val"]), _threshold(score[b]["id_val"]))
        for group, keys in (("ID test", ["id_test"]), ("OOD (all sets)", run.ood_sets)):
            ref = np.concatenate([score[a][s] for s in keys])
            other = np.concatenate([score[b][s] for s in keys])
            ch = np.concatenate([changed[s][comp] for s in keys])
            rows.append({"comparison": comp, "split": group, "run": i,
                         **_compare(ref, other, thr, ch)})
    return rows, {"model": model, "percentile": pair, "source": source,
                  "float64_unavailable": no64,
                  f"extraction_wall_s ({len(passes)} passes, shared machine)": wall,
                  "subset_sizes": run.sizes()}


def score_stability(ctx: Context):
    """Score stability under input jitter and float32 vs float64 attribution."""
    jitter = float(ctx.option("jitter", JITTER))
    rows, info = [], []
    for i, model in enumerate(ctx.models):
        more, run_info = _run_rows(ctx, i, model, jitter)
        rows += more
        info.append(run_info)
    table = Table("stability", f"AdaSCALE-A score changes (input jitter std {jitter:g}; "
                  "float64 attribution)", ["comparison", "split"], COLUMNS, rows,
                  "selected changed: share of the perturbed elements that differ; flips at the "
                  "95 %-TPR threshold on ID-val. Mean ± std over runs.", digits=4)
    f64 = "float64 vs float32 attribution"
    verdicts = [V.above(
        f"beyond the paper: float32 rounding changes which elements are perturbed ({split})",
        "not in the paper", per_run_metrics(rows, ["selected changed %"], comparison=f64,
                                            split=split)["selected changed %"], 0.0,
        metric="selected changed % (float64 vs float32)") for split in ("ID test",
                                                                      "OOD (all sets)")
        if any(r["comparison"] == f64 for r in rows)]
    return Outcome([table], {"jitter": jitter, "o": 0.05, "eps": 0.5, "region": "trivial",
                             "subset": ctx.subset, "threshold": "95 % TPR on ID-val",
                             "per_run": info}, {"rows": aggregate(table).rows}, [], {},
                   verdicts)
