"""The registry of experiments: name -> ``module:function``, the paper item and its claim.

The experiment modules are imported by name when one runs (:meth:`Experiment.function`), so
listing the experiments imports none of them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import NamedTuple

from jaxood.analyses.common import Context
from jaxood.analyses.output import Outcome


class Experiment(NamedTuple):
    """One analysis: ``module:function`` run lazily, the paper item and its claim.

    ``kind``: ``"features"`` (cached default features only), ``"perturb"`` (new extraction
    passes on a fixed subset), ``"bench"`` (runner tables) or ``"standalone"`` (no model).
    """

    name: str
    paper: str
    title: str
    claim: str
    kind: str
    target: str

    def function(self) -> Callable[[Context], Outcome]:
        module, func = self.target.split(":")
        return getattr(importlib.import_module(f"jaxood.analyses.{module}"), func)


_E = Experiment
EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in (
    _E("headline", "Tables 1/5", "Headline table: MSP, EBO, ReAct, SCALE, AdaSCALE-A/L, KNN, MDS, "
       "OODD over all models (mean ± std)", "AdaSCALE-A/L give the best near- and far-OOD "
       "AUROC", "bench", "bench_tables:headline"),
    _E("fig3_shift", "Fig. 3", "Activation shift |a - a^eps| by clean activation rank, ID vs OOD",
       "the shift at the highest-ranked activations is larger for OOD than for ID",
       "features", "activations:shift_by_rank"),
    _E("fig4_q_ratio", "Fig. 4", "Q_OOD/Q_ID and Q'_OOD/Q'_ID per OOD set",
       "Q is higher for OOD than ID (ratio > 1) on the OOD sets", "features",
       "activations:q_ratio"),
    _E("fig5_perturbed", "Fig. 5", "Perturbed activation a^eps by clean activation rank, ID vs "
       "OOD", "perturbed activations are higher for ID than OOD, most at the top ranks",
       "features", "activations:perturbed_by_rank"),
    _E("fig6a_k1k2", "Fig. 6a", "k1 x k2 heatmap of validation AUROC", "k1 ~ 1 % and k2 ~ 5 % "
       "are near-optimal and k1 matters more than k2", "features", "sensitivity:k1_k2"),
    _E("fig6b_lambda", "Fig. 6b", "lambda sensitivity (near/far FPR@95)",
       "FPR@95 is lowest near lambda = 10", "features", "sensitivity:lmbda"),
    _E("table6_qprime", "Table 6", "Forms of Q': Q; C_o; lambda Q + C_o; sum max_k(a); "
       "lambda Q + sum max_k(a)", "lambda Q + C_o is best and Q is the critical component",
       "features", "qforms:q_forms"),
    _E("fig7_pgrid", "Fig. 7", "p_min x p_max grid (diagonal = SCALE)", "adaptive percentiles "
       "(off-diagonal) beat every fixed percentile (diagonal)", "features", "pgrid:p_grid"),
    _E("table7_nval", "Table 7", "eCDF fitted on n_val ID-val samples (random draws)",
       "as few as 10 ID samples suffice (metrics barely change with n_val)", "features",
       "nval:n_val"),
    _E("table9_region", "Table 9", "Perturbation region x o (fixed subset per split)",
       "perturbing trivial (lowest |grad|) elements at o = 5 % is best; random small regions "
       "are close", "perturb", "perturbation:region"),
    _E("table10_eps", "Table 10", "Perturbation size eps (fixed subset per split)",
       "eps ~ 0.5 is best", "perturb", "perturbation:epsilon"),
    _E("table11_latency", "Table 11", "Latency of fixed (SCALE) vs variable (AdaSCALE) "
       "percentile, post-feature arithmetic, jitted", "variable percentile costs a few times "
       "more and the ratio falls as D grows", "standalone", "latency:latency"),
    _E("table4_training", "Table 4", "Training methods (CE, LogitNorm, ELogitNorm, CE + ISH) x "
       "EBO, SCALE, AdaSCALE-A/L", "AdaSCALE keeps its advantage over SCALE after regularised "
       "training", "bench", "bench_tables:training_methods"),
    _E("stability", "beyond the paper", "Score stability: input jitter and float32 vs "
       "float64 attribution (selected elements, scores, decisions; fixed subset per split)",
       "not a claim of the paper: which elements AdaSCALE perturbs, and so its score, depends "
       "on float32 rounding and on tiny input changes", "perturb",
       "stability:score_stability"),
    _E("table3_fsood", "Table 3", "Full-spectrum OOD (ID test + covariate-shifted ID sets)",
       "FS-OOD is much harder for every method; AdaSCALE stays best", "bench",
       "bench_tables:full_spectrum"),
)}


def names() -> list[str]:
    return list(EXPERIMENTS)


def get(name: str) -> Experiment:
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; valid names: {', '.join(EXPERIMENTS)}")
    return EXPERIMENTS[name]
