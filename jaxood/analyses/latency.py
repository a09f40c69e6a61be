"""Latency of a fixed (SCALE) vs a variable (AdaSCALE) percentile (paper Table 11).

Post-feature arithmetic only, jitted, compile excluded, ``block_until_ready`` on every call:

* ``scaling``: the scaling factor ``r`` from the features: SCALE's fixed-k top-k sum vs
  AdaSCALE's Q' (top-k on the clean feature), eCDF lookup, per-sample percentile and k.
* ``score``: the whole score from features, head included (K classes).

Synthetic post-ReLU features for each D (no model needed). Fixed and variable calls
alternate in rounds; the reported value is the median over rounds of the mean time per call
(``trials`` calls per function in total, fewer for slow configurations so one takes at
most ``budget_s``). Options: ``dims``, ``batch``, ``trials``, ``rounds``, ``classes``,
``kinds``, ``budget_s``.
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from jaxood.analyses import verdicts as V
from jaxood.analyses.common import Context
from jaxood.analyses.output import Outcome, Table, band, save
from jaxood.detectors import adascale, shaping
from jaxood.types import Model

DIMS = (128, 512, 1024, 2048, 3024)
#: Paper Table 11 (RTX 4090): D -> (fixed µs, variable µs).
PAPER = {128: (33, 152), 512: (40, 149), 1024: (45, 155), 2048: (48, 152), 3024: (54, 164)}
PAIR, FIXED_P = (75.0, 85.0), 85.0


def _linear_head(params, f):
    return f @ params["w"] + params["b"]


#: The synthetic classifier: a linear head of ``K`` classes on the features.
LINEAR = Model(features=None, head=_linear_head, name="linear")


# The timed programs, jitted at module level (one compilation per shape, before the timing):
# the head parameters, the fitted eCDF and the percentile pair are arguments, as in a deployed
# detector, so nothing is folded into the program as a constant. SCALE's fixed percentile
# fixes its top-k size, so it is a constant of the program.


@jax.jit
def _fixed_r(f):
    return shaping.scale_factor(f, FIXED_P)


@jax.jit
def _variable_r(stats, pair, f, ft):
    p = adascale.adaptive_percentile(stats, stats.q(f, ft), pair[0], pair[1])
    return adascale.scaling_factor(f, adascale.percentile_to_k(f.shape[-1], p))


@jax.jit
def _fixed_score(params, f):
    r = shaping.scale_factor(f, FIXED_P)
    return jax.nn.logsumexp(LINEAR.head(params, f * jnp.exp(r)[:, None]), axis=-1)


@jax.jit
def _variable_score(params, stats, pair, f, ft):
    return adascale.score_from_features(LINEAR, params, stats, f, ft, percentile=pair)


def _setup(d: int, classes: int, seed: int):
    """``(params, stats, pair)``: a random linear head and the eCDF of synthetic ID features
    of dimension ``d``."""
    rng = np.random.default_rng(seed)
    val = np.maximum(rng.normal(size=(1000, d)), 0).astype(np.float32)
    val_t = val + 0.05 * rng.normal(size=val.shape).astype(np.float32)
    stats = adascale.fit_ecdf(np.asarray(adascale.q_statistic(val, val_t)), feature_dim=d)
    stats = jax.tree.map(jnp.asarray, stats)  # on the device: no transfer per timed call
    params = {"w": jnp.asarray(rng.normal(size=(d, classes)) / np.sqrt(d), jnp.float32),
              "b": jnp.zeros((classes,), jnp.float32)}
    return params, stats, jnp.asarray(PAIR, jnp.float32)


def _calls(kind: str, setup, f, ft):
    """``((fixed_fn, args), (variable_fn, args))`` of ``kind`` on the batch ``(f, f~)``."""
    params, stats, pair = setup
    if kind == "scaling":
        return (_fixed_r, (f,)), (_variable_r, (stats, pair, f, ft))
    return (_fixed_score, (params, f)), (_variable_score, (params, stats, pair, f, ft))


def _time(calls, trials: int, rounds: int, budget_s: float):
    """Per-round mean µs per call of the two ``(fn, args)`` (alternating rounds) and the calls
    per function: ``trials``, fewer when they would take longer than ``budget_s`` in total."""
    for fn, args in calls:  # compile and warm up
        jax.block_until_ready(fn(*args))
    t0 = time.perf_counter()
    for fn, args in calls:
        for _ in range(3):
            jax.block_until_ready(fn(*args))
    per_call = (time.perf_counter() - t0) / 6
    per_round = max(1, min(trials // rounds, int(budget_s / (2 * rounds * per_call))))
    out = np.zeros((2, rounds))
    for r in range(rounds):
        for i, (fn, args) in enumerate(calls if r % 2 == 0 else calls[::-1]):
            idx = i if r % 2 == 0 else 1 - i
            t0 = time.perf_counter()
            for _ in range(per_round):
                jax.block_until_ready(fn(*args))
            out[idx, r] = 1e6 * (time.perf_counter() - t0) / per_round
    return out[0], out[1], per_round * rounds


def _verdicts(rows: list[dict], curves: dict, batch: int, dims: list[int]) -> list[dict]:
    """Costs more at every D (per-round ratios, t interval per D; fails if any D fails) and
    the ratio falls with D (Kendall trend test on the per-D median ratios)."""
    scaling = [r for r in rows if r["what"] == "scaling" and r["batch"] == batch]
    per = {f"D={d}": V.side(curves[("scaling", batch, d)][1] / curves[("scaling", batch, d)][0]
                            - 1.0) for d in dims}
    outcomes = {ev["outcome"] for ev in per.values()}
    outcome = (V.FAILS if V.FAILS in outcomes else V.HOLDS if outcomes == {V.HOLDS}
               else V.INCONCLUSIVE)
    more = V.make(f"variable percentile costs more than fixed (batch {batch}, every D)",
                  "3.0-4.7x (RTX 4090)", ", ".join(f"D={r['D']}: {r['ratio']:.2f}x"
                                                    for r in scaling), per, outcome=outcome,
                  rule="t interval of the per-round ratio - 1 at each D; fails if any D does")
    return [more, ratio_trend(rows, batch)]


def ratio_trend(rows: list[dict], batch: int) -> dict:
    """Claim "the variable/fixed ratio of the scaling step falls as D grows" (Kendall trend on
    the per-D median ratios of ``rows``)."""
    scaling = [r for r in rows if r["what"] == "scaling" and r["batch"] == batch]
    return V.trend("the ratio falls as D grows", "4.66 (D=128) -> 3.02 (D=3024)",
                   [r["D"] for r in scaling], [r["ratio"] for r in scaling], decreasing=True)


def latency(ctx: Context):
    """Table 11."""
    dims = [int(d) for d in ctx.option("dims", DIMS)]
    batches = [int(b) for b in ctx.option("batch", (1, 256))]
    trials, rounds = int(ctx.option("trials", 10000)), int(ctx.option("rounds", 20))
    classes = int(ctx.option("classes", 1000))
    budget = float(ctx.option("budget_s", 30.0))
    kinds = list(ctx.option("kinds", ("scaling", "score")))
    rows, curves = [], {}
    for d in dims:
        setup = _setup(d, classes, ctx.seed)
        for b in batches:
            rng = np.random.default_rng(ctx.seed + d + b)
            f = jnp.asarray(np.maximum(rng.normal(size=(b, d)), 0), jnp.float32)
            ft = f + 0.05 * jnp.asarray(rng.normal(size=(b, d)), jnp.float32)
            for kind in kinds:
                fixed, variable, calls = _time(_calls(kind, setup, f, ft), trials, rounds,
                                               budget)
                rows.append({"what": kind, "batch": b, "D": d, "calls": calls,
                             "fixed µs": float(np.median(fixed)),
                             "variable µs": float(np.median(variable)),
                             "ratio": float(np.median(variable) / np.median(fixed))})
                curves[(kind, b, d)] = (fixed, variable)
            ctx.log(f"  D = {d}, batch {b}: " + ", ".join(
                f"{r['what']} {r['fixed µs']:.1f} / {r['variable µs']:.1f} µs"
                for r in rows[-len(kinds):]))
    table = Table("latency", "Median µs per call (jitted, compile excluded)",
                  ["what", "batch", "D", "calls"], ["fixed µs", "variable µs", "ratio"], rows,
                  f"Up to {trials} calls per function (fewer when they would take more than "
                  f"{budget:g} s: column calls) in {rounds} alternating rounds; device "
                  f"{jax.devices()[0].platform} ({jax.devices()[0].device_kind}); "
                  f"head with {classes} classes for 'score'.")
    fig, axes = plt.subplots(1, len(batches), figsize=(3.6 * len(batches), 2.7), squeeze=False)
    for ax, b in zip(axes[0], batches):
        for kind in kinds:
            for j, name in enumerate(("fixed", "variable")):
                vals = np.array([curves[(kind, b, d)][j] for d in dims])
                band(ax, dims, vals.mean(1), vals.std(1), f"{kind}: {name}", marker="o")
        ax.set_xlabel("D", fontsize=8)
        ax.set_ylabel("µs per call (mean ± std over rounds)", fontsize=7)
        ax.set_title(f"batch {b}", fontsize=9)
        ax.legend(fontsize=6)
    plot = save(fig, os.path.join(ctx.out_dir, "table11_latency.png"))
    verdicts = _verdicts(rows, curves, batches[0], dims)
    return Outcome([table], {"dims": dims, "batch": batches, "trials": trials,
                             "rounds": rounds, "classes": classes, "budget_s": budget,
                             "percentile": list(PAIR),
                             "fixed_percentile": FIXED_P, "device": jax.devices()[0].platform,
                             "paper_table11": {str(k): list(v) for k, v in PAPER.items()}},
                   {"rows": rows}, [plot], {}, verdicts)
