"""CIFAR architectures against independent PyTorch re-implementations of OpenOOD's files.

The torch classes below are written from OpenOOD's ``openood/networks/{wrn,densenet,
resnet18_32x32}.py`` (same topology as the WRN/DenseNet/ResNet papers). Weights are copied
into the Flax models and the eval-mode logits, pooled features and pre-pool maps compared;
parameter counts are compared with ``sum(p.numel())`` and the published values.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

from jaxood import models  # noqa: E402

# ----------------------------------------------------------------- torch references


class TWRNBlock(nn.Module):
    def __init__(self, i, o, stride):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(i), nn.Conv2d(i, o, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(o), nn.Conv2d(o, o, 3, 1, 1, bias=False)
        self.equal = i == o
        self.convShortcut = None if self.equal else nn.Conv2d(i, o, 1, stride, 0, bias=False)

    def forward(self, x):
        if not self.equal:
            x = F.relu(self.bn1(x))
            out = x
        else:
            out = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(out))))
        return (x if self.equal else self.convShortcut(x)) + out


class TWRN(nn.Module):
    def __init__(self, depth, k, num_classes, in_ch=3):
        super().__init__()
        n = (depth - 4) // 6
        ch = [16, 16 * k, 32 * k, 64 * k]
        self.conv1 = nn.Conv2d(in_ch, 16, 3, 1, 1, bias=False)
        self.blocks = nn.ModuleList()
        for g in range(3):
            layers = [
                TWRNBlock(ch[g] if i == 0 else ch[g + 1], ch[g + 1], (1, 2, 2)[g] if i == 0 else 1)
                for i in range(n)
            ]
            self.blocks.append(nn.Sequential(*layers))
        self.bn1, self.fc = nn.BatchNorm2d(ch[3]), nn.Linear(ch[3], num_classes)

    def forward(self, x):
        x = self.conv1(x)
        for b in self.blocks:
            x = b(x)
        fmap = F.relu(self.bn1(x))
        feat = F.adaptive_avg_pool2d(fmap, 1).flatten(1)
        return self.fc(feat), feat, fmap


class TBottleneck(nn.Module):
    def __init__(self, i, k):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(i), nn.Conv2d(i, 4 * k, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(4 * k), nn.Conv2d(4 * k, k, 3, 1, 1, bias=False)

    def forward(self, x):
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return torch.cat([x, out], 1)


class TTransition(nn.Module):
    def __init__(self, i, o):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(i), nn.Conv2d(i, o, 1, bias=False)

    def forward(self, x):
        return F.avg_pool2d(self.conv1(F.relu(self.bn1(x))), 2)


class TDenseNet(nn.Module):
    def __init__(self, depth, k, num_classes, reduction=0.5, in_ch=3):
        super().__init__()
        n = (depth - 4) // 6
        c = 2 * k
        self.conv1 = nn.Conv2d(in_ch, c, 3, 1, 1, bias=False)
        self.blocks, self.trans = nn.ModuleList(), nn.ModuleList()
        for b in range(3):
            self.blocks.append(nn.Sequential(*[TBottleneck(c + i * k, k) for i in range(n)]))
            c += n * k
            if b < 2:
                o = int(math.floor(c * reduction))
                self.trans.append(TTransition(c, o))
                c = o
        self.bn1, self.fc = nn.BatchNorm2d(c), nn.Linear(c, num_classes)

    def forward(self, x):
        x = self.conv1(x)
        for b in range(3):
            x = self.blocks[b](x)
            if b < 2:
                x = self.trans[b](x)
        fmap = F.relu(self.bn1(x))
        feat = F.adaptive_avg_pool2d(fmap, 1).flatten(1)
        return self.fc(feat), feat, fmap


class TBasic(nn.Module):
    def __init__(self, i, o, stride):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(i, o, 3, stride, 1, bias=False), nn.BatchNorm2d(o)
        self.conv2, self.bn2 = nn.Conv2d(o, o, 3, 1, 1, bias=False), nn.BatchNorm2d(o)
        self.shortcut = nn.Sequential()
        if stride != 1 or i != o:
            self.shortcut = nn.Sequential(nn.Conv2d(i, o, 1, stride, bias=False), nn.BatchNorm2d(o))

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + self.shortcut(x))


class TResNet18(nn.Module):
    def __init__(self, num_classes, in_ch=3):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(in_ch, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64)
        layers, i = [], 64
        for s, o in enumerate((64, 128, 256, 512)):
            layers.append(nn.Sequential(TBasic(i, o, 1 if s == 0 else 2), TBasic(o, o, 1)))
            i = o
        self.layers = nn.ModuleList(layers)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        for layer in self.layers:
            x = layer(x)
        feat = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(feat), feat, x


# ----------------------------------------------------------------- weight copy (torch -> flax)


def _conv(m):
    return np.transpose(m.weight.detach().numpy(), (2, 3, 1, 0))


def _bn(m):
    p = {"scale": m.weight.detach().numpy(), "bias": m.bias.detach().numpy()}
    s = {"mean": m.running_mean.numpy(), "var": m.running_var.numpy()}
    return p, s


def _put(params, stats, name, bn):
    params[name], stats[name] = _bn(bn)


def _fc(m):
    return {"kernel": m.weight.detach().numpy().T, "bias": m.bias.detach().numpy()}


def wrn_to_flax(t: TWRN):
    p, s = {"conv1": {"kernel": _conv(t.conv1)}}, {}
    for g, seq in enumerate(t.blocks):
        for i, blk in enumerate(seq):
            bp, bs = (
                {"conv1": {"kernel": _conv(blk.conv1)}, "conv2": {"kernel": _conv(blk.conv2)}},
                {},
            )
            _put(bp, bs, "bn1", blk.bn1)
            _put(bp, bs, "bn2", blk.bn2)
            if blk.convShortcut is not None:
                bp["convShortcut"] = {"kernel": _conv(blk.convShortcut)}
            p[f"block{g + 1}_layer_{i}"], s[f"block{g + 1}_layer_{i}"] = bp, bs
    _put(p, s, "bn1", t.bn1)
    p["fc"] = _fc(t.fc)
    return {"params": p, "batch_stats": s}


def densenet_to_flax(t: TDenseNet):
    p, s = {"conv1": {"kernel": _conv(t.conv1)}}, {}
    for b, seq in enumerate(t.blocks):
        for i, layer in enumerate(seq):
            lp, ls = (
                {"conv1": {"kernel": _conv(layer.conv1)}, "conv2": {"kernel": _conv(layer.conv2)}},
                {},
            )
            _put(lp, ls, "bn1", layer.bn1)
            _put(lp, ls, "bn2", layer.bn2)
            p[f"block{b + 1}_layer_{i}"], s[f"block{b + 1}_layer_{i}"] = lp, ls
        if b < 2:
            tr = t.trans[b]
            tp, ts = {"conv1": {"kernel": _conv(tr.conv1)}}, {}
            _put(tp, ts, "bn1", tr.bn1)
            p[f"trans{b + 1}"], s[f"trans{b + 1}"] = tp, ts
    _put(p, s, "bn1", t.bn1)
    p["fc"] = _fc(t.fc)
    return {"params": p, "batch_stats": s}


def resnet_to_flax(t: TResNet18):
    p, s = {"conv1": {"kernel": _conv(t.conv1)}}, {}
    _put(p, s, "bn1", t.bn1)
    for li, layer in enumerate(t.layers):
        for j, blk in enumerate(layer):
            bp, bs = (
                {"conv1": {"kernel": _conv(blk.conv1)}, "conv2": {"kernel": _conv(blk.conv2)}},
                {},
            )
            _put(bp, bs, "bn1", blk.bn1)
            _put(bp, bs, "bn2", blk.bn2)
            if len(blk.shortcut):
                bp["shortcut_conv"] = {"kernel": _conv(blk.shortcut[0])}
                _put(bp, bs, "shortcut_bn", blk.shortcut[1])
            p[f"layer{li + 1}_{j}"], s[f"layer{li + 1}_{j}"] = bp, bs
    p["fc"] = _fc(t.fc)
    return {"params": p, "batch_stats": s}


def openood_wrn_init(net: nn.Module) -> nn.Module:
    """OpenOOD's ``WideResNet`` init on a reference net: convs He-normal fan-out, BN (1, 0),
    fc bias 0 (fc weight: PyTorch's default)."""
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            m.weight.data.fill_(1)
            m.bias.data.zero_()
        elif isinstance(m, nn.Linear):
            m.bias.data.zero_()
    return net


def _randomise_bn(t: nn.Module, seed: int):
    """Non-trivial BN statistics/affine so eval-mode parity tests the BN wiring."""
    g = torch.Generator().manual_seed(seed)
    for m in t.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(c, generator=g) * 0.1)
    return t.eval()


def _n_params(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _flax_params(name, k, shape=(32, 32, 3), **kw):
    m = models.create(name, k, **kw)
    v = jax.eval_shape(lambda: models.init_variables(m, jax.random.PRNGKey(0), shape))
    return _n_params(v["params"])


# ----------------------------------------------------------------- tests


@pytest.mark.parametrize(
    "name,kw,torch_net,published",
    [
        ("wrn28_10", {}, lambda: TWRN(28, 10, 10), 36.5e6),
        ("densenet_bc_100", {}, lambda: TDenseNet(100, 12, 10), 0.77e6),
        ("resnet18_32x32", {}, lambda: TResNet18(10), 11.2e6),
        ("wrn16_4", {}, lambda: TWRN(16, 4, 100), 2.75e6),
    ],
)
def test_parameter_counts(name, kw, torch_net, published):
    t = torch_net()
    k = t.fc.out_features
    expected = sum(p.numel() for p in t.parameters())
    assert _flax_params(name, k, **kw) == expected
    assert abs(expected - published) / published < 0.01


@pytest.mark.parametrize(
    "name,kw,make_torch,to_flax,shape",
    [
        ("wrn", {"depth": 16, "widen_factor": 2}, lambda: TWRN(16, 2, 7), wrn_to_flax, (32, 32, 3)),
        (
            "wrn",
            {"depth": 10, "widen_factor": 1},
            lambda: TWRN(10, 1, 5, 1),
            wrn_to_flax,
            (28, 28, 1),
        ),
        (
            "densenet_bc",
            {"depth": 40, "growth_rate": 6},
            lambda: TDenseNet(40, 6, 7),
            densenet_to_flax,
            (32, 32, 3),
        ),
        (
            "densenet_bc",
            {"depth": 22, "growth_rate": 4},
            lambda: TDenseNet(22, 4, 5, in_ch=1),
            densenet_to_flax,
            (28, 28, 1),
        ),
        ("resnet18_32x32", {}, lambda: TResNet18(7), resnet_to_flax, (32, 32, 3)),
        ("resnet18_32x32", {}, lambda: TResNet18(5, in_ch=1), resnet_to_flax, (8, 8, 1)),
    ],
)
def test_forward_parity_with_torch(name, kw, make_torch, to_flax, shape):
    torch.manual_seed(0)
    t = _randomise_bn(make_torch(), 1)
    k = t.fc.out_features
    x = np.random.default_rng(0).normal(size=(2, *shape)).astype(np.float32)
    with torch.no_grad():
        logits, feat, fmap = (a.numpy() for a in t(torch.from_numpy(x.transpose(0, 3, 1, 2))))
    module = models.create(name, k, **kw)
    variables = jax.tree.map(jnp.asarray, to_flax(t))
    models.check_variables(module, variables, shape)  # same tree and shapes as a fresh init
    model = models.flax_model(module)
    out = jax.jit(model.features)(variables, jnp.asarray(x))
    np.testing.assert_allclose(out.logits, logits, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out.feature, feat, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out.feature_map, fmap.transpose(0, 2, 3, 1), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(
        jax.jit(model.head)(variables, out.feature), logits, rtol=1e-4, atol=1e-4
    )


@pytest.mark.parametrize(
    "name,kw,dim,fmap_hw",
    [("wrn28_10", {}, 640, 8), ("densenet_bc_100", {}, 342, 8), ("resnet18_32x32", {}, 512, 4)],
)
def test_feature_contract_shapes(name, kw, dim, fmap_hw):
    m = models.create(name, 10, **kw)
    v = jax.eval_shape(lambda: models.init_variables(m, jax.random.PRNGKey(0), (32, 32, 3)))
    out = jax.eval_shape(lambda v: m.apply(v, jnp.zeros((3, 32, 32, 3)), train=False), v)
    assert out.logits.shape == (3, 10)
    assert out.feature.shape == (3, dim)
    assert out.feature_map.shape == (3, fmap_hw, fmap_hw, dim)


def test_wrn_init_statistics():
    """He fan-out conv init (std sqrt(2/(9*C_out))), BN (1, 0), fc bias 0 and U(+-1/sqrt(D))."""
    m = models.create("wrn", 10, depth=10, widen_factor=2)
    v = jax.jit(lambda k: models.init_variables(m, k, (8, 8, 3)))(jax.random.PRNGKey(0))
    w = np.asarray(v["params"]["block3_layer_0"]["conv2"]["kernel"])  # 3x3x128x128
    np.testing.assert_allclose(w.std(), math.sqrt(2 / (9 * 128)), rtol=0.02)
    fc = v["params"]["fc"]
    assert np.all(np.asarray(fc["bias"]) == 0)
    bound = 1 / math.sqrt(128)
    assert np.abs(fc["kernel"]).max() <= bound and np.abs(fc["kernel"]).max() > 0.9 * bound
    bn = v["params"]["bn1"]
    assert np.all(np.asarray(bn["scale"]) == 1) and np.all(np.asarray(bn["bias"]) == 0)


def test_batchnorm_matches_torch_train_and_running_stats():
    """The models' BatchNorm (momentum 0.9, eps 1e-5) == torch BatchNorm2d(momentum=0.1)."""
    from jaxood.models.layers import BatchNorm as _BatchNorm

    x = np.random.default_rng(0).normal(1.0, 2.0, size=(6, 5, 5, 3)).astype(np.float32)
    bn = _BatchNorm(use_running_average=False)
    v = bn.init(jax.random.PRNGKey(0), x)
    y, st = bn.apply(v, x, mutable=["batch_stats"])
    tbn = torch.nn.BatchNorm2d(3, momentum=0.1).train()
    ty = tbn(torch.from_numpy(x.transpose(0, 3, 1, 2))).detach().numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(y, ty, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(st["batch_stats"]["mean"], tbn.running_mean.numpy(), rtol=1e-5)
    # torch stores the unbiased batch variance in running_var, Flax the biased one: the
    # difference is the factor n/(n-1) on the 0.1 * var term only.
    n = x.shape[0] * x.shape[1] * x.shape[2]
    var_b = x.var((0, 1, 2))
    np.testing.assert_allclose(st["batch_stats"]["var"], 0.9 + 0.1 * var_b, rtol=1e-5)
    np.testing.assert_allclose(tbn.running_var.numpy(), 0.9 + 0.1 * var_b * n / (n - 1), rtol=1e-5)


def test_bad_architecture_arguments():
    with pytest.raises(ValueError, match="6n\\+4"):
        models.init_variables(models.create("wrn", 10, depth=12), jax.random.PRNGKey(0), (8, 8, 3))
    with pytest.raises(ValueError, match="depth"):
        models.init_variables(
            models.create("densenet_bc", 10, depth=50), jax.random.PRNGKey(0), (8, 8, 3)
        )
    with pytest.raises(ValueError, match="wrn28_10"):
        models.create("wrn_28_10", 10)
