"""OpenOOD v1.5 checkpoints (resnet18_32x32, resnet18_224x224) -> jaxood, through the CLI.

The torch networks below are written from OpenOOD's ``openood/networks/resnet18_32x32.py``
and ``resnet18_224x224.py`` (v1.5): same module names (so the same state-dict keys) and the
same forward. Weights are random and every BatchNorm's running statistics are randomised,
so a swapped or unmapped tensor cannot go unnoticed.
"""

import json
import re

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
nn, F = torch.nn, torch.nn.functional

from jaxood import cli, models  # noqa: E402
from jaxood.convert import openood  # noqa: E402
from jaxood.data.transforms import preprocess  # noqa: E402
from tests.convert.parity import randomize_torch_model  # noqa: E402

# ---------------------------------------------------------------- OpenOOD's networks in torch


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        return F.relu(out)


class ResNet18_32x32(nn.Module):  # noqa: N801
    def __init__(self, num_classes=10):
        super().__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._make_layer(64, 2, 1)
        self.layer2 = self._make_layer(128, 2, 2)
        self.layer3 = self._make_layer(256, 2, 2)
        self.layer4 = self._make_layer(512, 2, 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def _make_layer(self, planes, num_blocks, stride):
        layers = []
        for s in [stride] + [1] * (num_blocks - 1):
            layers.append(BasicBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x):
        """-> (logits, feature, layer4 output), as OpenOOD's return_feature(_list)."""
        out = F.relu(self.bn1(self.conv1(x)))
        fmap = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        feature = self.avgpool(fmap).view(fmap.size(0), -1)
        return self.fc(feature), feature, fmap


class ResNet18_224x224(torchvision.models.resnet.ResNet):  # noqa: N801
    def __init__(self, num_classes=1000):
        super().__init__(torchvision.models.resnet.BasicBlock, [2, 2, 2, 2], num_classes)

    def forward(self, x):
        out = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        fmap = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        feature = self.avgpool(fmap).view(fmap.size(0), -1)
        return self.fc(feature), feature, fmap


NETS = {"resnet18_32x32": ResNet18_32x32, "resnet18_224x224": ResNet18_224x224}

# OpenOOD v1.5 openood/evaluation_api/preprocessor.py default_preprocessing_dict.
OPENOOD_PREPROCESSING = {
    "cifar10": (32, 32, [[0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]]),
    "cifar100": (32, 32, [[0.5071, 0.4867, 0.4408], [0.2675, 0.2565, 0.2761]]),
    "imagenet200": (256, 224, [[0.485, 0.456, 0.406], [0.229, 0.224, 0.225]]),
}


def release_checkpoint(tmp_path, net, num_classes, *, seed=0, dataparallel=False, run="s0"):
    """A random OpenOOD network saved as ``<tmp>/<run>/best.ckpt``, as OpenOOD's trainer does."""
    torch.manual_seed(seed)
    model = NETS[net](num_classes=num_classes).eval()
    randomize_torch_model(model, seed)
    sd = model.state_dict()
    if dataparallel:
        sd = {f"module.{k}": v for k, v in sd.items()}
    path = tmp_path / run / "best.ckpt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(sd, path)
    return model, path


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


CASES = [
    ("resnet18_32x32", 10, "cifar10", 32, False),
    ("resnet18_32x32", 100, "cifar100", 32, True),  # DataParallel "module." prefix
    ("resnet18_224x224", 200, "imagenet200", 64, True),  # fully convolutional: 64 is enough
]


@pytest.mark.parametrize("net, k, bench, size, dp", CASES, ids=[c[2] for c in CASES])
def test_cli_conversion_matches_openood_network(tmp_path, capsys, net, k, bench, size, dp):
    model, ckpt = release_checkpoint(tmp_path, net, k, dataparallel=dp)
    out = tmp_path / "converted"
    assert cli.main(["convert", str(ckpt), "--arch", net, "--out", str(out)]) == 0
    assert f'"openood_benchmark": "{bench}"' in capsys.readouterr().out

    loaded = models.load(out, expected_num_classes=k)
    x = np.random.default_rng(1).standard_normal((2, 3, size, size)).astype(np.float32)
    with torch.no_grad():
        logits, feature, fmap = (t.numpy() for t in model(torch.from_numpy(x)))
    feats = loaded.model.features(loaded.variables, x.transpose(0, 2, 3, 1))
    errors = {
        "logits": _rel(feats.logits, logits),
        "feature": _rel(feats.feature, feature),
        "feature_map": _rel(feats.feature_map, fmap.transpose(0, 2, 3, 1)),
        "head": _rel(loaded.model.head(loaded.variables, feats.feature), logits),
    }
    assert max(errors.values()) <= 1e-4, errors

    man = json.loads((out / "manifest.json").read_text())
    resize, crop, (mean, std) = OPENOOD_PREPROCESSING[bench]
    assert man["preprocess"] == {
        "resize_size": resize,
        "crop_size": crop,
        "interpolation": "bilinear",
        "mean": mean,
        "std": std,
        "channels": 3,
    }
    assert man["input_shape"] == [crop, crop, 3] and man["feature_dim"] == 512
    assert (man["openood_network"], man["openood_run"], man["source_file"]) == (
        net,
        "s0",
        "best.ckpt",
    )
    assert man["name"] == f"openood-{bench}-{net}"  # shared by s0/s1/s2


@pytest.mark.parametrize("bench", ["cifar10", "imagenet200"])
def test_manifest_preprocessing_is_openoods_eval_transform(tmp_path, bench):
    """The recorded spec reproduces OpenOOD's TestStandardPreProcessor bit for bit."""
    T = torchvision.transforms
    net, k = ("resnet18_32x32", 10) if bench == "cifar10" else ("resnet18_224x224", 200)
    _, ckpt = release_checkpoint(tmp_path, net, k)
    spec = models.load(openood.convert(ckpt, net, tmp_path / "m")).preprocess
    resize, crop, norm = OPENOOD_PREPROCESSING[bench]
    openood_tf = T.Compose([
        T.Lambda(lambda im: im.convert("RGB")),  # OpenOOD's Convert('RGB')
        T.Resize(resize, interpolation=T.InterpolationMode.BILINEAR),
        T.CenterCrop(crop),
        T.ToTensor(),
        T.Normalize(*norm),
    ])  # fmt: skip
    rng = np.random.default_rng(0)
    side = (32, 32) if bench == "cifar10" else (333, 500)
    img = Image.fromarray(rng.integers(0, 256, (*side, 3), dtype=np.uint8))
    ref = openood_tf(img).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(preprocess(img, spec), ref)


def test_seed_runs_get_their_own_default_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    outs = []
    for seed, run in enumerate(["s0", "s1"]):
        _, ckpt = release_checkpoint(tmp_path / "release", "resnet18_32x32", 10, seed=seed, run=run)
        outs.append(openood.convert(ckpt, "resnet18_32x32"))
    assert [o.split("/")[-1] for o in outs] == [
        "openood_cifar10_resnet18_32x32_s0",
        "openood_cifar10_resnet18_32x32_s1",
    ]


def _cli_error(capsys, *argv):
    assert cli.main(["convert", *map(str, argv)]) == 2
    return capsys.readouterr().err


def test_other_network_or_class_count_is_a_clear_error(tmp_path, capsys):
    _, c224 = release_checkpoint(tmp_path, "resnet18_224x224", 200, run="a")
    err = _cli_error(capsys, c224, "--arch", "resnet18_32x32", "--out", tmp_path / "o1")
    assert "OpenOOD resnet18_224x224" in err and "--arch resnet18_224x224" in err

    # A CIFAR net with a class count of no OpenOOD benchmark, or not the one asked for.
    _, c7 = release_checkpoint(tmp_path, "resnet18_32x32", 7, run="b")
    err = _cli_error(capsys, c7, "--arch", "resnet18_32x32", "--out", tmp_path / "o2")
    assert "7 classes matches no OpenOOD v1.5 benchmark" in err and "cifar100: 100" in err
    _, c10 = release_checkpoint(tmp_path, "resnet18_32x32", 10, run="c")
    err = _cli_error(
        capsys, c10, "--arch", "resnet18_32x32", "--benchmark", "cifar100", "--out", tmp_path / "o3"
    )
    assert "10 classes, but cifar100 has 100" in err
    err = _cli_error(
        capsys, c10, "--arch", "resnet18_32x32", "--benchmark", "imagenet200", "--out", tmp_path
    )
    assert "for cifar10, cifar100, not 'imagenet200'" in err
    err = _cli_error(capsys, c10, "--arch", "resnet18_32x32", "--num-classes", "100")
    assert "expected 100 classes" in err

    # torchvision's ImageNet-1k ResNet-18 has the 224x224 layout but 1000 classes.
    tv = tmp_path / "resnet18_tv.pth"
    torch.save(torchvision.models.resnet18().state_dict(), tv)
    err = _cli_error(capsys, tv, "--arch", "resnet18_224x224", "--out", tmp_path / "o4")
    assert "1000 classes" in err and "--arch resnet18" in err

    # Not a ResNet-18 at all (a ResNet-50), and an OpenOOD CIFAR net given as torchvision's.
    r50 = tmp_path / "r50.pth"
    torch.save(torchvision.models.resnet50(num_classes=200).state_dict(), r50)
    err = _cli_error(capsys, r50, "--arch", "resnet18_224x224", "--out", tmp_path / "o5")
    assert "not an OpenOOD ResNet-18" in err and "(64, 3, 7, 7)" in err
    err = _cli_error(capsys, c10, "--arch", "resnet18", "--out", tmp_path / "o6")
    assert "--arch resnet18_32x32" in err
    err = _cli_error(capsys, c10, "--arch", "resnet18_32x32", "--weights", "IMAGENET1K_V1")
    assert "--benchmark" in err


def test_missing_and_extra_keys_are_listed(tmp_path):
    model, _ = release_checkpoint(tmp_path, "resnet18_32x32", 10)
    sd = dict(model.state_dict())
    sd.pop("layer3.1.bn2.running_var")
    with pytest.raises(ValueError, match=r"layer3\.1\.bn2\.running_var"):
        openood.convert_variables(sd, "resnet18_32x32")
    sd = dict(model.state_dict()) | {"projector.weight": torch.zeros(3)}
    with pytest.raises(ValueError, match=r"projector\.weight"):
        openood.convert_variables(sd, "resnet18_32x32")


def _fake_openood_cifar10(root, per_set=6, seed=0):
    """OpenOOD v1.5's CIFAR-10 layout (``benchmark_imglist/cifar10/*.txt`` +
    ``images_classic/``) with a few random 32x32 PNGs per list."""
    from jaxood.data import benchmarks

    bench = benchmarks.get("cifar10")
    rng = np.random.default_rng(seed)
    refs = [bench.id_val, bench.id_test, bench.ood_val, *bench.near, *bench.far]
    for ref in refs:
        lines = []
        for i in range(per_set):
            rel = f"{ref.name}/{i}.png"
            path = root / ref.data_dir / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
            label = i % 10 if ref.name == "cifar10" else -1
            lines.append(f"{rel} {label}\n")
        (root / ref.imglist).parent.mkdir(parents=True, exist_ok=True)
        (root / ref.imglist).write_text("".join(lines))
    return bench


def test_bench_cifar10_with_three_converted_runs(tmp_path):
    """``jaxood bench --benchmark cifar10 --model s0 s1 s2`` on converted OpenOOD checkpoints:
    per-run MSP AUROCs equal the OpenOOD torch networks' on torchvision-preprocessed images."""
    from sklearn.metrics import roc_auc_score

    from jaxood.bench import runner

    bench = _fake_openood_cifar10(tmp_path / "data")
    nets, dirs = [], []
    for seed, run in enumerate(["s0", "s1", "s2"]):
        model, ckpt = release_checkpoint(
            tmp_path / "release", "resnet18_32x32", 10, seed=seed, run=run
        )
        nets.append(model)
        dirs.append(openood.convert(ckpt, "resnet18_32x32", tmp_path / "models" / run))
    cfg = runner.BenchConfig(
        "cifar10", dirs, detectors=["msp"], data_root=str(tmp_path / "data"),
        out_dir=str(tmp_path / "out"), aps=False, plots=False, progress=False, strict=True,
        batch_size=8,
    )  # fmt: skip
    res = runner.run(cfg)
    # <bench>/<model name>-<8 hex digits of the weights' fingerprint>
    assert re.search(r"cifar10/openood-cifar10-resnet18_32x32-[0-9a-f]{8}$", res.out_dir)

    T = torchvision.transforms
    mean, std = OPENOOD_PREPROCESSING["cifar10"][2]
    tf = T.Compose([T.Resize(32), T.CenterCrop(32), T.ToTensor(), T.Normalize(mean, std)])

    def msp(model, ref):
        lines = (tmp_path / "data" / ref.imglist).read_text().split()[::2]
        x = torch.stack([tf(Image.open(tmp_path / "data" / ref.data_dir / p)) for p in lines])
        with torch.no_grad():
            return torch.softmax(model(x)[0].double(), -1).max(-1).values.numpy()

    per_run = []
    for model in nets:
        s_id = msp(model, bench.id_test)
        aurocs = {}
        for ref in (*bench.near, *bench.far):
            s_ood = msp(model, ref)
            y = np.r_[np.zeros(len(s_id)), np.ones(len(s_ood))]
            aurocs[ref.name] = 100 * roc_auc_score(y, -np.r_[s_id, s_ood])
        per_run.append(aurocs)
    table = res.table["msp"]
    for name in ("cifar100", "tin", "mnist", "svhn", "texture", "places365"):
        runs = [r[name] for r in per_run]
        assert table[name]["AUROC"][0] == pytest.approx(np.mean(runs), abs=1e-3), name
        assert table[name]["AUROC"][1] == pytest.approx(np.std(runs), abs=1e-3), name
