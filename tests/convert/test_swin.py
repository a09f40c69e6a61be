"""Swin-T / Swin-B: Flax model + torchvision conversion checked against torchvision itself.

References are torchvision's own modules with random weights (LayerNorm affine params and
biases re-randomised so that a swapped or dropped tensor cannot hide behind ones/zeros);
nothing is downloaded. Inputs are chosen so that every code path runs:

* window attention alone, against ``torchvision...shifted_window_attention``, on shapes with
  padding to the window, a shift on both / one / no axis and a non-square window;
* Swin-T end to end at 72x96 (non-square): stage 1 is 18x24 (padded 21x28, shifted windows
  with the -100 mask), stage 2 9x12 (padded, shifted), PatchMerging of an odd 9-row map,
  stages 3-4 smaller than a window (shift dropped); through the real file path
  ``.pth -> convert() -> load_converted()``;
* Swin-B at 64x64 through ``convert_torchvision`` directly.

Tolerance: ``max|jax - torch| / max|torch| < 1e-4`` for every compared tensor.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from torchvision.models import swin_transformer as tv_swin  # noqa: E402

from jaxood.convert.common import StateDict  # noqa: E402
from jaxood.models import check_variables, create, swin  # noqa: E402

RTOL = 1e-4
NUM_CLASSES = 10
STAGES = {"patch_embed": 0, "stage1": 1, "stage2": 3, "stage3": 5, "stage4": 7}  # -> features.i


def _rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max() / np.abs(b).max())


def _random_swin(builder: str, seed: int) -> "torch.nn.Module":
    """torchvision ``builder`` (eval mode) with fresh random weights, built cheaply.

    torchvision's trunc-normal init of Swin-B takes seconds; here the model is built on the
    meta device and filled with plain normals: weights ~ N(0, 1/fan_in) (so attention is far
    from uniform and a mask or bias error shows), relative position bias tables ~ N(0, 0.5),
    LayerNorm scales 1 + N(0, 0.2), biases N(0, 0.2) (the torchvision ones/zeros would hide a
    swapped or dropped tensor) except a small patch-embedding bias, so the flat test image
    stays flat. The ``relative_position_index`` buffers are recomputed by torchvision.
    """
    with torch.device("meta"):
        model = getattr(torchvision.models, builder)(weights=None, num_classes=NUM_CLASSES)
    model = model.to_empty(device="cpu").eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("relative_position_bias_table"):
                p.normal_(0.0, 0.5, generator=g)
            elif p.ndim > 1:
                p.normal_(0.0, (p[0].numel()) ** -0.5, generator=g)
            elif name == "features.0.0.bias":
                p.normal_(0.0, 0.005, generator=g)
            elif name.endswith("bias"):
                p.normal_(0.0, 0.2, generator=g)
            else:  # LayerNorm scales
                p.normal_(1.0, 0.2, generator=g)
    for m in model.modules():
        if isinstance(m, tv_swin.ShiftedWindowAttention):
            m.define_relative_position_index()
    return model


def _shapes_only(**kwargs) -> dict[str, np.ndarray]:
    """State dict of ``SwinTransformer(**kwargs)`` with zero weights (no costly init) but the
    real ``relative_position_index`` buffers."""
    with torch.device("meta"):
        model = tv_swin.SwinTransformer(**kwargs)
    for m in model.modules():
        if isinstance(m, tv_swin.ShiftedWindowAttention):
            m.define_relative_position_index()  # outside the meta context: a CPU buffer
    return {
        k: v.numpy() if v.device.type == "cpu" else np.zeros(tuple(v.shape), np.float32)
        for k, v in model.state_dict().items()
    }


SWIN_T = dict(
    patch_size=[4, 4],
    embed_dim=96,
    depths=[2, 2, 6, 2],
    num_heads=[3, 6, 12, 24],
    window_size=[7, 7],
)
SWIN_B = dict(SWIN_T, embed_dim=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32])


def _reference(model, x: "torch.Tensor") -> dict[str, np.ndarray]:
    """torchvision outputs: logits, pooled feature, final-norm map and stage outputs (NHWC)."""
    ref = {}

    def store(name):
        return lambda _m, _i, out: ref.__setitem__(name, out)

    taps = {name: model.features[i] for name, i in STAGES.items()}
    taps |= {"feature_map": model.norm, "feature": model.flatten}
    hooks = [m.register_forward_hook(store(name)) for name, m in taps.items()]
    with torch.no_grad():
        ref["logits"] = model(x)
    for h in hooks:
        h.remove()
    return {k: v.numpy() for k, v in ref.items()}


def _run(module, variables, x_nhwc):
    """Features + sown stage outputs (jitted: op-by-op dispatch compiles every op shape)."""
    with jax.default_matmul_precision("highest"):
        fn = jax.jit(lambda v, x: module.apply(v, x, mutable=["intermediates"]))
        out, state = fn(variables, jnp.asarray(x_nhwc))
        head = jax.jit(lambda v, f: module.apply(v, f, method=type(module).head))(
            variables, out.feature
        )
    inter = {k: v[0] for k, v in state["intermediates"].items()}
    return out, inter, head


def _check(out, inter, head, ref) -> None:
    # Earlier stages first, so a mismatch points at the first stage that differs.
    for name in STAGES:
        assert _rel_err(inter[name], ref[name]) < RTOL, name
    assert _rel_err(out.feature_map, ref["feature_map"]) < RTOL
    assert _rel_err(out.feature, ref["feature"]) < RTOL
    assert _rel_err(out.logits, ref["logits"]) < RTOL
    np.testing.assert_allclose(head, out.logits, rtol=1e-6, atol=1e-6)
    assert out.attention is None


# ------------------------------------------------------------------ window attention alone


@pytest.mark.parametrize(
    "hw, window, shift",
    [
        ((14, 14), (7, 7), (3, 3)),  # whole windows, shifted
        ((9, 20), (7, 7), (3, 3)),  # padded to 14x21, shifted on both axes
        ((5, 12), (7, 7), (3, 3)),  # H fits one window: shift only along W
        ((3, 3), (7, 7), (3, 3)),  # smaller than a window: no shift at all
        ((10, 13), (4, 6), (2, 3)),  # non-square window
    ],
)
def test_window_attention_matches_torchvision(hw, window, shift):
    torch.manual_seed(sum(hw) + sum(shift))
    c, heads = 8, 2
    ref_mod = tv_swin.ShiftedWindowAttention(c, list(window), list(shift), heads).eval()
    with torch.no_grad():
        ref_mod.qkv.bias.normal_()
        ref_mod.proj.bias.normal_()
        ref_mod.relative_position_bias_table.normal_()  # large, so index errors show
    x = torch.randn(2, *hw, c)
    with torch.no_grad():
        ref = ref_mod(x).numpy()
    params = {
        "relative_position_bias_table": ref_mod.relative_position_bias_table.detach().numpy(),
        "qkv": {
            "kernel": ref_mod.qkv.weight.detach().numpy().T,
            "bias": ref_mod.qkv.bias.detach().numpy(),
        },
        "proj": {
            "kernel": ref_mod.proj.weight.detach().numpy().T,
            "bias": ref_mod.proj.bias.detach().numpy(),
        },
    }
    module = swin.ShiftedWindowAttention(heads, window, shift)
    with jax.default_matmul_precision("highest"):
        out = jax.jit(module.apply)({"params": params}, jnp.asarray(x.numpy()))
    assert _rel_err(out, ref) < RTOL
    np.testing.assert_array_equal(
        swin.relative_position_index(window), ref_mod.relative_position_index.numpy()
    )


# ------------------------------------------------------------------ Swin-T, file path


@pytest.fixture(scope="module")
def swin_t_case(tmp_path_factory):
    """(torch model, state dict, loaded converted model, input NHWC, reference outputs)."""
    from jaxood.convert.torchvision import convert, load_converted

    model = _random_swin("swin_t", seed=1)
    x = torch.randn(2, 3, 72, 96, generator=torch.Generator().manual_seed(2))
    # A nearly flat second image: patch embeddings ~ the small conv bias, where LayerNorm's
    # eps (1e-5 for torchvision Swin vs. Flax's default 1e-6) visibly matters.
    x[1] *= 1e-4
    ref = _reference(model, x)
    tmp = tmp_path_factory.mktemp("swin_t")
    torch.save(model.state_dict(), tmp / "swin_t.pth")
    out = convert(
        tmp / "swin_t.pth", "swin_t", tmp / "converted", num_classes=NUM_CLASSES, input_size=64
    )
    return model, model.state_dict(), load_converted(out), x.numpy().transpose(0, 2, 3, 1), ref


@pytest.mark.slow
def test_swin_t_parity_with_torchvision(swin_t_case):
    model, _, loaded, x, ref = swin_t_case
    out, inter, head = _run(loaded.module, loaded.variables, x)
    assert out.feature_map.shape == (2, 3, 3, 768)
    _check(out, inter, head, ref)
    n_ours = sum(np.size(p) for p in jax.tree.leaves(loaded.variables["params"]))
    assert n_ours == sum(p.numel() for p in model.parameters())
    m = loaded.manifest
    assert m["feature_dim"] == 768 and m["has_feature_map"] and not m["has_attention"]


@pytest.mark.slow
def test_wrong_checkpoints_are_rejected(swin_t_case):
    _, state_dict, _, _, _ = swin_t_case

    def convert(tensors, arch="swin_t", num_classes=NUM_CLASSES):
        module = create(arch, num_classes)
        sd = StateDict(tensors, source="test")
        variables = swin.convert_torchvision(sd, module)
        sd.finish()
        return variables

    with pytest.raises(ValueError, match=r"'features\.0\.0\.weight' has shape \(96, 3, 4, 4\)"):
        convert(state_dict, "swin_b")
    with pytest.raises(ValueError, match=r"'features\.0\.0\.weight' has shape \(128, 3, 4, 4\)"):
        convert(_shapes_only(**SWIN_B))
    deeper = _shapes_only(**dict(SWIN_T, depths=[2, 2, 8, 2]))
    with pytest.raises(ValueError, match=r"stage 2 has more than 6 blocks"):
        convert(deeper)
    truncated = {k: v for k, v in state_dict.items() if not k.startswith("features.5.5.")}
    with pytest.raises(
        ValueError, match=r"'features\.5\.5\.attn\.relative_position_index' is missing"
    ):
        convert(truncated)
    with pytest.raises(ValueError, match=r"'head\.weight' has shape \(10, 768\)"):
        convert(state_dict, num_classes=1000)
    bad_index = dict(state_dict)
    bad_index["features.1.1.attn.relative_position_index"] = torch.zeros(49 * 49, dtype=torch.long)
    with pytest.raises(ValueError, match=r"features\.1\.1\.attn\.relative_position_index is not"):
        convert(bad_index)
    extra = dict(state_dict, **{"aux.weight": torch.zeros(3)})
    with pytest.raises(ValueError, match=r"not mapped.*aux\.weight"):
        convert(extra)
    with torch.device("meta"):
        v2 = torchvision.models.swin_v2_t(num_classes=NUM_CLASSES).state_dict()
    with pytest.raises(ValueError, match="Swin V2"):
        convert({k: np.zeros(tuple(v.shape), np.float32) for k, v in v2.items()})


def test_bad_input_is_rejected():
    module = create("swin_t", 3)
    with pytest.raises(ValueError, match="NHWC"):
        jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), jnp.zeros((32, 32, 3))))


# ------------------------------------------------------------------ Swin-B, direct


@pytest.mark.slow
def test_swin_b_parity_with_torchvision():
    model = _random_swin("swin_b", seed=4)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    ref = _reference(model, x)
    module = create("swin_b", NUM_CLASSES)
    sd = StateDict(model.state_dict(), source="swin_b test")
    variables = swin.convert_torchvision(sd, module)
    sd.finish()
    del model, sd
    check_variables(module, variables, (64, 64, 3))
    out, inter, head = _run(module, variables, x.numpy().transpose(0, 2, 3, 1))
    assert out.feature.shape == (1, 1024)
    _check(out, inter, head, ref)


# ------------------------------------------------------------------ general module, tiny


def test_tiny_config_matches_torchvision_and_trains():
    """A non-default configuration (3 stages, 4x6 window, patch 2) of the general module."""
    cfg = dict(
        patch_size=[2, 2], embed_dim=8, depths=[2, 1, 2], num_heads=[1, 2, 4], window_size=[4, 6]
    )
    torch.manual_seed(6)
    tv = tv_swin.SwinTransformer(**cfg, num_classes=5).eval()
    x = torch.randn(2, 3, 30, 44)
    with torch.no_grad():
        ref = tv(x).numpy()
    module = swin.SwinTransformer(
        num_classes=5,
        patch_size=(2, 2),
        embed_dim=8,
        depths=(2, 1, 2),
        num_heads=(1, 2, 4),
        window_size=(4, 6),
        stochastic_depth_prob=0.5,
    )
    sd = StateDict(tv.state_dict(), source="tiny")
    variables = swin.convert_torchvision(sd, module)
    sd.finish()
    x_nhwc = jnp.asarray(x.numpy().transpose(0, 2, 3, 1))
    with jax.default_matmul_precision("highest"):
        apply = jax.jit(module.apply, static_argnames="train")
        out = apply(variables, x_nhwc)
        assert _rel_err(out.logits, ref) < RTOL
        assert out.feature.shape == (2, 32)
        # Training mode: stochastic depth drops whole residual branches per sample, driven
        # by the "dropout" rng (deterministic given it, different from inference).
        rngs = {"dropout": jax.random.PRNGKey(0)}
        a = apply(variables, x_nhwc, train=True, rngs=rngs)
        b = apply(variables, x_nhwc, train=True, rngs=rngs)
        np.testing.assert_array_equal(a.logits, b.logits)
        assert not np.allclose(a.logits, out.logits)
