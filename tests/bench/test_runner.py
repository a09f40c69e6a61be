"""End to end: image list -> features -> fit -> APS -> table, against NumPy/sklearn refs."""

import dataclasses
import json
import os

import numpy as np
import pytest
from PIL import Image
from scipy.special import logsumexp, softmax
from sklearn.metrics import roc_auc_score

from jaxood import models
from jaxood.bench import runner
from jaxood.data import benchmarks
from jaxood.features import extract as ex

from . import tiny_model

NUM_CLASSES = 3


def _write_imglist_benchmark(root) -> benchmarks.Benchmark:
    """Writes the toy arrays as PNGs in OpenOOD's layout and registers 'toy-imglist'."""
    data = tiny_model.toy_arrays(NUM_CLASSES)
    sets = {
        "id_train": data["train"], "id_val": data["val"], "id_test": data["test"],
        "ood_val": data["ood_val"], **data["near"], **data["far"],
        "csid": (np.clip(data["test"][0].astype(int) + 40, 0, 255).astype(np.uint8), data["test"][1]),
    }  # fmt: skip
    refs = {}
    for name, (x, y) in sets.items():
        lines = []
        for i, (img, lab) in enumerate(zip(x, y)):
            rel = f"toy/{name}/{i:03d}.png"
            os.makedirs(os.path.join(root, "images_classic", "toy", name), exist_ok=True)
            Image.fromarray(img).save(os.path.join(root, "images_classic", rel))
            lines.append(f"{rel} {int(lab)}\n")
        lst = f"benchmark_imglist/toy/{name}.txt"
        os.makedirs(os.path.join(root, "benchmark_imglist", "toy"), exist_ok=True)
        with open(os.path.join(root, lst), "w") as f:
            f.writelines(lines)
        refs[name] = benchmarks.SetRef(name, lst, "images_classic/", len(x))
    bench = benchmarks.Benchmark(
        name="toy-imglist",
        num_classes=NUM_CLASSES,
        id_train=refs["id_train"],
        id_val=refs["id_val"],
        id_test=refs["id_test"],
        ood_val=refs["ood_val"],
        near=(refs["near_a"], refs["near_b"]),
        far=(refs["noise"],),
        csid=(refs["csid"],),
        description="toy image list",
    )
    benchmarks.register(bench, overwrite=True)
    return bench


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    _write_imglist_benchmark(str(root / "data"))
    model_dir = tiny_model.save_tiny(str(root / "model"), NUM_CLASSES, input_shape=(8, 8, 3))
    return root, model_dir


def _reference_outputs(root, model_dir, name):
    """Logits/features straight from the PNGs with NumPy preprocessing and module.apply."""
    loaded = models.load(model_dir)
    lst = os.path.join(root, "data", "benchmark_imglist", "toy", f"{name}.txt")
    paths, labels = zip(*(line.split() for line in open(lst)))
    imgs = np.stack(
        [np.asarray(Image.open(os.path.join(root, "data", "images_classic", p))) for p in paths]
    )
    spec = loaded.preprocess
    x = (imgs / 255.0 - np.asarray(spec.mean)) / np.asarray(spec.std)
    out = loaded.module.apply(loaded.variables, x.astype(np.float32))
    v = loaded.variables["params"]["fc"]
    return (
        np.asarray(out.logits, np.float64),
        np.asarray(out.feature, np.float64),
        np.asarray(labels, int),
        v,
    )


def test_end_to_end_imglist_against_references(setup):
    root, model_dir = setup
    cfg = runner.BenchConfig(
        "toy-imglist", [model_dir], detectors=["msp", "react", "mds"],
        data_root=str(root / "data"), out_dir=str(root / "out"), progress=False, strict=True,
    )  # fmt: skip
    res = runner.run(cfg)
    out = res.out_dir
    for f in ("results.md", "results.csv", "results.json", "aps.json", "plots/auroc_near_far.png",
              "plots/hist_msp.png", "plots/roc_react.png"):  # fmt: skip
        assert os.path.isfile(os.path.join(out, f)), f

    ref = {
        n: _reference_outputs(root, model_dir, n)
        for n in ("id_val", "id_test", "ood_val", "near_a", "near_b", "noise")
    }
    lg_test, _, y_test, _ = ref["id_test"]
    acc = 100 * np.mean(lg_test.argmax(-1) == y_test)

    # MSP: sklearn AUROC (OOD positive, -conf) per set; near = unweighted mean of the sets.
    msp = {n: softmax(r[0], -1).max(-1) for n, r in ref.items()}

    def auroc(s_id, s_ood):
        y = np.r_[np.zeros(len(s_id)), np.ones(len(s_ood))]
        return 100 * roc_auc_score(y, -np.r_[s_id, s_ood])

    table = res.table["msp"]
    for n in ("near_a", "near_b", "noise"):
        assert table[n]["AUROC"][0] == pytest.approx(auroc(msp["id_test"], msp[n]), abs=1e-3)
    near_mean = np.mean([auroc(msp["id_test"], msp[n]) for n in ("near_a", "near_b")])
    assert table["nearood"]["AUROC"][0] == pytest.approx(near_mean, abs=1e-3)
    assert table["farood"]["AUROC"][0] == pytest.approx(table["noise"]["AUROC"][0])
    assert table["nearood"]["ACC"][0] == pytest.approx(acc)
    assert table["nearood"]["AUROC"][1] == 0.0  # one run: population std 0

    # ReAct APS vs brute force in NumPy: threshold = percentile of ID-val features (OpenOOD
    # fits ReAct on ID-val), energy of the clipped features; first maximum AUROC wins.
    from jaxood import detectors

    det = detectors.get("react")
    _, f_val, _, fc = ref["id_val"]
    w, b = np.asarray(fc["kernel"], np.float64), np.asarray(fc["bias"], np.float64)

    def react(feat, t):
        return logsumexp(np.minimum(feat, t) @ w + b, axis=-1)

    grid = list(detectors.sweep_grid(det))
    best, best_auc = grid[0], 0.0
    aucs = []
    for point in grid:
        t = np.percentile(f_val.ravel(), point["percentile"])
        aucs.append(auroc(react(f_val, t), react(ref["ood_val"][1], t)))
        if aucs[-1] > best_auc + 1e-9:
            best, best_auc = point, aucs[-1]
    assert len(set(np.round(aucs, 6))) > 1  # the grid points really differ here
    aps = json.load(open(os.path.join(out, "aps.json")))
    assert aps["react"][0]["chosen"]["percentile"] == best["percentile"]
    assert len(aps["react"][0]["grid"]) == len(list(detectors.sweep_grid(det)))

    # CSV and JSON agree with the in-memory table.
    saved = json.load(open(os.path.join(out, "results.json")))
    assert saved["table"]["msp"]["near_a"]["AUROC"]["mean"] == pytest.approx(
        table["near_a"]["AUROC"][0]
    )
    assert "nearood" in open(os.path.join(out, "results.csv")).read()


def test_rerun_hits_cache_without_network(setup, monkeypatch):
    root, model_dir = setup
    cfg = runner.BenchConfig(
        "toy-imglist", [model_dir], detectors=["msp", "ebo"],
        data_root=str(root / "data"), out_dir=str(root / "out2"), cache_dir=str(root / "cache2"),
        progress=False, plots=False, strict=True,
    )  # fmt: skip
    first = runner.run(cfg)
    assert first.info["network_passes"] > 0

    def no_network(*a, **k):
        raise AssertionError("network pass on a cached run")

    monkeypatch.setattr(ex, "_run_shards", no_network)
    second = runner.run(dataclasses.replace(cfg, rerun=True))  # recompute, from the cache
    assert second.info["network_passes"] == 0
    assert second.info["computed"] == ["ebo", "msp"]
    assert second.table == first.table


def test_multiple_runs_mean_and_population_std(setup):
    root, model_dir = setup
    other = tiny_model.save_tiny(str(root / "model_s1"), NUM_CLASSES, input_shape=(8, 8, 3), seed=1)
    cfg = runner.BenchConfig(
        "toy-imglist", [model_dir, other], detectors=["msp"], data_root=str(root / "data"),
        out_dir=str(root / "out3"), cache_dir=str(root / "cache"), progress=False, plots=False,
    )  # fmt: skip
    res = runner.run(cfg)
    vals = [r["near_a"]["AUROC"] for r in res.per_run["msp"]]
    assert res.table["msp"]["near_a"]["AUROC"] == pytest.approx((np.mean(vals), np.std(vals)))
    assert "±" in open(os.path.join(res.out_dir, "results.md")).read()


# --------------------------------------------------------------------------- bad input


def test_bad_inputs_fail_before_compute(setup, tmp_path, monkeypatch):
    root, model_dir = setup

    def no_network(*a, **k):
        raise AssertionError("compute started before the input was checked")

    monkeypatch.setattr(ex, "_run_shards", no_network)
    base = dict(
        data_root=str(root / "data"), out_dir=str(tmp_path / "o"), progress=False, plots=False
    )
    with pytest.raises(
        ValueError, match="unknown benchmark 'cifar9'; valid names: .*fashion-openset"
    ):
        runner.run(runner.BenchConfig("cifar9", [model_dir], **base))
    with pytest.raises(ValueError, match="unknown detector 'msq'; valid names: .*msp"):
        runner.run(runner.BenchConfig("toy-imglist", [model_dir], detectors=["msq"], **base))
    with pytest.raises(FileNotFoundError, match="image list"):
        runner.run(
            runner.BenchConfig("toy-imglist", [model_dir], **{**base, "data_root": str(tmp_path)})
        )
    wrong = tiny_model.save_tiny(str(tmp_path / "m4"), 4, input_shape=(8, 8, 3))
    with pytest.raises(ValueError, match="has 4 classes but benchmark 'toy-imglist' has 3"):
        runner.run(runner.BenchConfig("toy-imglist", [wrong], **base))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="not writable"):
        runner.run(
            runner.BenchConfig(
                "toy-imglist", [model_dir], **{**base, "out_dir": str(blocker / "sub")}
            )
        )
    module = tiny_model.TinyNetNoMap(num_classes=NUM_CLASSES)
    import jax

    nomap = models.save(
        str(tmp_path / "nomap"), arch="bench_tiny_nomap", num_classes=NUM_CLASSES,
        variables=models.init_variables(module, jax.random.PRNGKey(0), (8, 8, 3)),
        input_shape=(8, 8, 3), preprocess=models.load(model_dir).preprocess,
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"detector 'nap' needs \['feature_map'\]"):
        runner.run(runner.BenchConfig("toy-imglist", [nomap], detectors=["msp", "nap"], **base))
    with pytest.raises(ValueError, match="unknown detector"):
        runner.run(runner.BenchConfig("toy-imglist", [model_dir], hparams={"nope": {}}, **base))


def test_cli_bench(setup, tmp_path, capsys):
    from jaxood import cli

    root, model_dir = setup
    argv = [
        "bench",
        "--benchmark",
        "toy-imglist",
        "--model",
        model_dir,
        "--data-root",
        str(root / "data"),
    ]
    assert cli.main([*argv[:2], "cifar9", *argv[3:]]) == 2
    assert "valid names" in capsys.readouterr().err
    assert cli.main([*argv, "--detectors", "msq"]) == 2
    assert "unknown detector 'msq'" in capsys.readouterr().err
    out = str(tmp_path / "cli")
    assert cli.main([*argv, "--detectors", "mls", "--out", out, "--quiet", "--no-plots"]) == 0
    text = capsys.readouterr().out
    [folder] = os.listdir(os.path.join(out, "toy-imglist"))
    assert folder.startswith("bench_tiny-") and len(folder) == len("bench_tiny-") + 8
    assert "| mls |" in text and os.path.isfile(
        os.path.join(out, "toy-imglist", folder, "results.csv")
    )


def test_full_spectrum_mode_adds_covariate_shifted_id(setup):
    root, model_dir = setup
    cfg = runner.BenchConfig(
        "toy-imglist", [model_dir], detectors=["msp"], data_root=str(root / "data"),
        out_dir=str(root / "out_fs"), cache_dir=str(root / "cache"), fsood=True, progress=False,
        plots=False, strict=True,
    )  # fmt: skip
    res = runner.run(cfg)
    test, csid = (
        _reference_outputs(root, model_dir, "id_test"),
        _reference_outputs(root, model_dir, "csid"),
    )
    logits = np.concatenate([test[0], csid[0]])
    labels = np.concatenate([test[2], csid[2]])
    s_id = softmax(logits, -1).max(-1)
    s_ood = softmax(_reference_outputs(root, model_dir, "noise")[0], -1).max(-1)
    y = np.r_[np.zeros(len(s_id)), np.ones(len(s_ood))]
    row = res.table["msp"]["noise"]
    assert row["AUROC"][0] == pytest.approx(100 * roc_auc_score(y, -np.r_[s_id, s_ood]), abs=1e-3)
    assert row["ACC"][0] == pytest.approx(100 * np.mean(logits.argmax(-1) == labels))


def test_stage_timings_count_every_image_once(setup, monkeypatch):
    """features + AdaSCALE-A: each image is decoded once and the clean forward runs once (the
    features come from AdaSCALE's pass): one pass with two forwards, clean and perturbed, in
    place of a features pass (one forward) and an AdaSCALE pass (two); besides it, one
    batch through the features program checks that the bits agree."""
    root, model_dir = setup
    batch = 64
    forwards = []  # network calls traced at the runner's batch (shape probes use batch 1)
    call = tiny_model.TinyNet.__call__

    def counting(self, x, train=False):
        if x.shape[0] == batch:
            forwards.append(x.shape)
        return call(self, x, train)

    monkeypatch.setattr(tiny_model.TinyNet, "__call__", counting)
    cfg = runner.BenchConfig(
        "toy-imglist", [model_dir], detectors=["msp", "adascale_a"],
        hparams={"adascale_a": {"k1": 10.0, "k2": 25.0}}, data_root=str(root / "data"),
        out_dir=str(root / "out_t"), cache_dir=str(root / "cache_t"), progress=False,
        plots=False, strict=True, batch_size=batch,
    )  # fmt: skip
    res = runner.run(cfg)
    lists = os.path.join(root, "data", "benchmark_imglist", "toy")
    sizes = {n: sum(1 for _ in open(os.path.join(lists, f"{n}.txt")))
             for n in ("id_val", "id_test", "ood_val", "near_a", "near_b", "noise")}
    stages = res.info["timings"][0]["stages"]
    n_all = sum(sizes.values())
    kind = "features+extract/adascale_a"
    assert {k for k in stages if k.endswith("/decode")} == {f"{kind}/decode"}
    assert stages[f"{kind}/decode"]["items"] == n_all
    computed = [stages[f"{kind}/{s}"]["items"] for s in ("first_batch", "network")
                if f"{kind}/{s}" in stages]
    assert sum(computed) == n_all
    assert stages[f"{kind}/cache_write"]["items"] == n_all
    # Traced: the one-pass program (clean forward inside the gradient, perturbed forward) and
    # the plain features program that checks, on one batch, that both give the same bits.
    assert len(forwards) == 3
    assert "check/features+extract/adascale_a" in stages
    assert res.info["network_passes"] == len(sizes)
    for name in ("open", "aps/msp", "aps/adascale_a", "evaluate/adascale_a",
                 "metrics/adascale_a", "write_results"):
        assert stages[name]["seconds"] >= 0
    total = sum(s["seconds"] for s in stages.values())
    assert total <= res.info["total_s"]
    log = [json.loads(line) for line in open(os.path.join(res.out_dir, "runs.jsonl"))]
    assert log[-1]["stages"] == [stages] and log[-1]["write_report_s"] >= 0
