"""Tests of the robustness evaluation (edgeguard.converters.evaluation, `edgeguard evaluate`).

One tiny bundle (a width-8 CNN, 1,000 training digits, one hardening epoch, two int8
artifacts) and one quick evaluation are built per module and shared; metrics are also
checked on constructed cases with known answers.
"""

from __future__ import annotations

import json
import os
import re
import shutil

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("art")
pytest.importorskip("mlxtend")
pytest.importorskip("litert_torch")
pytest.importorskip("ai_edge_litert")
pytest.importorskip("matplotlib")

import edgeguard  # noqa: E402
from edgeguard import _cli  # noqa: E402
from edgeguard.converters import HardeningConfig, InputSpec, convert, mnist_cnn, mnist_splits  # noqa: E402
from edgeguard.converters import attacks as atk  # noqa: E402
from edgeguard.converters import evaluation as E  # noqa: E402
from edgeguard.converters.errors import ConversionError  # noqa: E402
from edgeguard.converters.hardening import deterministic, train_clean  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = InputSpec((1, 28, 28), "NCHW")
SPLIT = dict(seed=0, n_train=1000, n_calib=200, n_test=200)
ARTIFACTS = ["int8-onnx", "int8-tflite"]
QUICK = dict(n_test=80, n_cw=10, n_blackbox=10, blackbox_iter=20, n_sweep=30, n_restart_check=10)


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """A tiny signed bundle with its source sidecar, like the MNIST job writes."""
    out = tmp_path_factory.mktemp("job")
    splits = mnist_splits(**SPLIT)
    with deterministic(0):
        m = mnist_cnn(width=8)
    train_clean(m, SPEC, splits["train"], epochs=4, lr_max=1e-2, batch_size=32, progress=False)
    r = convert(m, SPEC, splits["calibration"], splits["test"], out_dir=str(out), train=splits["train"],
                hardening=HardeningConfig("fgsm", eps=0.3, epochs=1, lr_max=1e-3), evaluate_hardening=False,
                key="generate", name="tiny", created=0, artifacts=ARTIFACTS, per_artifact_bundles=True,
                latency_runs=5, progress=False,
                save_source={"factory": "edgeguard.converters.models:mnist_cnn", "kwargs": {"width": 8},
                             "data": {"kind": "mnist", **SPLIT}})
    return {"result": r, "splits": splits, "out": str(out)}


@pytest.fixture(scope="module")
def ev(job, tmp_path_factory):
    r = job["result"]
    return E.evaluate(r.bundle_path, r.public_key_path, config=E.EvalConfig.quick(**QUICK),
                      out_dir=str(tmp_path_factory.mktemp("eval")), progress=False)


# --- end to end -----------------------------------------------------------------------------

def test_sidecar_written_and_matches_the_bundle(job):
    r = job["result"]
    side = json.load(open(r.source_sidecar_path))
    assert side["format"] == "edgeguard-source-model" and side["factory"].endswith(":mnist_cnn")
    assert side["state_dict_sha256"] == r.manifest["provenance"]["source_model_sha256"]
    assert os.path.exists(os.path.join(job["out"], side["weights"]))


def test_end_to_end_report_validates_and_covers_every_artifact_and_attack(ev):
    rep = ev.report
    E.validate_evaluation(rep)
    assert rep["bundle"]["signature_verified"] and rep["source"]["matches_bundle"]
    assert set(rep["artifacts"]) == set(ARTIFACTS)
    for aid, a in rep["artifacts"].items():
        assert set(a["attacks"]) == set(E.EvalConfig().attacks), aid
        for kind, m in a["attacks"].items():
            assert m["threat_model"] == E.ATTACK_THREAT[kind]
            assert m["false_positive_rate"] == a["clean"]["false_positive_rate"]
    # the protocol: default data = the bundle's MNIST test split; calibration split = the bundle's
    assert rep["data"]["test"]["is_bundle_validation_data"]
    assert rep["data"]["calibration"]["matches_bundle_calibration"]
    assert rep["data"]["overlap_with_test"] == {"calibration": 0, "train": 0}
    names = {s["name"]: s for s in rep["sanity_checks"]}
    assert names["bundle thresholds reproduced from the calibration split (legitimate data only)"]["passed"]
    for c in rep["costbenefit"]["bundle_config_checks"].values():
        assert c["max_abs_score_diff_vs_device_joint"] <= 1e-6
    # files: JSON re-validates, text has the headline, HTML is self-contained with its charts
    loaded = json.load(open(ev.json_path))
    E.validate_evaluation(loaded)
    text = open(ev.text_path).read()
    assert "acc attacked" in text and "detector cost/benefit" in text and "sanity checks" in text
    html = open(ev.html_path).read()
    assert html.count("data:image/png;base64,") >= 5
    assert not re.search(r'(src|href)="(https?:)?//', html)
    for tm in E.THREAT_MODELS.values():
        assert tm.split(":")[0][:40] in html


def test_costbenefit_table_has_the_required_configurations(ev):
    names = [c["name"] for c in ev.report["costbenefit"]["configs"]]
    for b in range(1, 9):
        assert f"bit depth {b}" in names
    for n in ("median 2x2", "median 3x3", "bit depth 1 + median 2x2", "bit depth 5 + median 2x2"):
        assert n in names
    bundle = [c for c in ev.report["costbenefit"]["configs"] if c["is_bundle_config"]]
    assert [c["name"] for c in bundle] == ["bit depth 1 + median 2x2"]
    for c in ev.report["costbenefit"]["configs"]:
        for aid, e in c["per_artifact"].items():
            assert e["calibration_fpr"] <= 0.05 + 1e-9
            assert e["latency"]["runs"] >= 1


def test_adaptive_attack_evades_the_detector_better_than_pgd(ev):
    for aid, a in ev.report["artifacts"].items():
        pgd, ad = a["attacks"]["pgd"], a["attacks"]["adaptive"]
        assert ad["undetected_success_rate"] >= pgd["undetected_success_rate"], aid
        if pgd["detection_rate"] is not None and ad["detection_rate"] is not None:
            assert ad["detection_rate"] < pgd["detection_rate"], aid


def test_black_box_attack_queries_the_runtime(job):
    r = job["result"]
    test = job["splits"]["test"]
    model = edgeguard.load(r.bundle_path, public_key=r.public_key_path, artifact="int8-tflite")
    calls = []
    real = model.predict

    def spy(x, **kw):
        calls.append((len(x), x.dtype, kw.get("detect", True)))
        return real(x, **kw)

    model.predict = spy
    x, y = test.x[::20], test.y[::20]
    adv, p = atk.black_box(model, SPEC, x, y, max_iter=10)
    assert calls and p["queries"] == sum(c[0] for c in calls) and p["calls"] == len(calls)
    assert all(c[1] == np.uint8 and c[2] is False for c in calls)  # uint8 images, plain path
    assert p["queries"] >= len(x) * 10  # at least one image per input and iteration
    assert adv.dtype == np.uint8 and np.abs(adv.astype(int) - x).max() <= 76  # eps 0.3 in pixels


def test_black_box_queries_are_reported(ev):
    per = ev.report["attacks"]["square"]["params"]["per_artifact"]
    assert set(per) == set(ARTIFACTS)
    assert all(v["queries"] > 0 and v["calls"] > 0 for v in per.values())


# --- metrics on constructed cases ----------------------------------------------------------------

def test_roc_auc_and_curve_on_known_scores():
    neg = np.array([0.1, 0.2, 0.3, 0.4])
    pos = np.array([0.35, 0.5, 0.6])
    assert E.roc_auc(neg, pos) == pytest.approx(11 / 12)
    fpr, tpr, thr = E.roc_curve(neg, pos)
    assert (fpr[0], tpr[0]) == (0, 0) and (fpr[-1], tpr[-1]) == (1, 1)
    assert np.trapezoid(tpr, fpr) == pytest.approx(11 / 12)
    for f, t, th in zip(fpr, tpr, thr):  # every point is the rule score > threshold
        assert f == np.mean(neg > th) and t == np.mean(pos > th)
    assert E.roc_auc([0.5, 0.5], [0.5]) == 0.5  # ties count half
    assert E.roc_auc([0.1], [np.nan]) == 1.0  # NaN is flagged by the device: ranked highest
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    a, b = rng.random(300).round(2), rng.random(200).round(2) + 0.2
    assert E.roc_auc(a, b) == pytest.approx(sk.roc_auc_score(np.r_[np.zeros(300), np.ones(200)], np.r_[a, b]))


def test_attack_metrics_on_a_constructed_case():
    y = np.array([0, 1, 2, 3, 4, 5])
    clean = np.array([0, 1, 2, 3, 4, 9])  # 5 clean-correct
    adv = np.array([7, 7, 7, 3, 4, 9])  # 3 successful (0, 1, 2); 3 and 4 resisted; 5 was wrong anyway
    clean_scores = np.array([0.01, 0.02, 0.03, 0.04, 0.5, 0.06, 0.07, 0.08, 0.09, 0.10])  # 1 of 10 above 0.2
    adv_scores = np.array([0.9, 0.3, 0.05, 0.9, 0.01, 0.01])
    m = E.attack_metrics(y, clean, adv, clean_scores, adv_scores, 0.2)
    assert m["n"] == 6 and m["n_clean_correct"] == 5 and m["n_successful"] == 3
    assert m["clean_accuracy"] == pytest.approx(5 / 6) and m["accuracy"] == pytest.approx(2 / 6)
    assert m["success_rate"] == pytest.approx(3 / 5)
    assert m["detection_rate"] == pytest.approx(2 / 3)  # 0.9 and 0.3 flagged, 0.05 not
    assert m["false_positive_rate"] == pytest.approx(0.1)
    assert m["undetected_success_rate"] == pytest.approx(1 / 5)
    assert m["correct_or_flagged"] == pytest.approx(4 / 6)  # 0, 1 flagged; 3, 4 correct
    # AUC of successful scores [0.9, 0.3, 0.05] vs the 10 legitimate: 10 + 9 + 4 pairs won out of 30
    assert m["roc_auc"] == pytest.approx(23 / 30)
    none = E.attack_metrics(y, clean, clean, clean_scores, adv_scores, 0.2)
    assert none["n_successful"] == 0 and none["detection_rate"] is None and none["roc_auc"] is None


def test_threshold_rule_is_the_devices():
    from edgeguard.converters.evaluation import metrics
    from edgeguard.squeeze import is_flagged

    assert metrics.is_flagged is is_flagged  # the evaluation counts flags with the device's one rule
    assert is_flagged(np.array([0.2, 0.21, np.nan], np.float32), 0.2).tolist() == [False, True, True]


# --- schema -------------------------------------------------------------------------------------

def test_validator_rejects_bad_reports(ev):
    bad = json.loads(json.dumps(ev.report))
    del bad["targets"]
    with pytest.raises(ConversionError, match="targets"):
        E.validate_evaluation(bad)
    bad = json.loads(json.dumps(ev.report))
    aid = next(iter(bad["artifacts"]))
    bad["artifacts"][aid]["attacks"]["fgsm"]["detection_rate"] = 1.5
    with pytest.raises(ConversionError, match="detection_rate"):
        E.validate_evaluation(bad)
    bad = json.loads(json.dumps(ev.report))
    bad["attacks"]["pgd"]["threat_model"] = "psychic"
    with pytest.raises(ConversionError, match="threat_model"):
        E.validate_evaluation(bad)


def test_documented_schema_lists_every_field():
    doc = open(os.path.join(ROOT, "docs", "evaluation.md"), encoding="utf-8").read()
    section = doc[doc.index("## The JSON report"):]
    documented = set(re.findall(r"^\| `([a-z_]+)`", section, re.M))
    for key in E.REQUIRED:
        if key in ("schema", "schema_version"):
            continue
        assert key in documented, key
    for key in list(E.METRICS_REQUIRED) + list(E.CONFIG_ENTRY_REQUIRED):
        assert f"`{key}`" in doc, key


# --- runtime hook ---------------------------------------------------------------------------------

def test_with_squeezers_hook(job):
    r = job["result"]
    x = job["splits"]["test"].x[:16]
    model = edgeguard.load(r.bundle_path, artifact="int8-onnx")
    same = model.with_squeezers(r.manifest["squeezers"], model.threshold)
    np.testing.assert_array_equal(same.predict(x).scores, model.predict(x).scores)
    one = model.with_squeezers([{"kind": "bit_depth", "bits": 1}])
    out = one.predict(x)
    assert list(out.squeezer_scores) == ["bit_depth_1"] and one.threshold is None and not out.is_adversarial.any()
    np.testing.assert_array_equal(out.scores, model.predict(x).squeezer_scores["bit_depth_1"])
    assert one.backend is model.backend and model.squeezers == tuple(
        edgeguard.squeeze.Squeezer.from_manifest(s) for s in r.manifest["squeezers"])  # the original is unchanged


# --- command line ---------------------------------------------------------------------------------

def test_cli_evaluate_with_the_sidecar(job, tmp_path, capsys):
    r = job["result"]
    bundle = r.artifact_bundles["int8-tflite"]  # per-artifact bundle: finds tiny.source.json by weights hash
    code = _cli.main(["evaluate", bundle, "--public-key", r.public_key_path, "--quick", "--n-test", "40",
                      "--attacks", "fgsm,pgd", "--no-costbenefit", "--no-html", "--quiet", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    assert "int8-tflite" in out and "acc attacked" in out
    rep = json.load(open(tmp_path / "tiny.evaluation.json"))
    E.validate_evaluation(rep)
    assert rep["source"]["how"].startswith("sidecar") and rep["costbenefit"] is None


def test_cli_evaluate_with_explicit_source_and_data(job, tmp_path, capsys):
    r = job["result"]
    side = json.load(open(r.source_sidecar_path))
    weights = os.path.join(job["out"], side["weights"])
    test, calib = job["splits"]["test"], job["splits"]["calibration"]
    np.save(tmp_path / "x.npy", test.x[:60])
    np.save(tmp_path / "y.npy", test.y[:60])
    np.save(tmp_path / "c.npy", calib.x)
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(r.bundle_path, lone / "m.egb")  # no sidecar next to it
    code = _cli.main(["evaluate", str(lone / "m.egb"), "--source-factory", "edgeguard.converters.models:mnist_cnn",
                      "--source-kwargs", '{"width": 8}', "--source-weights", weights, "--data",
                      str(tmp_path / "x.npy"), "--labels", str(tmp_path / "y.npy"), "--calib", str(tmp_path / "c.npy"),
                      "--quick", "--attacks", "fgsm", "--artifacts", "int8-onnx", "--quiet", "--json"])
    out = capsys.readouterr().out
    assert code == 0
    rep = json.loads(out)
    E.validate_evaluation(rep)
    assert rep["source"]["matches_bundle"] and rep["data"]["test"]["n_evaluated"] == 60
    assert rep["data"]["calibration"]["matches_bundle_calibration"]
    assert os.path.exists(lone / "tiny.evaluation.html")
    # without a source model: one line, typed error, exit 1
    code = _cli.main(["evaluate", str(lone / "m.egb"), "--quick", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "SourceModelError" in err and "--source-factory" in err


def test_cli_evaluate_is_registered_and_names_its_extra(monkeypatch, capsys):
    with pytest.raises(SystemExit):
        _cli.main(["evaluate", "--help"])
    assert "pip install edgeguard[evaluate]" in capsys.readouterr().out
    import sys

    monkeypatch.setitem(sys.modules, "art", None)  # ART missing
    code = _cli.main(["evaluate", "whatever.egb", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "pip install edgeguard[evaluate]" in err


# --- issue 12: beyond the lab, undetected success first -----------------------------------------

def test_report_carries_the_robustness_suite_and_leads_with_undetected_success(ev):
    import copy

    from edgeguard.converters import robustness as R
    from edgeguard.converters.evaluation.report import HEADLINE_HEADER, headline_rows

    r = ev.report
    sec = r["robustness"]
    assert sec is not None and set(sec["artifacts"]) == set(r["artifacts"])
    R.validate_robustness(sec)
    assert r["config"]["robustness"]["severities"] == [1, 3, 5]
    # the headline's first figure column is the undetected success, detection and FPR right after it
    assert HEADLINE_HEADER[5:8] == ["UNDETECTED SUCC", "detected (n succ)", "FPR"]
    aid = next(iter(r["artifacts"]))
    fgsm = r["artifacts"][aid]["attacks"]["fgsm"]
    row = next(row for row in headline_rows(r) if row[0] == aid and row[1] == "FGSM")
    assert row[5] == f"{100 * fgsm['undetected_success_rate']:.1f}%"
    assert "corruptions, out-of-distribution inputs and drift streams" in ev.text and "drift streams on" in ev.text
    with open(ev.html_path, encoding="utf-8") as f:
        page = f.read()
    assert "Beyond the lab" in page and page.count("data:image/png;base64") >= 8
    no_suite = copy.deepcopy(r)
    no_suite["robustness"] = None
    E.validate_evaluation(no_suite)  # optional: --no-robustness
    broken = copy.deepcopy(r)
    del broken["robustness"]["artifacts"][aid]["clean"]
    with pytest.raises(ConversionError):
        E.validate_evaluation(broken)


def test_cli_evaluate_has_a_no_robustness_switch():
    import argparse

    from edgeguard.converters.cli import add_evaluate_parser

    sub = argparse.ArgumentParser().add_subparsers()
    p = add_evaluate_parser(sub)
    assert p.parse_args(["b.egb", "--no-robustness"]).no_robustness
    assert not p.parse_args(["b.egb"]).no_robustness
