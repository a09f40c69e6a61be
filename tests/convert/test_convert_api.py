"""Conversion API: manifest contents, one-call loading, CLI, and clear errors on bad input."""

import hashlib
import sys

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from jaxood import cli  # noqa: E402
from jaxood.convert import torchvision as tvc  # noqa: E402


@pytest.fixture(scope="module")
def resnet18_sd():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).state_dict()


@pytest.fixture()
def resnet18_pth(tmp_path, resnet18_sd):
    path = tmp_path / "my_resnet18.pth"
    torch.save(resnet18_sd, path)
    return path


def test_manifest_and_load_converted(tmp_path, resnet18_pth):
    out = tvc.convert(resnet18_pth, "resnet18", tmp_path / "out", weights="IMAGENET1K_V1")
    m = tvc.load_converted(out, expected_num_classes=10)
    ref = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    tf = ref.transforms()
    man = m.manifest
    assert man["arch"] == "resnet18" and man["num_classes"] == 10 and man["feature_dim"] == 512
    assert man["source_file"] == "my_resnet18.pth"
    assert man["source_sha256"] == hashlib.sha256(resnet18_pth.read_bytes()).hexdigest()
    assert man["torchvision_weights"] == str(ref)
    assert man["published_top1"] == ref.meta["_metrics"]["ImageNet-1K"]["acc@1"]
    assert (m.spec.resize_size, m.spec.crop_size) == (tf.resize_size[0], tf.crop_size[0])
    assert m.spec.interpolation == tf.interpolation.value
    assert list(m.spec.mean) == list(tf.mean) and list(m.spec.std) == list(tf.std)
    assert man["has_feature_map"] and not man["has_attention"]
    # One call gives everything needed to score an image.
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 250, 3), np.uint8))
    x = m.preprocess_batch([img])
    assert x.shape == (1, 224, 224, 3)
    feats = m.model.features(m.variables, x)
    assert feats.logits.shape == (1, 10) and feats.feature.shape == (1, 512)
    assert feats.feature_map.shape == (1, 7, 7, 512)


def test_weights_inferred_from_official_name_and_hash(tmp_path, resnet18_sd):
    # A file named like the official download but with other content: the SHA-256 prefix in the
    # name does not match, so it is reported as corrupt instead of silently trusted.
    path = tmp_path / "resnet18-f37072fd.pth"
    torch.save(resnet18_sd, path)
    with pytest.raises(ValueError, match="corrupt or truncated"):
        tvc.convert(path, "resnet18", tmp_path / "out")
    # With a matching hash, the weights and the architecture are recognised.
    sha = "f37072fd" + "0" * 56
    w = tvc.resolve_weights("resnet18", "resnet18-f37072fd.pth", None, sha)
    assert w.name == "ResNet18_Weights.IMAGENET1K_V1"
    with pytest.raises(ValueError, match="use --arch resnet18"):
        tvc.resolve_weights("resnet50", "renamed.pth", None, sha)
    with pytest.raises(ValueError, match="IMAGENET1K_V2"):
        tvc.resolve_weights("resnet50", "x.pth", "IMAGENET1K_V7", "0" * 64)


def test_file_of_another_architecture(tmp_path, resnet18_pth):
    with pytest.raises(ValueError, match=r"512-d feature.*resnet50 has 2048.*--arch resnet18"):
        tvc.convert(resnet18_pth, "resnet50", tmp_path / "out")
    with pytest.raises(ValueError, match="classifier.weight"):
        tvc.convert(resnet18_pth, "densenet201", tmp_path / "out")
    with pytest.raises(ValueError, match="cannot convert architecture 'resnet19'"):
        tvc.convert(resnet18_pth, "resnet19", tmp_path / "out")


def test_same_keys_other_variant_is_a_shape_error(tmp_path):
    # ResNet-50 and ResNeXt-50 share every key name; only grouped-conv shapes differ.
    from safetensors.torch import save_file

    path = tmp_path / "r50.safetensors"
    save_file(torchvision.models.resnet50(num_classes=3).state_dict(), str(path))
    with pytest.raises(ValueError, match=r"(?s)shape mismatch.*layer1_0.*--arch resnet50"):
        tvc.convert(path, "resnext50_32x4d", tmp_path / "out")
    # ... and a ResNet-50 file read as ResNet-101 misses layer3.6 onwards.
    with pytest.raises(ValueError, match=r"(?s)layer3\.6\..*missing.*--arch resnet50"):
        tvc.convert(path, "resnet101", tmp_path / "out")


def test_missing_extra_and_misshaped_keys(tmp_path, resnet18_sd):
    for name, edit, pattern in [
        ("extra", lambda sd: sd.update({"aux.weight": torch.ones(3)}), r"not mapped.*aux\.weight"),
        (
            "missing",
            lambda sd: sd.pop("layer2.1.conv2.weight"),
            r"layer2\.1\.conv2\.weight.*missing",
        ),
        (
            "shape",
            lambda sd: sd.update({"layer3.0.conv1.weight": torch.ones(256, 128, 1, 1)}),
            r"(?s)shape mismatch.*layer3_0.*conv1",
        ),
    ]:
        sd = dict(resnet18_sd)
        edit(sd)
        path = tmp_path / f"{name}.pth"
        torch.save(sd, path)
        with pytest.raises(ValueError, match=pattern):
            tvc.convert(path, "resnet18", tmp_path / f"out_{name}")


def test_wrong_number_of_classes(tmp_path, resnet18_pth):
    with pytest.raises(ValueError, match=r"expected 1000 classes.*fc\.weight has 10"):
        tvc.convert(resnet18_pth, "resnet18", tmp_path / "out", num_classes=1000)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_truncated_file(tmp_path, resnet18_pth, suffix):
    src = resnet18_pth
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        src = tmp_path / "full.safetensors"
        save_file(torch.load(resnet18_pth), str(src))
    data = src.read_bytes()
    bad = tmp_path / f"truncated{suffix}"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        tvc.convert(bad, "resnet18", tmp_path / "out")
    with pytest.raises(FileNotFoundError):
        tvc.convert(tmp_path / "nope.pth", "resnet18", tmp_path / "out")


def test_pth_without_torch_names_the_extra(tmp_path, resnet18_pth, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    with pytest.raises(ImportError, match=r"jaxood\[torch\]"):
        tvc.read_state_dict(resnet18_pth)


def test_cli_convert(tmp_path, resnet18_pth, capsys):
    out = tmp_path / "cli_out"
    assert cli.main(["convert", str(resnet18_pth), "--arch", "resnet18", "--out", str(out)]) == 0
    assert (out / "manifest.json").is_file()
    assert "unknown weights file" in capsys.readouterr().out
    # Existing output and a wrong architecture: one-line errors, exit code 2.
    assert cli.main(["convert", str(resnet18_pth), "--arch", "resnet18", "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    code = cli.main(["convert", str(resnet18_pth), "--arch", "resnet101", "--out", str(out) + "2"])
    assert code == 2 and "another architecture" in capsys.readouterr().err
