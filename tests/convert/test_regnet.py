"""RegNet-Y-16GF: Flax model + torchvision conversion against torchvision itself.

The reference is ``torchvision.models.regnet_y_16gf(weights=None)`` with random weights and
random BatchNorm statistics (nothing is downloaded). Logits, the pooled feature, the feature
map and the stem/stage outputs must agree to 1e-4 relative to their scale.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxood.convert.common import StateDict
from jaxood.models import create, regnet

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

pytestmark = pytest.mark.slow
ARCH = "regnet_y_16gf"
RTOL = 1e-4  # max|jax - torch| / max|torch|
# 72 -> 36 -> 18 -> 9 -> 5 -> 3: strided convs also see odd sizes (floor in the output size).
SIZE = 72
STAGES = ["stem", "stage1", "stage2", "stage3", "stage4"]


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
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)


def _rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max() / np.abs(b).max())


def _nhwc(t) -> np.ndarray:
    return t.detach().numpy().transpose(0, 2, 3, 1)


@pytest.fixture(scope="module")
def torch_model():
    """(model, state_dict, input NCHW, reference outputs) -- built once: init is slow."""
    torch.manual_seed(0)
    model = torchvision.models.regnet_y_16gf(weights=None).eval()
    _randomise_bn(model, seed=1)
    x = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    taps = {
        "stem": model.stem,
        **{f"stage{i}": getattr(model.trunk_output, f"block{i}") for i in range(1, 5)},
        "pool": model.avgpool,
    }
    ref = {}
    hooks = [
        mod.register_forward_hook(lambda _m, _i, out, name=name: ref.__setitem__(name, out))
        for name, mod in taps.items()
    ]
    with torch.no_grad():
        ref["logits"] = model(x)
    for h in hooks:
        h.remove()
    ref = {
        "logits": ref["logits"].numpy(),
        "feature": ref["pool"].flatten(1).numpy(),
        **{k: _nhwc(ref[k]) for k in STAGES},
    }
    return model, model.state_dict(), x.numpy().transpose(0, 2, 3, 1), ref


@pytest.fixture(scope="module")
def converted(torch_model, tmp_path_factory):
    """The real user path: .pth file -> convert() -> saved directory -> load_converted()."""
    from tests.convert.parity import convert_via_file

    tmp = tmp_path_factory.mktemp("regnet")
    return convert_via_file(torch_model[1], ARCH, tmp, input_size=SIZE)


def _convert(state_dict, num_classes: int = 1000):
    module = create(ARCH, num_classes)
    sd = StateDict(state_dict, source="test")
    variables = regnet.convert_torchvision(sd, module)
    sd.finish()
    return module, variables


def _run(module, variables, x):
    """Features and the stem/stage outputs of the Flax model, inference mode, f32-exact."""
    with jax.default_matmul_precision("highest"):
        fn = jax.jit(lambda v, x: module.apply(v, x, mutable=["intermediates"]))
        out, state = fn(variables, jnp.asarray(x))
        head = module.apply(variables, out.feature, method=type(module).head)
    inter = {k: state["intermediates"][k][0] for k in STAGES}
    return out, inter, head


def test_block_params_match_torchvision():
    """Stage widths/depths/groups from the quantised-linear rule, for every RegNet-Y and some X."""
    from torchvision.models.regnet import BlockParams as TorchBlockParams

    configs = [dict(p, se_ratio=0.25) for p in regnet.REGNET_Y_PARAMS.values()]
    # RegNet-X 400MF and 16GF settings (torchvision regnet_x_400mf / regnet_x_16gf).
    configs += [
        dict(depth=22, w_0=24, w_a=24.48, w_m=2.54, group_width=16),
        dict(depth=22, w_0=216, w_a=55.59, w_m=2.1, group_width=128),
    ]
    for cfg in configs:
        ours = regnet.BlockParams.from_init_params(**cfg)
        ref = TorchBlockParams.from_init_params(**cfg)
        assert list(ours.widths) == ref.widths, cfg
        assert list(ours.depths) == ref.depths, cfg
        assert list(ours.group_widths) == ref.group_widths, cfg
        assert list(ours.strides) == ref.strides, cfg
        assert ours.se_ratio == ref.se_ratio


def test_block_params_reject_bad_settings():
    with pytest.raises(ValueError, match="invalid RegNet settings"):
        regnet.BlockParams.from_init_params(depth=4, w_0=30, w_a=10.0, w_m=2.0, group_width=8)


def test_parity_with_torchvision(torch_model, converted):
    model, _, x, ref = torch_model
    _, loaded = converted
    variables = loaded.variables
    out, inter, head = _run(loaded.module, variables, x)
    # Earlier layers first, so a mismatch points at the first layer that differs.
    for name in STAGES:
        assert _rel_err(inter[name], ref[name]) < RTOL, name
    assert out.feature_map.shape == (1, 3, 3, 3024)
    assert _rel_err(out.feature_map, ref["stage4"]) < RTOL
    assert _rel_err(out.feature, ref["feature"]) < RTOL
    assert float(jnp.min(out.feature)) >= 0.0  # post-ReLU
    assert _rel_err(out.logits, ref["logits"]) < RTOL
    np.testing.assert_allclose(head, out.logits, rtol=1e-6, atol=1e-6)
    # Parameter count agrees with torchvision's (BN running stats are not parameters).
    n_ours = sum(p.size for p in jax.tree.leaves(variables["params"]))
    assert n_ours == sum(p.numel() for p in model.parameters())


def test_wrong_architecture_is_rejected(torch_model):
    _, state_dict, _, _ = torch_model
    resnet_sd = torchvision.models.resnet18(weights=None).state_dict()
    with pytest.raises(ValueError, match=r"'stem\.0\.weight' is missing"):
        _convert(resnet_sd)
    truncated = {k: v for k, v in state_dict.items() if "block4" not in k}
    with pytest.raises(ValueError, match=r"trunk_output\.block4\.block4-0.* is missing"):
        _convert(truncated)
    extra = dict(state_dict, **{"aux.weight": torch.zeros(3)})
    with pytest.raises(ValueError, match=r"not mapped.*aux\.weight"):
        _convert(extra)


def test_wrong_num_classes_is_rejected(torch_model, converted, tmp_path):
    from jaxood.convert.torchvision import convert

    _, state_dict, _, _ = torch_model
    path, loaded = converted
    assert loaded.manifest["num_classes"] == 1000
    assert loaded.manifest["feature_dim"] == 3024
    with pytest.raises(ValueError, match="expected 10 classes"):
        convert(path, ARCH, tmp_path / "out", num_classes=10, input_size=SIZE)
    with pytest.raises(
        ValueError, match=r"'fc\.weight' has shape \(1000, 3024\), expected \(10, 3024\)"
    ):
        _convert(state_dict, num_classes=10)


def test_tiny_regnet_x_inference_and_train_mode_parity():
    """A small RegNet-X (no SE, bottleneck 1) via torchvision's own RegNet class; train-mode BN."""
    from torchvision.models.regnet import BlockParams as TorchBlockParams
    from torchvision.models.regnet import RegNet as TorchRegNet

    cfg = dict(depth=5, w_0=16, w_a=12.0, w_m=2.0, group_width=8)
    torch.manual_seed(0)
    tv = TorchRegNet(TorchBlockParams.from_init_params(**cfg), num_classes=5, stem_width=16)
    tv.eval()
    _randomise_bn(tv, seed=3)
    module = regnet.RegNet(regnet.BlockParams.from_init_params(**cfg), num_classes=5, stem_width=16)
    sd = StateDict(tv.state_dict(), source="tiny")
    variables = regnet.convert_torchvision(sd, module)
    sd.finish()
    assert "se" not in variables["params"]["trunk1"]["block0"]
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    x_nhwc = jnp.asarray(x.numpy().transpose(0, 2, 3, 1))
    with torch.no_grad():
        ref = tv(x).numpy()
        tv.train()
        ref_train = tv(x).numpy()
    with jax.default_matmul_precision("highest"):
        out = jax.jit(module.apply)(variables, x_nhwc)
        train_fn = jax.jit(lambda v, x: module.apply(v, x, train=True, mutable=["batch_stats"]))
        out_train, state = train_fn(variables, x_nhwc)
    assert _rel_err(out.logits, ref) < RTOL
    assert _rel_err(out_train.logits, ref_train) < 1e-3
    # Running means follow PyTorch's momentum 0.1 update (running vars differ by design:
    # PyTorch stores the unbiased batch variance, Flax the biased one).
    np.testing.assert_allclose(
        state["batch_stats"]["stem_conv"]["bn"]["mean"],
        tv.stem[1].running_mean.numpy(),
        rtol=1e-4,
        atol=1e-5,
    )
