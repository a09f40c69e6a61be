"""Every experiment end to end on ``demo`` (tiny models), with the paper's identities checked
against the benchmark runner's detectors, and a second run that never touches the network."""

import json
import math
import os

import numpy as np
import pytest

from jaxood import analyses
from jaxood import detectors as det_registry
from jaxood.analyses import common
from jaxood.analyses import verdicts as V
from jaxood.analyses.output import find
from jaxood.bench import runner
from jaxood.detectors import adascale
from jaxood.features import extract as ex
from jaxood.types import Features, Inputs

from .conftest import OPTIONS, make_context
from .test_units import ref_forms

#: AUROC/FPR tolerance (percentage points) between the analyses' vectorised re-scoring
#: (``h(e^r f) = e^r W f + b``) and the runner's scorer: float rounding may swap a few
#: near-tied scores (one swap = 100 / (N_id N_ood) ~ 6e-4 points here).
TOL = 0.05


def reference(world, detectors, hparams, tag, models):
    """The benchmark runner without APS at fixed hyperparameters (same feature cache)."""
    root = world["root"]
    cfg = runner.BenchConfig(
        "demo", list(models), detectors=list(detectors), out_dir=str(root / f"ref-{tag}"),
        cache_dir=str(root / "cache"), aps=False, hparams=hparams, plots=False,
        progress=False, save_detectors=False, strict=True,
    )
    return runner.run(cfg).table


def assert_same_metrics(row, table_row):
    for group in ("near", "far"):
        for metric in ("AUROC", "FPR@95"):
            assert row[f"{group}_{metric}"] == pytest.approx(
                table_row[f"{group}ood"][metric][0], abs=TOL), (group, metric)


def test_every_experiment_writes_its_record(world, records):
    out = world["root"] / "out"
    assert set(records) == set(analyses.names())
    for name, rec in records.items():
        on_disk = json.loads((out / f"{name}.json").read_text())
        assert on_disk["experiment"] == name and on_disk["tables"], name
        assert (out / f"{name}.md").read_text().startswith(f"# {rec['paper']}")
        for plot in rec["plots"]:
            assert (out / plot).stat().st_size > 1000, plot
        for v in rec["verdicts"]:
            assert v["outcome"] in V.OUTCOMES and v["claim"] and v["here"], (name, v)
            assert v["interval"] or v["outcome"] == V.NA, (name, v)
        assert rec["wall_s"] > 0
    assert records["fig7_pgrid"]["plots"] and records["fig6a_k1k2"]["plots"]


def test_cached_feature_experiments_add_no_network_pass(records):
    """The headline run extracts the default features once; every analysis that does not
    change the perturbation reads them from the cache."""
    assert records["headline"]["network_passes"] > 0
    for name, rec in records.items():
        if rec["kind"] == "features":
            assert rec["network_passes"] == 0, name
    assert records["table9_region"]["network_passes"] > 0  # new perturbations: new passes


def test_pgrid_diagonal_equals_scale_and_lts(world, records):
    table = records["fig7_pgrid"]["tables"]["p_grid"]
    for p in OPTIONS["values"]:
        ref = reference(world, ["scale", "lts"], {"scale": {"percentile": p},
                                                  "lts": {"percentile": p}}, f"p{p}",
                        world["models"])
        assert_same_metrics(find(table, variant="a", p_min=p, p_max=p), ref["scale"])
        assert_same_metrics(find(table, variant="l", p_min=p, p_max=p), ref["lts"])


def test_pgrid_diagonal_scores_are_scale_scores(world):
    ctx = make_context(world)
    run = ctx.run_data(world["models"][0])
    scorer = common.AdaScorer(run, common.default_arrays(run))
    stats = common.fit_stats(*scorer.arrays["id_val"])
    for split in ("id_test", "far/noise"):
        inputs = Inputs(Features(logits=run.logits(split), feature=run.feature(split)))
        for p in (80, 95):
            for variant, name in (("a", "scale"), ("l", "lts")):
                got = scorer.scores(stats, [(p, p)], split, variant)[0]
                want = det_registry.score(det_registry.get(name), run.model, run.variables, None,
                                          inputs, percentile=p)
                want = np.asarray(want)
                # The re-scoring uses h(e^r f) = e^r W f + b: float rounding of the logits.
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    # Off the diagonal the eCDF matters: ID-test samples spread over it, so the adaptive
    # scores are not those of either end's fixed percentile.
    adaptive = scorer.scores(stats, [(60, 95)], "id_test")[0]
    for p in (60, 95):
        assert not np.allclose(adaptive, scorer.scores(stats, [(p, p)], "id_test")[0])


def _per_run(world, rec, table, tag, **labels):
    """Each run's row of ``table`` against the runner's AdaSCALE-A at that run's pair."""
    for i, entry in enumerate(rec["settings"]["percentile"]):
        pair = tuple(entry["percentile"])
        ref = reference(world, ["adascale_a"], {"adascale_a": {"percentile": pair}},
                        f"{tag}{i}", [world["models"][i]])
        row = next(r for r in rec["tables"][table]["raw_rows"]
                   if r["run"] == i and all(r[k] == v for k, v in labels.items()))
        assert_same_metrics(row, ref["adascale_a"])


def test_region_trivial_5pc_equals_default_adascale(world, records):
    rec = records["table9_region"]
    _per_run(world, rec, "region", "region", region="trivial", **{"o %": 5.0})
    # ... and the other regions really perturb other elements.
    run = make_context(world).run_data(world["models"][0], subset=2000)
    default = run.perturbed("id_val")
    for region, o in (("significant", 0.05), ("random", 0.05), ("all", 1.0)):
        assert not np.array_equal(run.perturbed("id_val", region=region, o=o), default)


def test_nval_all_equals_default_fit(world, records):
    rec = records["table7_nval"]
    _per_run(world, rec, "n_val", "nval", n_val="all")
    row = find(rec["tables"]["n_val"], n_val="10")
    assert row["n"] == OPTIONS["draws"] * len(world["models"])
    assert row["near_AUROC_std"] > 0  # different draws, different eCDFs
    assert find(rec["tables"]["n_val"], n_val="1000") is None  # > the 100 ID-val samples
    assert "1000" in rec["tables"]["n_val"]["note"]


def test_qprime_method_form_equals_default_adascale(world, records):
    rec = records["table6_qprime"]
    _per_run(world, rec, "q_forms", "qform", q_form="lambda_q+c_o")
    rows = {r["q_form"]: r for r in rec["tables"]["q_forms"]["rows"]}
    assert set(rows) == set(adascale.Q_FORMS)


def test_eps_zero_gives_zero_shift(records):
    table = records["table10_eps"]["tables"]["eps"]
    assert find(table, eps=0.0)["Q max (ID val)"] == 0.0
    assert find(table, eps=0.5)["Q max (ID val)"] > 0.0


def test_latency_positive_finite_for_every_dim(records):
    rows = records["table11_latency"]["tables"]["latency"]["rows"]
    assert sorted({r["D"] for r in rows}) == [128, 512, 1024, 2048, 3024]
    for r in rows:
        for k in ("fixed µs", "variable µs", "ratio"):
            assert math.isfinite(r[k]) and r[k] > 0, (r, k)


def test_bench_tables(records):
    head = records["headline"]["tables"]["headline"]["rows"]
    assert {r["detector"] for r in head} == set(analyses.bench_tables.HEADLINE)
    assert all(r["n"] == 2 for r in head)  # two runs: mean ± std
    methods = records["table4_training"]["tables"]["training_methods"]["rows"]
    assert {r["method"] for r in methods} == {"ce", "ln"}
    fs = records["table3_fsood"]
    assert fs["settings"]["benchmark"] == "demo+cs"
    assert {r["setting"] for r in fs["tables"]["full_spectrum"]["rows"]} == {"OOD", "FS-OOD"}


def test_second_run_reads_everything_from_the_cache(world, records, monkeypatch):
    def no_network(*a, **k):
        raise AssertionError("network pass on a cached run")

    monkeypatch.setattr(ex, "_run_shards", no_network)
    ctx = make_context(world)  # nothing in memory: only the on-disk cache and result store
    # "stability" runs its own extraction passes every time (jittered inputs, two precisions):
    # what it measures is the network run itself, so it is not read from the cache.
    assert records["stability"]["network_passes"] > 0
    for name in [n for n in analyses.names() if n != "stability"]:
        rec = analyses.run_experiment(name, ctx)
        assert rec["network_passes"] == 0, name
        # The record is replaced, the cost of the run that computed it is kept.
        assert records[name]["wall_s"] in [r["wall_s"] for r in rec["earlier_runs"]], name
        assert json.load(open(os.path.join(ctx.out_dir, f"{name}.json")))["earlier_runs"] == \
            rec["earlier_runs"], name
        if name in ("fig7_pgrid", "table6_qprime", "table7_nval", "headline"):
            assert rec["tables"] == records[name]["tables"], name


def test_report_collects_every_verdict(world, records):
    from jaxood.analyses.report import write_report

    disc = world["root"] / "discussion.md"
    disc.write_text("Hand-written conclusions.\n")
    path = write_report(str(world["root"] / "out"), discussion=str(disc))
    text = open(path).read()
    assert text.startswith("# The AdaSCALE paper's analyses") and "Hand-written" in text
    assert text.index("## Discussion (hand-written)") < text.index("Hand-written conclusions")
    n = sum(len(r["verdicts"]) for r in records.values())
    assert sum(text.count(f"| {m} |") for m in ("holds", "**does not hold**", "inconclusive",
                                                "n/a")) == n
    assert os.path.basename(path) == "REPORT.md"


def test_cli_runs_experiments_from_the_cache(world, records, monkeypatch):
    from jaxood.cli import main

    monkeypatch.setattr(ex, "_run_shards", lambda *a, **k: (_ for _ in ()).throw(
        AssertionError("network pass")))
    out = world["root"] / "cli"
    argv = ["experiment", "fig7_pgrid", "fig4_q_ratio", "--import", "tests.bench.tiny_model",
            "--benchmark", "demo", "--model", *world["models"], "--out", str(out),
            "--cache", str(world["root"] / "cache"), "--option", "values=[80, 95]", "--quiet"]
    assert main(argv) == 0
    rec = json.loads((out / "fig7_pgrid.json").read_text())
    assert rec["settings"]["values"] == [80, 95] and rec["options"] == {"values": [80, 95]}
    assert (out / "fig7_pgrid_a.png").is_file() and (out / "REPORT.md").is_file()


def test_earlier_runs_are_kept_and_a_corrupt_record_is_reported(tmp_path):
    from jaxood.analyses.output import earlier_runs

    assert earlier_runs(str(tmp_path), "fig3_shift") == []
    first = {"command": "a", "wall_s": 5.0, "network_passes": 3, "jaxood_version": "x",
             "earlier_runs": [{"command": "z", "wall_s": 9.0}]}
    (tmp_path / "fig3_shift.json").write_text(json.dumps(first))
    runs = earlier_runs(str(tmp_path), "fig3_shift")
    assert [r["command"] for r in runs] == ["z", "a"] and runs[1]["wall_s"] == 5.0
    (tmp_path / "fig3_shift.json").write_text('{"command": "a", "wall_')
    with pytest.warns(UserWarning, match="fig3_shift.json: unreadable earlier record"):
        assert earlier_runs(str(tmp_path), "fig3_shift") == []


def test_stability_zero_jitter_changes_nothing(world, records):
    rec = records["stability"]
    rows = rec["tables"]["stability"]["raw_rows"]
    assert {r["comparison"] for r in rows} == {"input jitter, float32",
                                               "float64 vs float32 attribution",
                                               "input jitter, float64"}
    ctx = make_context(world, models=world["models"][:1], out_dir=str(world["root"] / "st0"),
                       options={**OPTIONS, "jitter": 0.0})
    zero = analyses.run_experiment("stability", ctx)
    for row in zero["tables"]["stability"]["raw_rows"]:
        if row["comparison"].startswith("input jitter"):
            assert row["selected changed %"] == 0 and row["max |Δscore|"] == 0, row
            assert row["decision flips"] == 0


def test_pgrid_flip_equals_the_reversed_pair(world, records):
    """The flipped eCDF (fit on -Q') at (a, b) is the method's mapping at (b, a): p = a +
    F(Q') (b - a), with no ties between test and ID-val values."""
    ctx = make_context(world)
    run = ctx.run_data(world["models"][0])
    scorer = common.AdaScorer(run, common.default_arrays(run))
    flipped = common.AdaScorer(run, scorer.arrays, share=scorer, flip=True)
    stats = common.fit_stats(*scorer.arrays["id_val"], lmbda=3.0)
    stats_flip = common.fit_stats(*scorer.arrays["id_val"], lmbda=3.0, flip=True)
    got = flipped.scores(stats_flip, [(80, 95)], "id_test")
    want = scorer.scores(stats, [(95, 80)], "id_test")
    np.testing.assert_array_equal(got, want)
    assert not np.array_equal(got, scorer.scores(stats, [(80, 95)], "id_test"))
    rows = records["fig7_pgrid"]["tables"]["p_grid"]["rows"]
    for r in rows:  # the diagonal does not depend on Q': flipped = SCALE there too
        if r["variant"] == "a-flip" and r["p_min"] == r["p_max"]:
            same = find({"rows": rows}, variant="a", p_min=r["p_min"], p_max=r["p_max"])
            assert r["near_AUROC"] == pytest.approx(same["near_AUROC"], abs=1e-9)
    lam = records["fig7_pgrid"]["settings"]["per_run"][0]["flip_lambda"]
    f, ft = scorer.arrays["id_val"]
    ref = ref_forms(f, ft, 1.0, 5.0, 1.0)
    assert lam == pytest.approx(ref["c_o"].mean() / ref["q"].mean(), rel=1e-5)


def test_q_terms_decompose_qprime_and_match_numpy(world, records):
    from jaxood.analyses.activations import q_terms

    run = make_context(world).run_data(world["models"][0])
    t = q_terms(run, ["id_test"])["id_test"]
    ref = ref_forms(run.feature("id_test"), run.perturbed("id_test"), 1.0, 5.0, 10.0)
    np.testing.assert_allclose(t["Q"], ref["q"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(t["C_o"], ref["c_o"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(t["Q'"], ref["lambda_q+c_o"], rtol=1e-5, atol=1e-5)
    for row in records["fig4_q_ratio"]["tables"]["q_terms"]["raw_rows"]:
        assert row["C_o"] + row["lambda Q"] == pytest.approx(row["Q'"], rel=1e-5)
    ratio = records["fig4_q_ratio"]["tables"]["q_ratio"]["raw_rows"]
    assert {r["run"] for r in ratio} == {0, 1}  # every model, per-run rows kept


def test_all_skips_what_has_no_data_and_always_reports(world, records, tmp_path, capsys):
    from jaxood.analyses.covariate import fsood_unavailable
    from jaxood.analyses.report import write_report
    from jaxood.cli.experiment import run_selected

    ctx = make_context(world, method_models={}, out_dir=str(tmp_path))
    skipped = run_selected(["table4_training", "fig4_q_ratio"], ctx, explicit=set())
    assert list(skipped) == ["table4_training"] and "--method-model" in skipped["table4_training"]
    assert "table4_training: skipped" in capsys.readouterr().out
    assert (tmp_path / "fig4_q_ratio.json").is_file()
    with pytest.raises(ValueError, match="table4_training: needs"):
        run_selected(["table4_training"], ctx, explicit={"table4_training"})
    text = open(write_report(str(tmp_path), skipped=skipped)).read()
    assert "- skipped `table4_training`: needs" in text and "Outcomes:" in text
    assert "no covariate-shifted" in fsood_unavailable("cifar100", None)
    assert "lists absent" in fsood_unavailable("imagenet-adascale", str(tmp_path))
    assert fsood_unavailable("demo", None) is None
