"""A poisoning/backdoor scan of the training data, on the source model's activations, with IBM ART.

A backdoored model (BadNets, Gu et al. 2017) was trained on a few images that carry a
trigger and the attacker's label. Those images reach the target class through the
trigger, not through the class's own features, so in the model's last hidden layer they
form a small group apart from the class's genuine images. Two detectors of ART look for it:

* **activation clustering** (Chen et al. 2018; ART ``ActivationDefence``): per class,
  reduce the last hidden layer's activations to ``nb_dims`` dimensions (PCA, ART's
  default), split them into two clusters with k-means, and call the smaller cluster poison
  when it holds less than ``size_threshold`` (35%, ART's default) of the class *and* the
  split is real: the class's mean silhouette exceeds ``silhouette_threshold`` (ART's
  ``silhouette-scores`` analysis). ART's default silhouette threshold (0.1) is below the
  silhouette of a 2-means split of any clean MNIST class measured here (0.18-0.39), so
  every clean class whose natural split happens to be uneven would be called poisoned;
  the default here is 0.5, Kaufman and Rousseeuw's bound for "a reasonable structure has
  been found" (0.26-0.5: "weak, could be artificial"). ``cluster_analysis="relative-size"``
  uses the size alone.
* **spectral signatures** (Tran et al. 2018; ART ``SpectralSignatureDefense``): per class,
  score each image by its projection on the top singular vector of the centred
  activations and flag the top ``eps_multiplier * expected_poison_fraction`` of every
  class. It always flags that share of every class, so it ranks suspects but gives no
  verdict on its own; the verdict here comes from activation clustering.

ART's detectors read the activations of the classifier's *last layer*. They are given an
ART ``PyTorchClassifier`` over a probe module whose last layer is the input of the
model's final ``nn.Linear`` (the last hidden layer, as both papers prescribe), or the
output of the module named by ``layer``; its predictions are still the model's.

:func:`scan_training_data` returns a :class:`PoisonScanResult`: the suspicious images, a
per-class table, and ``likely_backdoor`` (some class has a small separate cluster).
With ``neural_cleanse=NeuralCleanseConfig()`` (off by default) a second, model-level stage runs
after the clustering: Neural Cleanse (Wang et al. 2019, :mod:`.neural_cleanse`) reverse-engineers
the smallest trigger per class; a class whose trigger is an outlier (ART's anomaly index > 2) is a
backdoor target, and its training images that match the reversed trigger are listed. Measured on
the planted-trigger experiment it flagged no class (docs/data-governance.md), hence off.

With ``occlusion=OcclusionScanConfig()`` (off by default) an input-space stage runs too
(:mod:`.occlusion_scan`, after SentiNet): every training image is occluded region by region on the
source model, and a class in which several confident predictions flip when the same small patch of
the same pixels is hidden is a backdoor target; those images are listed, with every image of the
class carrying the group's pixels at the group's place (its group expansion). See
docs/data-governance.md for its measured figures.

``on_detection`` decides what a finding does: ``"warn"`` (a :class:`PoisonWarning`),
``"error"`` (:class:`~edgeguard.converters.errors.PoisonDetectedError`), or ``"drop"``
(warn; the caller trains or hardens on :meth:`PoisonScanResult.clean_subset`).
See docs/data-governance.md for what it found on a planted trigger.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import numpy as np

from .data import Images, InputSpec
from .errors import CalibrationDataError, ConversionError, PoisonDetectedError
from .neural_cleanse import NeuralCleanseConfig
from .occlusion_scan import OcclusionScanConfig

__all__ = ["PoisonScanConfig", "PoisonScanResult", "PoisonWarning", "scan_training_data", "activation_probe",
           "METHODS", "ON_DETECTION"]

METHODS = ("activation-clustering", "spectral-signature")
ON_DETECTION = ("warn", "error", "drop")
_ANALYSES = ("relative-size", "silhouette-scores")
_REDUCTIONS = ("FastICA", "PCA")


class PoisonWarning(UserWarning):
    """The poisoning scan found a likely backdoor (with ``on_detection="warn"`` or ``"drop"``)."""


@dataclass(frozen=True)
class PoisonScanConfig:
    """Parameters of the scan; see the module docstring for the defaults' origin. The defaults are
    frozen: they were chosen on the planted-trigger experiment's development cases
    (``poison_experiment.DEV_CASES``) and are reported on its evaluation cases (``EVAL_CASES``),
    which were drawn afterwards and never used to choose them."""

    method: str = "activation-clustering"
    reduce: str = "PCA"
    nb_dims: int = 10
    cluster_analysis: str = "silhouette-scores"
    size_threshold: float = 0.35  # ART's default: a cluster under 35% of its class is suspect
    silhouette_threshold: float = 0.5  # Kaufman & Rousseeuw's "reasonable structure" (ART's default: 0.1)
    expected_poison_fraction: float = 0.05  # spectral signatures only
    eps_multiplier: float = 1.5  # spectral signatures only (Tran et al.)
    layer: str | None = None  # default: the input of the model's last nn.Linear
    restarts: int = 10  # k-means runs per class; the lowest within-cluster sum of squares is kept
    on_detection: str = "warn"
    seed: int = 0
    batch_size: int = 256
    neural_cleanse: NeuralCleanseConfig | None = None  # second stage (off: it flagged nothing when measured)
    occlusion: OcclusionScanConfig | None = None  # input-space occlusion stage (.occlusion_scan)

    def __post_init__(self):
        if isinstance(self.occlusion, dict):  # from JSON / to_dict()
            object.__setattr__(self, "occlusion", OcclusionScanConfig(**self.occlusion))
        if self.occlusion is not None and not isinstance(self.occlusion, OcclusionScanConfig):
            raise ConversionError("occlusion must be an OcclusionScanConfig (or its dict), or None")
        if isinstance(self.neural_cleanse, dict):  # from JSON / to_dict()
            object.__setattr__(self, "neural_cleanse", NeuralCleanseConfig(**self.neural_cleanse))
        if self.neural_cleanse is not None and not isinstance(self.neural_cleanse, NeuralCleanseConfig):
            raise ConversionError("neural_cleanse must be a NeuralCleanseConfig (or its dict), or None")
        if self.method not in METHODS:
            raise ConversionError(f"unknown poisoning scan method {self.method!r}; choose one of {METHODS}")
        if self.on_detection not in ON_DETECTION:
            raise ConversionError(f"on_detection must be one of {ON_DETECTION}, got {self.on_detection!r}")
        if self.cluster_analysis not in _ANALYSES:
            raise ConversionError(f"cluster_analysis must be one of {_ANALYSES}, got {self.cluster_analysis!r}")
        if self.reduce not in _REDUCTIONS:
            raise ConversionError(f"reduce must be one of {_REDUCTIONS}, got {self.reduce!r}")
        if not (0 < self.size_threshold < 0.5 and 0 < self.expected_poison_fraction < 1 and self.nb_dims >= 1
                and self.eps_multiplier > 0 and self.batch_size >= 1 and self.restarts >= 1):
            raise ConversionError("poisoning scan needs 0 < size_threshold < 0.5, 0 < expected_poison_fraction < 1, "
                                  "nb_dims >= 1, eps_multiplier > 0, batch_size >= 1")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PoisonScanResult:
    """What the scan found. ``suspicious``: indices into the scanned training images;
    ``per_class``: one row per class; ``likely_backdoor``: activation clustering found a small
    separate cluster in at least one class (``suspect_classes``)."""

    config: PoisonScanConfig
    n: int
    suspicious: np.ndarray
    per_class: list
    likely_backdoor: bool
    suspect_classes: list
    activation_dim: int
    data_sha256: str
    labels: tuple
    neural_cleanse: dict | None = None  # the second stage's per-class norms, anomaly indices, flagged classes
    occlusion: dict | None = None  # the occlusion stage's per-class rows, its own suspects, wall time

    @property
    def flagged(self) -> np.ndarray:
        """Boolean mask over the scanned images."""
        m = np.zeros(self.n, bool)
        m[self.suspicious] = True
        return m

    def clean_subset(self, data: Images) -> Images:
        """``data`` without the suspicious images (the scanned set itself)."""
        if len(data) != self.n or data.sha256 != self.data_sha256:
            raise ConversionError("clean_subset takes the very images that were scanned")
        keep = ~self.flagged
        return Images(np.ascontiguousarray(data.x[keep]), None if data.y is None else data.y[keep],
                      f"{data.name} without {int((~keep).sum())} suspicious image(s)", data.source)

    def summary(self) -> str:
        if not self.likely_backdoor:
            return (f"poisoning scan ({self.config.method}): no likely backdoor in {self.n} training image(s)"
                    + (f"; {len(self.suspicious)} ranked suspicious" if len(self.suspicious) else ""))
        classes = ", ".join(f"{r['label']} ({r['n_suspicious']} of {r['n']})" for r in self.per_class
                            if r["label"] in self.suspect_classes)
        nc, occ = self.neural_cleanse or {}, self.occlusion or {}
        stages = []
        if nc.get("flagged_classes"):
            stages.append(f"Neural Cleanse's reversed trigger in a target class {nc['flagged_classes']}")
        if occ.get("n_flagged"):
            stages.append(f"the same small region whose occlusion flips them ({occ['n_flagged']} by the occlusion "
                          "stage)")
        how = ("are suspicious (small separate clusters, or " + "; or ".join(stages) + ")" if stages
               else "form small separate clusters")
        return (f"poisoning scan ({self.config.method}): LIKELY BACKDOOR: {len(self.suspicious)} of {self.n} "
                f"training image(s) {how} in class(es) {classes}")

    def to_dict(self, max_listed: int | None = None) -> dict:
        listed = self.suspicious if max_listed is None else self.suspicious[:max_listed]
        occlusion = self.occlusion
        if occlusion is not None and max_listed is not None:  # the stage's own list obeys the same cap
            occlusion = {**occlusion, "suspicious": occlusion["suspicious"][:max_listed]}
        return {"method": self.config.method, "config": self.config.to_dict(), "n": self.n,
                "data_sha256": self.data_sha256, "activation_dim": self.activation_dim,
                "likely_backdoor": self.likely_backdoor, "suspect_classes": list(self.suspect_classes),
                "n_suspicious": int(len(self.suspicious)), "suspicious": [int(i) for i in listed],
                "suspicious_listed": int(len(listed)), "per_class": self.per_class,
                "neural_cleanse": self.neural_cleanse, "occlusion": occlusion, "summary": self.summary()}


def _last_linear_name(module) -> str:
    from torch import nn

    names = [name for name, m in module.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise ConversionError("the model has no nn.Linear layer: name the hidden layer to scan with layer=...")
    return names[-1]


def activation_probe(module, spec: InputSpec, layer: str | None = None):
    """(a torch module taking inputs in the value range, the hidden layer's name): the probe's
    children are the model and ``hidden``, an identity whose output is the activations of the
    last hidden layer (the input of the last ``nn.Linear``, or the output of ``layer``)."""
    import torch
    from torch import nn

    target = layer or _last_linear_name(module)
    modules = dict(module.named_modules())
    if target not in modules:
        raise ConversionError(f"layer {target!r} is not a submodule of the model; known: "
                              f"{[n for n in modules if n][:20]}")
    take_input = layer is None
    shape = (1, -1, 1, 1) if spec.layout == "NCHW" else (1, 1, 1, -1)

    class ActivationProbe(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = module
            self.hidden = nn.Identity()  # ART reads the last child's output
            self.register_buffer("mean", torch.tensor(spec.mean, dtype=torch.float32).reshape(shape))
            self.register_buffer("std", torch.tensor(spec.std, dtype=torch.float32).reshape(shape))
            self._captured = None

        def forward(self, x):
            def grab(_m, inputs, output=None):
                self._captured = inputs[0] if take_input else output

            hook = (modules[target].register_forward_pre_hook(grab) if take_input
                    else modules[target].register_forward_hook(grab))
            try:
                logits = self.model((x - self.mean) / self.std)
            finally:
                hook.remove()
            self.hidden(torch.flatten(self._captured, 1))
            return logits

    return ActivationProbe(), target


def _art_probe_classifier(module, spec: InputSpec, layer):
    from art.estimators.classification import PyTorchClassifier
    from torch import nn

    probe, target = activation_probe(module, spec, layer)
    clf = PyTorchClassifier(model=probe, loss=nn.CrossEntropyLoss(), input_shape=tuple(spec.shape),
                            nb_classes=spec.num_classes, clip_values=(float(spec.range[0]), float(spec.range[1])),
                            channels_first=spec.layout == "NCHW", device_type="cpu")
    if clf.layer_names[-1] != "hidden":
        raise ConversionError(f"ART sees layers {clf.layer_names}; expected the probe's 'hidden' last")
    return clf, target


def scan_training_data(module, spec: InputSpec, train: Images, config: PoisonScanConfig | None = None,
                       *, threads: int | None = 1) -> PoisonScanResult:
    """Scan labelled training images for poison with ART on ``module``'s activations (the module
    is only read). Raises :class:`PoisonDetectedError` when a backdoor is likely and
    ``config.on_detection == "error"``; warns (:class:`PoisonWarning`) for ``"warn"``/``"drop"``."""
    from .hardening import deterministic

    cfg = config or PoisonScanConfig()
    if train.y is None:
        raise CalibrationDataError(f"{train.name}: the poisoning scan needs labelled training data")
    counts = np.bincount(train.y, minlength=spec.num_classes)
    x = spec.to_range(train.x)
    y_onehot = np.eye(spec.num_classes, dtype=np.float32)[train.y]
    was_training = module.training
    module.eval()
    try:
        with deterministic(cfg.seed, threads):  # k-means and FastICA draw from numpy's global generator
            clf, target = _art_probe_classifier(module, spec, cfg.layer)
            if cfg.method == "activation-clustering":
                rows, suspicious, dim = _activation_clustering(clf, x, y_onehot, train.y, counts, cfg, spec)
            else:
                rows, suspicious, dim = _spectral_signature(clf, x, y_onehot, train.y, counts, cfg, spec)
            nc_report = None
            if cfg.neural_cleanse is not None:
                nc_report, nc_suspicious = _neural_cleanse_stage(module, spec, x, train.y, counts, cfg, rows)
                suspicious = np.union1d(np.asarray(suspicious, np.int64), nc_suspicious)
                for row in rows:  # both stages may list the same image
                    row["n_suspicious"] = int((train.y[suspicious] == row["class"]).sum())
            occ_report = None
            if cfg.occlusion is not None:
                occ_report, occ_suspicious = _occlusion_stage(module, spec, x, train.y, cfg, rows)
                suspicious = np.union1d(np.asarray(suspicious, np.int64), occ_suspicious)
                for row in rows:
                    row["n_suspicious"] = int((train.y[suspicious] == row["class"]).sum())
    finally:
        module.train(was_training)
    suspect = [r["label"] for r in rows if r.get("suspect")]
    result = PoisonScanResult(cfg, len(train), np.asarray(sorted(suspicious), np.int64), rows, bool(suspect),
                              suspect, dim, train.sha256, tuple(spec.labels), nc_report, occ_report)
    if result.likely_backdoor:
        if cfg.on_detection == "error":
            raise PoisonDetectedError(result.summary() + "; drop them (on_detection='drop', --poison-scan drop), "
                                      "or inspect the listed images", result=result)
        warnings.warn(result.summary(), PoisonWarning, stacklevel=2)
    return result


def _activation_clustering(clf, x, y_onehot, y, counts, cfg: PoisonScanConfig, spec: InputSpec):
    """ART reduces and clusters; the cluster analysis is done here. ART 1.20.1's own analysers
    cannot be used: ``relative-size`` raises ValueError (``cluster_id in`` a tuple of arrays) and
    ``silhouette-scores`` marks the small cluster both poisonous and clean when it is suspect."""
    from art.defences.detector.poison import ActivationDefence

    small = [spec.labels[k] for k in range(spec.num_classes) if 0 < counts[k] <= max(cfg.nb_dims, 2)]
    if small:
        raise CalibrationDataError(f"class(es) {small} have too few training images for activation clustering "
                                   f"(more than {max(cfg.nb_dims, 2)} each are needed)")
    defence = ActivationDefence(clf, x, y_onehot)
    # ART runs scikit-learn's KMeans with one initialisation (n_init="auto"), seeded from numpy's global
    # generator; a single run often stops in the class's natural split and misses a small separate
    # cluster. Restart it and keep, per class, the clustering of lowest inertia (k-means' own criterion).
    best_clusters, best_inertia, reduced_by_class = None, None, None
    for r in range(cfg.restarts):
        np.random.seed((cfg.seed + r) % (2 ** 32))
        clusters_by_class, reduced = defence.cluster_activations(nb_clusters=2, nb_dims=cfg.nb_dims,
                                                                 reduce=cfg.reduce)
        inertia = [_inertia(red, cl) for red, cl in zip(reduced, clusters_by_class)]
        if best_clusters is None:
            best_clusters, best_inertia, reduced_by_class = list(clusters_by_class), inertia, list(reduced)
            continue
        for k, value in enumerate(inertia):
            if value < best_inertia[k] - 1e-9 * max(abs(best_inertia[k]), 1.0):
                best_clusters[k], best_inertia[k], reduced_by_class[k] = clusters_by_class[k], value, reduced[k]
    clusters_by_class = best_clusters
    dim = int(defence.activations_by_class[int(np.argmax(counts))].shape[1])
    rows, suspicious = [], []
    for k in range(spec.num_classes):
        idx = np.flatnonzero(y == k)
        row = {"class": k, "label": spec.labels[k], "n": int(len(idx)), "n_suspicious": 0, "suspect": False}
        if len(idx) == 0:
            rows.append(row)
            continue
        clusters = np.asarray(clusters_by_class[k])
        sizes = np.bincount(clusters, minlength=2)
        shares = sizes / sizes.sum()
        smaller = int(np.argmin(sizes))
        suspect = bool(shares[smaller] < cfg.size_threshold)
        row["cluster_shares"] = [float(v) for v in shares]
        if cfg.cluster_analysis == "silhouette-scores":
            from sklearn.metrics import silhouette_score

            sil = float(silhouette_score(reduced_by_class[k], clusters)) if len(set(clusters.tolist())) > 1 else 0.0
            row["silhouette"] = sil
            suspect = suspect and sil > cfg.silhouette_threshold
        if suspect:
            members = idx[clusters == smaller]
            suspicious.append(members)
            row.update(n_suspicious=int(len(members)), suspect=True)
        rows.append(row)
    flagged = np.concatenate(suspicious) if suspicious else np.zeros(0, np.int64)
    return rows, flagged, dim


def _inertia(points: np.ndarray, clusters: np.ndarray) -> float:
    points = np.asarray(points, np.float64)
    return float(sum(((points[clusters == c] - points[clusters == c].mean(axis=0)) ** 2).sum()
                     for c in np.unique(clusters)))


def _spectral_signature(clf, x, y_onehot, y, counts, cfg: PoisonScanConfig, spec: InputSpec):
    from art.defences.detector.poison import SpectralSignatureDefense

    defence = SpectralSignatureDefense(clf, x, y_onehot, batch_size=cfg.batch_size,
                                       eps_multiplier=cfg.eps_multiplier,
                                       expected_pp_poison=cfg.expected_poison_fraction)
    _, is_clean = defence.detect_poison()
    is_clean = np.asarray(is_clean, bool)
    dim = int(clf.get_activations(x[:1], layer=len(clf.layer_names) - 1, batch_size=1).reshape(1, -1).shape[1])
    rows = [{"class": k, "label": spec.labels[k], "n": int(counts[k]),
             "n_suspicious": int((~is_clean[y == k]).sum()), "suspect": False} for k in range(spec.num_classes)]
    return rows, np.flatnonzero(~is_clean), dim


def _neural_cleanse_stage(module, spec: InputSpec, x, y, counts, cfg: PoisonScanConfig, rows):
    """Neural Cleanse on the model, then the training images of each flagged class that carry the
    reversed trigger (the rule in :mod:`.neural_cleanse`). Marks flagged classes suspect in
    ``rows``; returns (report, indices of the matching images)."""
    from .hardening import normalized_module
    from .neural_cleanse import reverse_engineer_triggers, trigger_match_scores

    ncfg = cfg.neural_cleanse
    rng = np.random.default_rng(cfg.seed)
    per_class = max(ncfg.n_images // spec.num_classes, 1)
    sample = np.concatenate([rng.choice(np.flatnonzero(y == k), min(per_class, int(counts[k])), replace=False)
                             for k in range(spec.num_classes) if counts[k]])
    if len(sample) < ncfg.batch_size:
        raise CalibrationDataError(f"neural cleanse needs at least batch_size={ncfg.batch_size} training images")
    found = reverse_engineer_triggers(normalized_module(module, spec), x[sample], y[sample], spec.num_classes,
                                      spec.range, ncfg, seed=cfg.seed)
    suspicious = []
    for k, row in enumerate(rows):
        row["nc_mask_l1"] = found["l1_norms"][k]
        row["nc_anomaly_index"] = found["anomaly_index"][k]
    for k in found["flagged"]:
        scores = trigger_match_scores(x, found["masks"][k], found["patterns"][k])
        in_class = y == k
        if in_class.all():
            continue
        bound = float(np.quantile(scores[~in_class], ncfg.null_quantile))
        members = np.flatnonzero(in_class & (scores < bound))
        suspicious.append(members)
        row = rows[k]
        row.update(suspect=True, nc_flagged=True, nc_match_bound=bound, nc_trigger_matches=int(len(members)))
    report = {"config": ncfg.to_dict(), "mask_l1": found["l1_norms"], "anomaly_index": found["anomaly_index"],
              "flagged_classes": [spec.labels[k] for k in found["flagged"]], "steps_run": found["steps_run"],
              "images_optimised_on": int(len(sample))}
    return report, (np.concatenate(suspicious) if suspicious else np.zeros(0, np.int64))


def _occlusion_stage(module, spec: InputSpec, x, y, cfg: PoisonScanConfig, rows):
    """The input-space occlusion scan (:mod:`.occlusion_scan`) on every training image. Marks the
    classes with flagged images suspect in ``rows``; returns (report, indices of the flagged images)."""
    import time

    from .hardening import normalized_module
    from .occlusion_scan import as_nchw, flag_occlusion, occlusion_scores, paste_test

    ocfg = cfg.occlusion
    t0 = time.perf_counter()
    model, x_nchw = as_nchw(normalized_module(module, spec).eval(), x, spec.layout)
    scores = occlusion_scores(model, x_nchw, y, ocfg)
    flagged, occ_rows, suspect, expanded = flag_occlusion(x_nchw, y, scores, spec.num_classes, ocfg, spec.range)
    members = np.flatnonzero(flagged)
    grouped = np.flatnonzero(flagged & ~expanded)  # the paste test needs the flip's own position
    fooled = paste_test(model, x_nchw, y, scores, grouped, ocfg, seed=cfg.seed)
    for k, row in enumerate(rows):
        row["occlusion_candidates"] = occ_rows[k]["n_candidates"]
        row["occlusion_flagged"] = occ_rows[k]["n_flagged"]
        row["occlusion_expanded"] = occ_rows[k]["n_expanded"]
        if k in suspect:
            in_class = y[grouped] == k
            row.update(suspect=True, occlusion_suspect=True, occlusion_moved_to=spec.labels[occ_rows[k]["moved_to"]],
                       occlusion_positions=occ_rows[k]["positions"],
                       occlusion_paste_fooled_median=float(np.median(fooled[in_class])))
    report = {"config": ocfg.to_dict(), "n_positions": int(scores["n_positions"]), "n_flagged": int(len(members)),
              "n_expanded": int(expanded.sum()),
              "suspicious": [int(i) for i in members], "suspect_classes": [spec.labels[k] for k in suspect],
              "n_candidates": int(sum(r["n_candidates"] for r in occ_rows)), "per_class": occ_rows,
              "seconds": time.perf_counter() - t0}
    return report, members

