"""AdaSCALE-A in jaxood beside a PyTorch AdaSCALE written after OpenOOD's postprocessor
(issue 18, item 4).

The PyTorch side is the reference of ``tests/detectors/test_adascale.py`` (``ref_fit`` /
``ref_score``, written step by step after OpenOOD's ``AdaScalePostprocessor`` and
``ada_scale``; spec-adascale-openood.md §1): the gradient of each sample's predicted-class
raw logit w.r.t. the normalised input, the ``int(C*H*W*o)`` lowest-|G| elements moved by
``+0.5 sign(G)``, the perturbed forward under ``no_grad``, Q' = lambda * (shift over the
top-1 % activations) + (ReLU of the perturbed ones over the top-5 %), the right-continuous
eCDF on the ID-val Q' values, the adaptive percentile, ``r`` from the top-k_p ReLU
activations, and the energy of the head on ``e^r f``. The network's weights are frozen
(``requires_grad=False``: only the input gradient is computed, as in jaxood; OpenOOD leaves
them trainable and so also pays for weight gradients).

Both sides get the same weights (torch init, converted to jaxood), are fitted on the same
ID-val images and score the same batch. Before any timing:

* the clean features must agree to ``--feature-tol`` (max-normalised);
* the perturbed features to ``--perturbed-tol`` (relative L2): in float32 the two input
  gradients differ by rounding, so an element whose |G| sits at the 5 % boundary may be
  perturbed on one side and its neighbour in |G| on the other (a max-pool near-tie in
  ResNet-50 has the same effect), which moves f~ by ~1e-3;
* the post-feature arithmetic (Q', eCDF on ID-val, percentile, r, energy) must give the same
  scores to ``--score-tol`` (relative) when both sides get the same (torch) features.

A failed check stops the script. The end-to-end scores (each side with its own perturbation
and fit) are reported (max abs / rel difference, Spearman rank correlation) but not
checked: a perturbation flip can move a Q' across an eCDF step, i.e. to the neighbouring
percentile, a score several % apart, on random-init nets whose Q' values cluster tightly.
Timing goes through
``experiments/harness.py`` (quiet wait, alternating rounds, compile excluded, per-round
sgemm, loaded verdict). Networks: WRN-16-4 at 32x32 (batch 128), ResNet-50 and Swin-T at
224x224 (batch 16), random init.

  python experiments/bench_adascale_torch.py --archs wrn16_4 resnet50 swin_t --rounds 5

Results merge into ``experiments/results/bench_adascale_torch.json`` under ``<arch>``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import harness
import jax
import jax.numpy as jnp
import numpy as np
import torch
import torchvision

from jaxood import models
from jaxood.convert.torchvision import convert_state_dict
from jaxood.detectors import adascale

sys.path.insert(0, str(harness.ROOT))
sys.path.insert(0, str(harness.ROOT / "tests" / "models"))
import test_cifar_models as cifar  # noqa: E402  (the OpenOOD torch nets; one owner: the tests)

from tests.detectors.test_adascale import (  # noqa: E402
    ref_perturb,
    ref_q,
    ref_score,
    ref_score_features,
)

#: arch -> (input size, default batch)
ARCHS = {"wrn16_4": (32, 128), "resnet50": (224, 16), "swin_t": (224, 16)}
K1, K2, LMBDA, FRACTION = 1.0, 5.0, 10.0, 0.05  # the method's defaults (spec §1.6)


def nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def torchvision_features(tv, arch: str):
    """``x -> (logits, penultimate feature)`` of a torchvision ResNet-50 / Swin-T (the
    feature OpenOOD's wrappers return with ``return_feature=True``) and its head."""
    if arch == "resnet50":
        def net(x):
            x = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
            x = tv.layer4(tv.layer3(tv.layer2(tv.layer1(x))))
            f = torch.flatten(tv.avgpool(x), 1)
            return tv.fc(f), f

        return net, tv.fc

    def net(x):  # swin_t
        f = tv.flatten(tv.avgpool(tv.permute(tv.norm(tv.features(x)))))
        return tv.head(f), f

    return net, tv.head


def build(arch: str):
    """``(torch net x -> (logits, feature), torch head, jaxood Model, variables)``: one torch
    initialisation, its weights converted to jaxood."""
    torch.manual_seed(0)
    if arch == "wrn16_4":
        t = cifar.openood_wrn_init(cifar.TWRN(16, 4, 10)).eval()
        module = models.create("wrn16_4", 10)
        variables = jax.tree.map(jnp.asarray, cifar.wrn_to_flax(t))
        net, fc = (lambda x: t(x)[:2]), t.fc
        params = t.parameters()
    else:
        tv = getattr(torchvision.models, arch)().eval()
        module, variables, _ = convert_state_dict(tv.state_dict(), arch, input_size=224)
        net, fc = torchvision_features(tv, arch)
        params = tv.parameters()
    for prm in params:
        prm.requires_grad_(False)
    return net, fc, models.flax_model(module), jax.device_put(variables)


def rank_correlation(a, b) -> float | None:
    """Spearman's rho (Pearson on ranks; no ties expected in float scores); ``None`` for
    fewer than 2 samples."""
    if len(a) < 2:
        return None
    ra, rb = (np.argsort(np.argsort(v)).astype(np.float64) for v in (a, b))
    return float(np.corrcoef(ra, rb)[0, 1])


def compare_scores(got, ref, prefix: str) -> dict:
    """Max abs / rel difference and rank correlation of two score vectors."""
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    diff = np.abs(got - ref)
    return {
        f"{prefix}_max_abs_diff": float(diff.max()),
        f"{prefix}_max_rel_diff": float(np.max(diff / np.maximum(np.abs(ref), 1e-12))),
        f"{prefix}_rank_correlation": rank_correlation(got, ref),
    }


def rel_diff(got, ref, norm: str = "max") -> float:
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    if norm == "l2":
        return float(np.linalg.norm(got - ref) / np.linalg.norm(ref))
    return float(np.abs(got - ref).max() / np.abs(ref).max())


class Disagreement(RuntimeError):
    """jaxood and the PyTorch AdaSCALE do not compute the same thing."""


def check(arch: str, name: str, value: float, limit: float) -> None:
    """Raises :class:`Disagreement` when ``value`` exceeds ``limit`` (NaN always fails)."""
    if not value <= limit:
        raise Disagreement(
            f"{arch}: jaxood and the PyTorch AdaSCALE disagree: {name} = {value:.4g} > "
            f"{limit:g}; the comparison is void (fix it before timing)"
        )


def agreement(arch: str, args, net, fc, model, variables, x_val, x) -> tuple[dict, np.ndarray]:
    """The checks before timing (see the module docstring); returns the fields and the
    torch side's sorted ID-val Q' values (its fit)."""
    p_min, p_max = args.percentile
    f_val, ft_val = ref_perturb(net, nchw(x_val), FRACTION)
    f, ft = ref_perturb(net, nchw(x), FRACTION)
    feats, ft_j = jax.jit(lambda v, x: adascale.perturbed_features(model, v, x, o=FRACTION))(
        variables, jnp.asarray(x))
    out = {"feature_max_rel_diff": rel_diff(feats.feature, f),
           "perturbed_feature_l2_rel_diff": rel_diff(ft_j, ft, "l2")}
    check(arch, "clean feature max relative difference", out["feature_max_rel_diff"],
          args.feature_tol)
    check(arch, "perturbed feature relative L2 difference", out["perturbed_feature_l2_rel_diff"],
          args.perturbed_tol)
    # The post-feature arithmetic (Q', eCDF, percentile, r, energy) on identical features.
    q_sorted = np.sort(ref_q(f_val, ft_val, K1, K2, LMBDA))
    ref, _ = ref_score_features(fc, q_sorted, f, ft, variant="a", p_min=p_min, p_max=p_max)
    stats = adascale.fit_ecdf(adascale.q_statistic(f_val.numpy(), ft_val.numpy(), k1=K1, k2=K2,
                                                   lmbda=LMBDA),
                              k1=K1, k2=K2, lmbda=LMBDA, feature_dim=f.shape[1])
    got = adascale.score_from_features(model, variables, stats, f.numpy(), ft.numpy(),
                                       variant="a", percentile=(p_min, p_max))
    out.update(compare_scores(got, ref, "same_features_score"))
    check(arch, "score max relative difference on identical features",
          out["same_features_score_max_rel_diff"], args.score_tol)
    return out, q_sorted


def bench(arch: str, args) -> dict:
    size, default_batch = ARCHS[arch]
    batch = args.batch or default_batch
    net, fc, model, variables = build(arch)
    rng = np.random.default_rng(0)
    x_val = rng.standard_normal((args.val or batch, size, size, 3)).astype(np.float32)
    x = rng.standard_normal((batch, size, size, 3)).astype(np.float32)
    x_t, x_j = nchw(x), jax.device_put(x)
    p_min, p_max = args.percentile

    run = harness.Run.from_args(args)
    fields = {"arch": arch, "input": [size, size, 3], "batch": batch, "val": len(x_val),
              "percentile": [p_min, p_max], "rounds": args.rounds}
    checks, q_sorted = agreement(arch, args, net, fc, model, variables, x_val, x)
    fields.update(checks)
    stats = adascale.fit_batch(model, variables, jnp.asarray(x_val), batch_size=batch, o=FRACTION)
    score = jax.jit(lambda v, s, x: adascale.score_batch(
        model, v, s, x, variant="a", percentile=(p_min, p_max), o=FRACTION))
    t0 = time.perf_counter()
    got = np.asarray(score(variables, stats, x_j))
    fields["jaxood_compile_s"] = round(time.perf_counter() - t0, 2)
    ref, _ = ref_score(net, fc, q_sorted, x_t, variant="a", p_min=p_min, p_max=p_max, o=FRACTION)
    fields.update(compare_scores(got, ref, "score"))  # each side's own fit and perturbation

    contenders = {
        "jaxood": lambda: score(variables, stats, x_j),
        "torch": lambda: ref_score(net, fc, q_sorted, x_t, variant="a", p_min=p_min,
                                   p_max=p_max, o=FRACTION),
    }
    times = run.alternate(contenders, args.rounds, label=arch)
    fields.update(harness.compare(times, batch, "images"))
    print(json.dumps({arch: fields["ratio_jaxood_over_torch"]}), flush=True)
    return {harness.record_key(arch, args.label): run.record(fields)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--archs", nargs="+", default=list(ARCHS), choices=list(ARCHS))
    p.add_argument("--batch", type=int, default=0,
                   help="images per scored batch (0: 128 at 32x32, 16 at 224x224)")
    p.add_argument("--val", type=int, default=0, help="ID-val images for the fit (0: a batch)")
    p.add_argument("--percentile", type=float, nargs=2, default=(75.0, 85.0),
                   metavar=("P_MIN", "P_MAX"))
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--feature-tol", type=float, default=1e-4,
                   help="largest max|f_jaxood - f_torch| / max|f_torch| of the clean features")
    p.add_argument("--perturbed-tol", type=float, default=1e-2,
                   help="largest ||f~_jaxood - f~_torch|| / ||f~_torch|| of the perturbed "
                   "features (near-tie flips of the perturbed elements; see the docstring)")
    p.add_argument("--score-tol", type=float, default=1e-4,
                   help="largest |score difference| / |torch score| on identical features")
    p.add_argument("--label", default="", help="free text stored in the JSON and its keys")
    p.add_argument("--out", default="experiments/results/bench_adascale_torch.json")
    harness.add_arguments(p)
    args = p.parse_args()
    return harness.collect(args, args.out, args.archs, lambda a: bench(a, args), Disagreement)


if __name__ == "__main__":
    raise SystemExit(main())
