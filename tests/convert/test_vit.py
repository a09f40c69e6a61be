"""ViT-B/16: Flax model + torchvision conversion checked against torchvision itself.

Reference: ``torchvision.models.vit_b_16(weights=None, image_size=64)`` with random weights
(LayerNorm affine params, biases, class token and head re-randomised so that a swapped or
dropped tensor cannot hide behind torchvision's ones/zeros init). Nothing is downloaded.
Logits, the CLS feature, the patch embedding, several encoder-block outputs and the last
block's CLS attention row (from ``nn.MultiheadAttention(need_weights=True)``) must agree to
1e-4 relative to their scale.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from jaxood.convert.common import StateDict  # noqa: E402
from jaxood.models import create, vit  # noqa: E402

pytestmark = pytest.mark.slow
IMAGE_SIZE = 64  # 4x4 patches + CLS = 17 tokens; keeps the 86M-parameter model quick
NUM_CLASSES = 10
RTOL = 1e-4  # max|jax - torch| / max|torch|
LAYERS = (0, 5, 11)  # encoder blocks compared one by one


def _randomise(model: "torch.nn.Module", seed: int) -> None:
    """Random LayerNorm scales/biases, linear biases, class token and head."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "conv_proj.bias":  # small, to keep the flat test image's tokens small
                p.copy_(torch.randn(p.shape, generator=g) * 0.005)
            elif name.endswith("bias") or name == "class_token" or name.startswith("heads"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
            elif "ln" in name and name.endswith("weight"):
                p.copy_(1.0 + torch.randn(p.shape, generator=g) * 0.2)


def _zeros_like_torchvision(builder: str, **kwargs) -> dict[str, np.ndarray]:
    """A torchvision model's state-dict keys and shapes (zeros), without the costly init."""
    with torch.device("meta"):
        model = getattr(torchvision.models, builder)(weights=None, **kwargs)
    return {k: np.zeros(tuple(v.shape), np.float32) for k, v in model.state_dict().items()}


def _rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def torch_vit():
    """(model, state_dict, input NHWC, reference outputs), built once."""
    torch.manual_seed(0)
    model = torchvision.models.vit_b_16(
        weights=None, image_size=IMAGE_SIZE, num_classes=NUM_CLASSES
    ).eval()
    _randomise(model, seed=1)
    x = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(2))
    # A nearly flat second image: its patch tokens are then tiny (~0.02, the position
    # embedding), where LayerNorm's eps (1e-6 for torchvision ViT) visibly matters.
    x[1] *= 1e-3
    ref: dict[str, torch.Tensor] = {}
    last = model.encoder.layers[-1]

    def attention_hook(_m, _i, y):
        # The torch reference for NAP's row: weights of the last block's attention on
        # ln_1's output, averaged over heads, CLS query.
        _, w = last.self_attention(y, y, y, need_weights=True, average_attn_weights=True)
        ref["attention"] = w[:, 0, :]

    def store(name):
        return lambda _m, _i, out: ref.__setitem__(name, out)

    hooks = [
        model.conv_proj.register_forward_hook(store("conv_proj")),
        model.encoder.ln.register_forward_hook(store("ln")),
        last.ln_1.register_forward_hook(attention_hook),
        *[model.encoder.layers[i].register_forward_hook(store(f"layers_{i}")) for i in LAYERS],
    ]
    with torch.no_grad():
        ref["logits"] = model(x)
    for h in hooks:
        h.remove()
    ref = {k: v.detach().numpy() for k, v in ref.items()}
    ref["conv_proj"] = ref["conv_proj"].transpose(0, 2, 3, 1)
    ref["feature"] = ref.pop("ln")[:, 0]
    return model, model.state_dict(), x.numpy().transpose(0, 2, 3, 1), ref


def _convert(state_dict, num_classes: int = NUM_CLASSES, image_size: int = IMAGE_SIZE):
    module = create("vit_b_16", num_classes, image_size=image_size)
    sd = StateDict(state_dict, source="test")
    variables = vit.convert_torchvision(sd, module)
    sd.finish()
    return module, variables


@pytest.fixture(scope="module")
def converted(torch_vit, tmp_path_factory):
    """The real user path: .pth file -> convert() -> saved directory -> load_converted()."""
    from jaxood.convert.torchvision import convert, load_converted

    tmp = tmp_path_factory.mktemp("vit")
    torch.save(torch_vit[1], tmp / "vit.pth")
    out = convert(
        tmp / "vit.pth",
        "vit_b_16",
        tmp / "converted",
        num_classes=NUM_CLASSES,
        arch_kwargs={"image_size": IMAGE_SIZE},
        input_size=IMAGE_SIZE,
    )
    return load_converted(out)


def _run(module, variables, x):
    """Features + sown intermediates (jitted: cheaper than op-by-op dispatch here)."""
    with jax.default_matmul_precision("highest"):
        fn = jax.jit(lambda v, x: module.apply(v, x, mutable=["intermediates"]))
        out, state = fn(variables, jnp.asarray(x))
    inter = state["intermediates"]
    got = {"conv_proj": inter["patch_embed"][0]}
    for i in LAYERS:
        got[f"layers_{i}"] = inter[f"encoder_layer_{i}"][0]
    return out, got


def test_parity_with_torchvision(torch_vit, converted):
    model, _, x, ref = torch_vit
    out, inter = _run(converted.module, converted.variables, x)
    # Earlier layers first, so a mismatch points at the first layer that differs.
    for name in ["conv_proj", *(f"layers_{i}" for i in LAYERS)]:
        assert _rel_err(inter[name], ref[name]) < RTOL, name
    assert out.feature_map is None
    assert out.feature.shape == (2, 768)
    assert _rel_err(out.feature, ref["feature"]) < RTOL
    assert _rel_err(out.logits, ref["logits"]) < RTOL
    with jax.default_matmul_precision("highest"):
        head = converted.model.head(converted.variables, out.feature)
    np.testing.assert_allclose(head, out.logits, rtol=1e-6, atol=1e-6)
    # NAP's input: last block's CLS-query attention row, head-averaged, post-softmax.
    assert out.attention.shape == (2, 1 + (IMAGE_SIZE // 16) ** 2)
    assert _rel_err(out.attention, ref["attention"]) < RTOL
    np.testing.assert_allclose(np.asarray(out.attention).sum(-1), 1.0, rtol=1e-5)
    n_ours = sum(np.size(p) for p in jax.tree.leaves(converted.variables["params"]))
    assert n_ours == sum(p.numel() for p in model.parameters())


def test_manifest(converted):
    m = converted.manifest
    assert m["arch"] == "vit_b_16" and m["num_classes"] == NUM_CLASSES
    assert m["arch_kwargs"] == {"image_size": IMAGE_SIZE}
    assert m["feature_dim"] == 768
    assert m["has_attention"] and not m["has_feature_map"]
    assert converted.model.has_attention


def test_factory_matches_torchvision_shapes():
    """The default (224) module has torchvision vit_b_16's parameter shapes."""
    module = create("vit_b_16", 1000)
    sd = StateDict(_zeros_like_torchvision("vit_b_16"), source="zeros")
    variables = vit.convert_torchvision(sd, module)
    sd.finish()
    expected = jax.eval_shape(
        lambda: module.init(jax.random.PRNGKey(0), jnp.zeros((1, 224, 224, 3)))
    )
    got = jax.tree.map(np.shape, variables)
    assert jax.tree.map(lambda a: tuple(a.shape), expected) == got


def test_wrong_checkpoints_are_rejected(torch_vit):
    _, state_dict, _, _ = torch_vit
    swin = _zeros_like_torchvision("swin_t")
    with pytest.raises(ValueError, match=r"'conv_proj\.weight' is missing"):
        _convert(swin)
    truncated = {k: v for k, v in state_dict.items() if "encoder_layer_11." not in k}
    with pytest.raises(ValueError, match=r"encoder_layer_11\.ln_1\.weight' is missing"):
        _convert(truncated)
    with pytest.raises(ValueError, match=r"'heads\.head\.weight' has shape \(10, 768\)"):
        _convert(state_dict, num_classes=1000)
    with pytest.raises(ValueError, match=r"pos_embedding.*another image size"):
        _convert(state_dict, image_size=224)
    extra = dict(state_dict, **{"aux.weight": torch.zeros(3)})
    with pytest.raises(ValueError, match=r"not mapped.*aux\.weight"):
        _convert(extra)


def test_bad_input_shape_is_rejected():
    module = create("vit_b_16", 3, image_size=32)
    with pytest.raises(ValueError, match="image_size"):
        jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), jnp.zeros((1, 48, 48, 3))))
    with pytest.raises(ValueError, match="not divisible by patch_size"):
        jax.eval_shape(
            lambda: create("vit_b_16", 3, image_size=40).init(
                jax.random.PRNGKey(0), jnp.zeros((1, 40, 40, 3))
            )
        )


def test_tiny_config_matches_torchvision():
    """A non-default configuration of the general module against torchvision's class."""
    from torchvision.models.vision_transformer import VisionTransformer as TorchViT

    torch.manual_seed(3)
    kw = dict(image_size=24, patch_size=8, num_layers=2, num_heads=4, hidden_dim=16, mlp_dim=20)
    tv = TorchViT(**kw, num_classes=5).eval()
    _randomise(tv, seed=4)
    x = torch.randn(2, 3, 24, 24)
    with torch.no_grad():
        ref = tv(x).numpy()
    module = vit.VisionTransformer(num_classes=5, **kw)
    sd = StateDict(tv.state_dict(), source="tiny")
    variables = vit.convert_torchvision(sd, module)
    sd.finish()
    with jax.default_matmul_precision("highest"):
        out = jax.jit(module.apply)(variables, jnp.asarray(x.numpy().transpose(0, 2, 3, 1)))
    assert _rel_err(out.logits, ref) < RTOL
    assert out.attention.shape == (2, 10)
