"""EfficientNetV2-L: Flax model + torchvision conversion against torchvision itself.

The reference is ``torchvision.models.efficientnet_v2_l(weights=None)`` with random weights
and random BatchNorm statistics (nothing is downloaded). Logits, the pooled feature, the
feature map and the stem/stage outputs must agree to 1e-4 relative to their scale. A tiny
custom configuration (built with torchvision's own ``EfficientNet`` class) additionally covers
the expansion-free MBConv layout and training-mode BatchNorm.
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxood.convert.common import StateDict
from jaxood.models import create, efficientnet

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

pytestmark = pytest.mark.slow
ARCH = "efficientnet_v2_l"
RTOL = 1e-4  # max|jax - torch| / max|torch|
# 72 -> 36 -> 18 -> 9 -> 5 -> 3: strided convs also see odd sizes (floor in the output size).
SIZE = 72
STAGES = ["stem", *[f"stage{i}" for i in range(1, 8)]]


def _randomise_bn(model, seed: int) -> None:
    """Non-trivial BN affine params and running stats, so a BN mix-up cannot go unnoticed."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.2)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
                # Small variances make the eps (1e-3 for V2) matter.
                m.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.05)


def _calibrate_bn(model, x, seed: int) -> None:
    """Random BN affine params; running stats = perturbed statistics of each BN's input on ``x``.

    With random weights and arbitrary running statistics the 79-block residual stream of
    EfficientNetV2-L grows to ~1e13, where float32 rounding (not the conversion) dominates the
    comparison. Setting each BN's statistics from its actual input (in order, in one eval
    forward, so every BN sees the already-calibrated layers before it) keeps activations O(1).
    The perturbation keeps the statistics distinct from the batch statistics, so an
    implementation that used batch statistics in inference would fail. (BN eps is checked by
    the tiny model below, whose small running variances make it matter.)
    """
    g = torch.Generator().manual_seed(seed)
    # Small residual branches keep the deep residual stream well-conditioned (close to
    # identity), so float32 rounding stays far below the tolerance.
    last_bns = {
        id(block.block[-1][1])
        for stage in model.features[1:-1]
        for block in stage
        if block.use_res_connect
    }

    def pre_hook(bn, args):
        n = bn.num_features
        mean = args[0].mean(dim=(0, 2, 3))
        var = args[0].var(dim=(0, 2, 3), unbiased=False)
        gamma = torch.rand(n, generator=g) * 0.5 + 0.5
        bn.weight.copy_(gamma * 0.2 if id(bn) in last_bns else gamma)
        bn.bias.copy_(torch.randn(n, generator=g) * 0.2)
        bn.running_mean.copy_(mean + 0.2 * var.sqrt() * torch.randn(n, generator=g))
        bn.running_var.copy_(var * (torch.rand(n, generator=g) * 0.6 + 0.7))

    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    hooks = [bn.register_forward_pre_hook(pre_hook) for bn in bns]
    with torch.no_grad():
        model.eval()(x)
    for h in hooks:
        h.remove()


def _rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max() / np.abs(b).max())


def _nhwc(t) -> np.ndarray:
    return t.detach().numpy().transpose(0, 2, 3, 1)


def _torch_outputs(model, x, stage_modules):
    """Logits, pooled feature and NHWC stage outputs of a torchvision EfficientNet."""
    ref = {}
    hooks = [
        mod.register_forward_hook(lambda _m, _i, out, name=name: ref.__setitem__(name, out))
        for name, mod in {**stage_modules, "pool": model.avgpool}.items()
    ]
    with torch.no_grad():
        logits = model(x)
    for h in hooks:
        h.remove()
    return {
        "logits": logits.numpy(),
        "feature": ref["pool"].flatten(1).numpy(),
        **{k: _nhwc(ref[k]) for k in stage_modules},
    }


@pytest.fixture(scope="module")
def torch_model():
    """(model, state_dict, input NHWC, reference outputs) -- built once: init is slow."""
    torch.manual_seed(0)
    model = torchvision.models.efficientnet_v2_l(weights=None).eval()
    x = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    _calibrate_bn(model, x, seed=1)
    stage_modules = {name: model.features[i] for i, name in enumerate(STAGES)}
    stage_modules["top"] = model.features[len(STAGES)]
    ref = _torch_outputs(model, x, stage_modules)
    return model, model.state_dict(), x.numpy().transpose(0, 2, 3, 1), ref


@pytest.fixture(scope="module")
def converted(torch_model, tmp_path_factory):
    """The real user path: .pth file -> convert() -> saved directory -> load_converted()."""
    from tests.convert.parity import convert_via_file

    tmp = tmp_path_factory.mktemp("efficientnet")
    return convert_via_file(torch_model[1], ARCH, tmp, input_size=SIZE)


def _convert(state_dict, module):
    sd = StateDict(state_dict, source="test")
    variables = efficientnet.convert_torchvision(sd, module)
    sd.finish()
    return variables


def _run(module, variables, x):
    """Features, sown stage outputs and head(feature), inference mode, f32-exact."""
    with jax.default_matmul_precision("highest"):
        fn = jax.jit(lambda v, x: module.apply(v, x, mutable=["intermediates"]))
        out, state = fn(variables, jnp.asarray(x))
        head = module.apply(variables, out.feature, method=type(module).head)
    return out, {k: v[0] for k, v in state["intermediates"].items()}, head


def test_parity_with_torchvision(torch_model, converted):
    model, _, x, ref = torch_model
    _, loaded = converted
    variables = loaded.variables
    out, inter, head = _run(loaded.module, variables, x)
    # Earlier layers first, so a mismatch points at the first layer that differs.
    for name in STAGES:
        assert _rel_err(inter[name], ref[name]) < RTOL, name
    assert out.feature_map.shape == (1, 3, 3, 1280)
    assert _rel_err(out.feature_map, ref["top"]) < RTOL
    assert _rel_err(out.feature, ref["feature"]) < RTOL
    assert _rel_err(out.logits, ref["logits"]) < RTOL
    np.testing.assert_allclose(head, out.logits, rtol=1e-6, atol=1e-6)
    n_ours = sum(p.size for p in jax.tree.leaves(variables["params"]))
    assert n_ours == sum(p.numel() for p in model.parameters())


def test_wrong_architecture_is_rejected(torch_model):
    _, state_dict, _, _ = torch_model
    module = create(ARCH, 1000)
    resnet_sd = torchvision.models.resnet18(weights=None).state_dict()
    with pytest.raises(ValueError, match=r"'features\.0\.0\.weight' is missing"):
        _convert(resnet_sd, module)
    truncated = {k: v for k, v in state_dict.items() if not k.startswith("features.7.")}
    with pytest.raises(ValueError, match=r"'features\.7\.0\.block\.0\.0\.weight' is missing"):
        _convert(truncated, module)
    # EfficientNetV2-M has the same key layout for its first blocks but other widths.
    with pytest.raises(ValueError, match=r"features\.0\.0\.weight' has shape \(32, 3, 3, 3\)"):
        _convert(state_dict, efficientnet.efficientnet_v2_m(1000))
    extra = dict(state_dict, **{"aux.weight": torch.zeros(3)})
    with pytest.raises(ValueError, match=r"not mapped.*aux\.weight"):
        _convert(extra, module)


def test_wrong_num_classes_is_rejected(torch_model, converted, tmp_path):
    from jaxood.convert.torchvision import convert

    _, state_dict, _, _ = torch_model
    path, loaded = converted
    assert loaded.manifest["num_classes"] == 1000
    assert loaded.manifest["feature_dim"] == 1280
    with pytest.raises(ValueError, match="expected 10 classes"):
        convert(path, ARCH, tmp_path / "out", num_classes=10, input_size=SIZE)
    with pytest.raises(
        ValueError, match=r"'classifier\.1\.weight' has shape \(1000, 1280\), expected \(10, 1280\)"
    ):
        _convert(state_dict, create(ARCH, 10))


def _tiny_configs():
    """Tiny stages covering: fused without/with expansion, MBConv without/with expansion."""
    from torchvision.models.efficientnet import FusedMBConvConfig, MBConvConfig

    rows = [
        (True, 1, 3, 1, 16, 16, 2),
        (True, 4, 3, 2, 16, 24, 2),
        (False, 1, 3, 1, 24, 24, 2),
        (False, 4, 5, 2, 24, 32, 2),
    ]
    tv = [(FusedMBConvConfig if r[0] else MBConvConfig)(*r[1:]) for r in rows]
    return tv, tuple(efficientnet.StageConfig(*r) for r in rows)


@pytest.fixture(scope="module")
def tiny():
    """A small torchvision EfficientNet built from :func:`_tiny_configs`, and its conversion."""
    from torchvision.models.efficientnet import EfficientNet as TorchEfficientNet

    tv_cfg, cfg = _tiny_configs()
    torch.manual_seed(0)
    tv = TorchEfficientNet(
        tv_cfg,
        dropout=0.0,
        stochastic_depth_prob=0.0,
        num_classes=7,
        norm_layer=partial(torch.nn.BatchNorm2d, eps=1e-3),
        last_channel=48,
    ).eval()
    _randomise_bn(tv, seed=3)
    module = efficientnet.EfficientNet(
        stages=cfg, num_classes=7, last_channel=48, dropout_rate=0.0, stochastic_depth_prob=0.0
    )
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    return tv, module, _convert(tv.state_dict(), module), x


def test_tiny_config_inference_and_train_mode_parity(tiny):
    """General config path, plus train-mode BN (batch statistics, momentum 0.9)."""
    tv, module, variables, x = tiny
    stage_modules = {"stem": tv.features[0], "stage3": tv.features[3]}
    ref = _torch_outputs(tv, x, stage_modules)
    x_nhwc = jnp.asarray(x.numpy().transpose(0, 2, 3, 1))
    out, inter, _ = _run(module, variables, x_nhwc)
    for name in stage_modules:
        assert _rel_err(inter[name], ref[name]) < RTOL, name
    assert _rel_err(out.logits, ref["logits"]) < RTOL

    tv.train()
    with torch.no_grad():
        ref_train = tv(x).numpy()
    tv.eval()
    with jax.default_matmul_precision("highest"):
        train_fn = jax.jit(lambda v, x: module.apply(v, x, train=True, mutable=["batch_stats"]))
        out_train, state = train_fn(variables, x_nhwc)
    assert _rel_err(out_train.logits, ref_train) < 1e-3
    # Running means follow PyTorch's momentum 0.1 update (running vars differ by design:
    # PyTorch stores the unbiased batch variance, Flax the biased one).
    np.testing.assert_allclose(
        state["batch_stats"]["stem_conv"]["bn"]["mean"],
        tv.features[0][1].running_mean.numpy(),
        rtol=1e-4,
        atol=1e-5,
    )


def test_dropout_and_stochastic_depth_only_in_train_mode(tiny):
    _, module, variables, x = tiny
    module = module.clone(dropout_rate=0.5, stochastic_depth_prob=0.5)
    x = jnp.asarray(x.numpy().transpose(0, 2, 3, 1))

    @partial(jax.jit, static_argnums=1)
    def logits(key, train):
        out = module.apply(
            variables, x, train=train, mutable=["batch_stats"], rngs={"dropout": key}
        )[0]
        return out.logits

    k1, k2 = jax.random.key(1), jax.random.key(2)
    with pytest.raises(AssertionError):  # random masks differ between keys when training
        np.testing.assert_allclose(logits(k1, True), logits(k2, True), atol=1e-6)
    np.testing.assert_array_equal(logits(k1, False), logits(k2, False))


def test_stochastic_depth_drops_whole_samples_and_rescales():
    x = jnp.ones((4000, 2, 2, 3))
    y = np.asarray(efficientnet._stochastic_depth(x, 0.25, jax.random.key(0)))
    per_row = y.reshape(4000, -1)
    # Each sample is either dropped entirely or kept and scaled by 1 / (1 - p).
    kept = per_row[:, 0] != 0
    np.testing.assert_allclose(per_row[kept], 1.0 / 0.75, rtol=1e-6)
    np.testing.assert_array_equal(per_row[~kept], 0.0)
    assert abs((~kept).mean() - 0.25) < 0.03
