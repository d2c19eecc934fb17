"""The evaluation's inputs: the bundle's facts (read once from its manifest), the source
PyTorch model (given, named, or found through the converter's sidecar) and the data."""

from __future__ import annotations

import os
from dataclasses import dataclass

from edgeguard.bundle import read_bundle

from ..data import Images, InputSpec, as_images, load_images, mnist_splits
from ..errors import CalibrationDataError, SourceModelError
from ..runs import find_source_sidecar
from ..source import load_torch_source, state_dict_sha256

__all__ = ["BundleFacts", "ArtifactFacts", "load_source", "load_data"]


@dataclass(frozen=True)
class ArtifactFacts:
    format: str
    precision: str
    target_fpr: float | None


@dataclass(frozen=True)
class BundleFacts:
    """What the evaluation reads from a bundle's manifest (the one place it reads it)."""

    path: str
    sha256: str
    name: str
    version: str
    spec: InputSpec
    squeezers: tuple  # of Squeezer
    artifacts: dict  # id -> ArtifactFacts, in the manifest's order
    source_model_sha256: str | None
    calibration_data_sha256: str | None
    validation_data_sha256: str | None
    heldout_every: int | None = None  # the converter held every n-th calibration image out of the threshold

    @classmethod
    def read(cls, bundle_path: str, public_key=None, artifact_ids=None) -> "BundleFacts":
        """Read (and with ``public_key`` verify) the bundle; ``artifact_ids``: ids that must
        exist (typed error otherwise)."""
        b = read_bundle(bundle_path, public_key=public_key, require_signature=public_key is not None)
        m = b.manifest
        for aid in artifact_ids or ():
            m.artifact(aid)  # typed error for an unknown id
        inp = m.input
        spec = InputSpec(tuple(inp.shape[1:]), inp.layout, m.labels, inp.mean, inp.std, inp.value_range,
                         m.output_kind)
        prov = m.provenance
        artifacts = {a.id: ArtifactFacts(a.format, a.precision, a.detector.target_fpr if a.detector else None)
                     for a in m.artifacts}
        heldout = next((a.detector.raw.get("heldout_every") for a in m.artifacts if a.detector), None)
        return cls(bundle_path, b.sha256, m.name, m.version, spec, m.squeezers, artifacts,
                   prov.get("source_model_sha256"), prov.get("calibration_data_sha256"),
                   prov.get("validation_data_sha256"), heldout)


def load_source(source, factory, weights, kwargs, facts: BundleFacts, notes: list) -> tuple:
    """(torch module, source info dict, sidecar or None)."""
    sidecar = None
    if source is not None:
        src = load_torch_source(source)
        info = {"description": src.description, "factory": None, "kwargs": None, "weights": None,
                "how": "given in memory"}
    else:
        if factory is None:
            sidecar = find_source_sidecar(facts.path, facts.source_model_sha256)
            if sidecar is None:
                raise SourceModelError(
                    "no source model: pass --source-factory MODULE:FUNCTION and --source-weights FILE (the white-box "
                    "and adaptive attacks need the PyTorch model), or keep the <name>.source.json / .source.pt "
                    "the converter writes next to the bundle")
            factory, kwargs = sidecar["factory"], sidecar.get("kwargs") or {}
            weights = os.path.join(os.path.dirname(sidecar["path"]), sidecar["weights"])
            how = f"sidecar {os.path.basename(sidecar['path'])}"
        else:
            how = "--source-factory/--source-weights"
        src = load_torch_source(factory, weights, factory_kwargs=kwargs)
        info = {"description": src.description, "factory": factory, "kwargs": kwargs or {},
                "weights": None if weights is None else os.fspath(weights), "how": how}
    want = facts.source_model_sha256
    sha = state_dict_sha256(src.module)
    info.update(state_dict_sha256=sha, bundle_source_sha256=want, matches_bundle=sha == want)
    if sha != want:
        notes.append("the source model's weights hash differs from the bundle's provenance.source_model_sha256: the "
                     "white-box and adaptive attacks are transfer attacks from a different model")
    src.module.eval()
    return src.module, info, sidecar


def load_data(data, labels, calibration, calibration_labels, facts: BundleFacts, sidecar, notes: list):
    """(test Images, calibration Images or None, data info dict)."""
    spec = facts.spec
    info = {"default": data is None}
    train = None
    if data is None:
        if sidecar is None:
            sidecar = find_source_sidecar(facts.path, facts.source_model_sha256)
        d = (sidecar or {}).get("data") or {}
        mnist_like = spec.image_shape == (28, 28, 1) and spec.num_classes == 10
        if d.get("kind") not in (None, "mnist", "photos") or not (d or mnist_like):
            raise CalibrationDataError(
                "no test data: pass --data (and --labels) with held-out labelled images; the default is the "
                "test split the bundle's job recorded (MNIST or the colour photographs), or the MNIST test split "
                "for MNIST-shaped models")
        if not d:
            notes.append("no data split recorded next to the bundle: the default MNIST split (mnist_splits() "
                         "defaults) was used; check that none of its test digits trained or calibrated the model")
        kw = {k: d[k] for k in ("seed", "n_train", "n_calib", "n_test") if k in d}
        if d.get("kind") == "photos":
            from ..photos import photo_splits

            splits, what = photo_splits(**kw), "photo_splits"
        else:
            splits, what = mnist_splits(**kw), "mnist_splits"
        test, train = splits["test"], splits["train"]
        if calibration is None:
            calibration = splits["calibration"]
        info["source"] = f"{what}({', '.join(f'{k}={v}' for k, v in kw.items())}): the test split"
    else:
        if isinstance(data, Images):
            test = as_images(data.x, spec, data.y, name="test data", source=data.source)
        elif isinstance(data, tuple):
            test = as_images(data[0], spec, data[1], name="test data")
        elif isinstance(data, (str, os.PathLike)):
            test = load_images(data, spec, labels, name="test data (--data)")
        else:
            test = as_images(data, spec, labels, name="test data")
        info["source"] = str(test.source)
    if test.y is None:
        raise CalibrationDataError("the test data needs labels (--labels, or a .npz with y)")
    calib = None
    if calibration is not None:
        if isinstance(calibration, Images):
            calib = calibration
        elif isinstance(calibration, tuple):
            calib = as_images(calibration[0], spec, calibration[1], name="calibration data")
        elif isinstance(calibration, (str, os.PathLike)):
            calib = load_images(calibration, spec, calibration_labels, name="calibration data (--calib)")
        else:
            calib = as_images(calibration, spec, name="calibration data")
    info["test"] = {"n_total": len(test), "sha256": test.sha256,
                    "is_bundle_validation_data": test.sha256 == facts.validation_data_sha256}
    info["calibration"] = None if calib is None else {
        "n": len(calib), "sha256": calib.sha256,
        "matches_bundle_calibration": calib.sha256 == facts.calibration_data_sha256}
    if calib is not None and not info["calibration"]["matches_bundle_calibration"]:
        notes.append("the calibration data given is not the bundle's calibration data (hash differs): the "
                     "cost/benefit thresholds are calibrated on other legitimate data than the bundle's")
    if test.sha256 == facts.calibration_data_sha256:
        notes.append("the test data IS the bundle's calibration data: false-positive rates are not held-out")
    # held-out check: no test image also in the calibration or training images
    rows = {r.tobytes() for r in test.x.reshape(len(test), -1)}
    overlap = {}
    for nm, d in (("calibration", calib), ("train", train)):
        if d is not None:
            overlap[nm] = int(sum(r.tobytes() in rows for r in d.x.reshape(len(d), -1)))
    info["overlap_with_test"] = overlap
    return test, calib, info
