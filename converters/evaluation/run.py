"""One evaluation run: :func:`evaluate` and the state it carries (:class:`EvaluationRun`):
the attacks, every artifact through the device runtime, the sanity sweeps, the squeezer
cost/benefit table, then the report."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import ConversionError, SourceModelError
from ..presets import default_eps, eps_in_range, eps_text
from ..runs import StageTimer, measure_latency, tool_versions, utc_now
from ..squeezers import is_flagged, to_manifest_list
from .config import ATTACK_LABELS, ATTACK_THREAT, INSTALL_HINT, THREAT_MODELS, EvalConfig
from .inputs import BundleFacts, load_data, load_source
from .metrics import attack_metrics, perturbation_norms, roc_auc
from .report import SCHEMA, SCHEMA_VERSION, render_text, sanity_checks, targets, validate_evaluation

__all__ = ["evaluate", "Evaluation", "EvaluationRun", "cmd_evaluate"]


@dataclass
class Evaluation:
    """What :func:`evaluate` returns: the JSON-ready ``report``, its ``text`` (headline
    and cost/benefit tables) and the written files (None when not written)."""

    report: dict
    text: str
    json_path: str | None = None
    html_path: str | None = None
    text_path: str | None = None
    curves: dict = field(default_factory=dict, repr=False)  # full ROC curves for the charts


@dataclass
class Adversarial:
    """One attack's images: ``idx`` are positions in the evaluated test images; ``images``
    is one uint8 array, or {artifact id: array} for black-box attacks run per artifact."""

    idx: np.ndarray
    images: object
    params: dict
    seconds: float = 0.0

    def images_for(self, aid: str):
        if isinstance(self.images, dict):
            return self.images.get(aid)
        return self.images


def runtime_outputs(model, images: np.ndarray, *, detect: bool = True, batch: int = 250) -> dict:
    """A GuardedModel's indices, scores, flags and per-squeezer scores on uint8 images, in chunks."""
    idx, scores, flags, per = [], [], [], {}
    for i in range(0, len(images), batch):
        r = model.predict(images[i:i + batch], detect=detect)
        idx.append(np.asarray(r.indices))
        scores.append(np.array(r.scores, np.float32))
        flags.append(np.array(r.is_adversarial, bool))
        for k, v in r.squeezer_scores.items():
            per.setdefault(k, []).append(np.array(v, np.float32))
    return {"indices": np.concatenate(idx), "scores": np.concatenate(scores), "flagged": np.concatenate(flags),
            "squeezer_scores": {k: np.concatenate(v) for k, v in per.items()}}


def _latency_entry(guarded, plain, image, runs: int) -> dict:
    lat = measure_latency(guarded, image, runs, plain=plain)
    return {"guarded_ms": lat.guarded_ms, "plain_ms": lat.plain_ms, "added_ms": lat.added_ms, "runs": lat.runs}


def _images_sha(x: np.ndarray) -> str:
    from ..data import data_sha256

    return data_sha256(np.ascontiguousarray(x))


class EvaluationRun:
    """The state of one evaluation between its stages: the bundle's facts, the source
    model, the evaluated test images ``x``/``y`` (a seeded subset), one loaded model per
    artifact, the adversarial images per attack and the runtime outputs per artifact."""

    def __init__(self, facts: BundleFacts, module, source_info: dict, test, calib, data_info: dict,
                 cfg: EvalConfig, ids: list, public_key, stages: StageTimer, notes: list, progress: bool):
        import edgeguard

        self.facts, self.spec, self.module, self.cfg = facts, facts.spec, module, cfg
        self.source_info, self.data_info, self.calib = source_info, data_info, calib
        self.stages, self.notes, self.progress = stages, notes, progress
        self.eps_unit = cfg.eps if cfg.eps is not None else default_eps(self.spec)
        self.eps = eps_in_range(self.eps_unit, self.spec)  # in the model's input range
        order = np.random.default_rng(cfg.seed).permutation(len(test))
        self.n = len(test) if cfg.n_test is None else min(cfg.n_test, len(test))
        self.sel = order[:self.n]
        self.x, self.y = test.x[self.sel], test.y[self.sel]
        data_info["test"].update(
            n_evaluated=int(self.n), evaluated_sha256=_images_sha(self.x),
            selection=f"first {self.n} of numpy.random.default_rng({cfg.seed}).permutation({len(test)})")
        self.models = {aid: edgeguard.load(facts.path, public_key=public_key, artifact=aid, num_threads=1)
                       for aid in ids}
        self.thresholds = {aid: mdl.threshold for aid, mdl in self.models.items()}
        if any(t is None for t in self.thresholds.values()):
            raise ConversionError("every evaluated artifact needs a calibrated detector "
                                  "(manifest artifacts[].detector)")
        self.adv: dict[str, Adversarial] = {}
        self.outs: dict[str, dict] = {}  # artifact -> {"clean": outputs, attack: outputs + success, idx, images}

    def first(self, count) -> np.ndarray:
        """Positions of the first ``count`` evaluated images (all when None)."""
        return np.arange(self.n if count is None else min(int(count), self.n))

    def torch_predict(self, images: np.ndarray) -> np.ndarray:
        from ..source import torch_forward

        return torch_forward(self.module, self.spec.model_input(images)).argmax(1)

    # ------------------------------------------------------------------ attacks

    def run_attacks(self, precomputed: dict | None) -> None:
        cfg = self.cfg
        for kind in cfg.attacks:
            t0 = time.perf_counter()
            if kind == "fgsm":
                a = self.stages.run("FGSM (source model)", self._white_box, "fgsm", None, precomputed)
            elif kind == "bim":
                a = self.stages.run("BIM (source model)", self._white_box, "bim", None, precomputed,
                                    step=cfg.bim_step * self.eps, steps=cfg.bim_steps)
            elif kind == "pgd":
                a = self.stages.run(f"PGD-{cfg.pgd_steps} (source model)", self._white_box, "pgd", None, precomputed,
                                    step=cfg.pgd_step * self.eps, steps=cfg.pgd_steps,
                                    restarts=cfg.pgd_restarts)
            elif kind == "cw_l2":
                a = self.stages.run("CW-L2 (source model)", self._white_box, "cw_l2", cfg.n_cw, precomputed,
                                    cw={"max_iter": cfg.cw_max_iter, "binary_search_steps": cfg.cw_binary_search_steps,
                                        "learning_rate": cfg.cw_learning_rate, "initial_const": cfg.cw_initial_const,
                                        "confidence": cfg.cw_confidence})
            elif kind in ("square", "hopskipjump"):
                a = self._black_box(kind)
            else:  # adaptive
                a = self.stages.run("adaptive BPDA (source model + detector)", self._adaptive)
            a.seconds = time.perf_counter() - t0
            self.adv[kind] = a

    def _white_box(self, kind: str, count, precomputed: dict | None, **kw) -> Adversarial:
        from .. import attacks
        from ..hardening import deterministic

        idx = self.first(count)
        if precomputed and kind in precomputed:
            images, params = precomputed[kind]
            return Adversarial(idx, np.asarray(images)[self.sel][idx], {**params, "precomputed": True})
        with deterministic(self.cfg.seed + 17, self.cfg.threads):
            images, params = attacks.white_box(self.module, self.spec, self.x[idx], self.y[idx], kind,
                                               eps=self.eps, **kw)
        return Adversarial(idx, images, params)

    def _black_box(self, kind: str) -> Adversarial:
        from .. import attacks
        from ..hardening import deterministic

        cfg = self.cfg
        idx = self.first(cfg.n_blackbox)
        ids = list(self.models)
        if cfg.blackbox_artifacts is None:
            bb_ids = [a for a in ids if self.facts.artifacts[a].precision == "int8"] or ids
        else:
            bb_ids = [a for a in ids if a in cfg.blackbox_artifacts]
        per, params = {}, {}
        for aid in bb_ids:
            def one(aid=aid):
                with deterministic(cfg.seed + 29, cfg.threads):
                    return attacks.black_box(self.models[aid], self.spec, self.x[idx], self.y[idx], kind=kind,
                                             eps=self.eps, max_iter=cfg.blackbox_iter, p_init=cfg.blackbox_p_init,
                                             progress=self.progress)
            per[aid], params[aid] = self.stages.run(f"{ATTACK_LABELS[kind]} on {aid} (runtime queries)", one)
        return Adversarial(idx, per, {"per_artifact": params})

    def _adaptive(self) -> Adversarial:
        from .. import attacks
        from ..hardening import deterministic

        cfg = self.cfg
        idx = self.first(cfg.n_adaptive)
        known_id = min(self.thresholds, key=self.thresholds.get)
        known = self.thresholds[known_id]
        with deterministic(cfg.seed + 31, cfg.threads):
            images, params = attacks.adaptive_bpda(
                self.module, self.spec, self.x[idx], self.y[idx], self.facts.squeezers, known, eps=self.eps,
                step=cfg.adaptive_step * self.eps, steps=cfg.adaptive_steps, restarts=cfg.adaptive_restarts,
                weight=cfg.adaptive_weight, margin=cfg.adaptive_margin, seed=cfg.seed, progress=self.progress,
                combination=self.models[known_id].combination)
        params["threshold_rule"] = ("the smallest of the evaluated artifacts' thresholds (with that artifact's "
                                    "learned combination, if any)")
        return Adversarial(idx, images, params)

    # ------------------------------------------------------------------ device runtime

    def run_device(self) -> dict:
        """Every artifact on the clean and attacked images, through the device runtime."""
        x, y = self.x, self.y
        per_artifact = {}
        for aid, mdl in self.models.items():
            clean = runtime_outputs(mdl, x)
            facts = self.facts.artifacts[aid]
            art = {"format": facts.format, "precision": facts.precision,
                   "backend": mdl.backend.name, "threshold": self.thresholds[aid], "target_fpr": facts.target_fpr,
                   "clean": {"n": int(self.n), "accuracy": float(np.mean(clean["indices"] == y)),
                             "false_positive_rate": float(clean["flagged"].mean()),
                             "score_quantiles": {f"{q:g}": float(np.quantile(clean["scores"], q))
                                                 for q in (0.5, 0.9, 0.95, 0.99)}},
                   "attacks": {}}
            self.outs[aid] = {"clean": clean}
            for kind, a in self.adv.items():
                images = a.images_for(aid)
                if images is None:  # a black-box attack run on other artifacts
                    continue
                idx = a.idx
                o = runtime_outputs(mdl, images)
                met = attack_metrics(y[idx], clean["indices"][idx], o["indices"], clean["scores"], o["scores"],
                                     self.thresholds[aid], clean_flags=clean["flagged"], adv_flags=o["flagged"],
                                     roc_points=self.cfg.roc_points)
                success = (clean["indices"][idx] == y[idx]) & (o["indices"] != y[idx])
                met.update(perturbation_norms(images, x[idx], success))
                met["threat_model"] = ATTACK_THREAT[kind]
                art["attacks"][kind] = met
                self.outs[aid][kind] = {**o, "success": success, "idx": idx, "images": images}
            per_artifact[aid] = art
        for kind in ("square", "hopskipjump"):  # white-box PGD on the same inputs, for the gradient-masking check
            if kind in self.adv and "pgd" in self.adv:
                idx = self.adv[kind].idx
                for aid, p in self.adv[kind].params["per_artifact"].items():
                    p["white_box_pgd_accuracy_same_inputs"] = float(
                        np.mean(self.outs[aid]["pgd"]["indices"][idx] == y[idx]))
        return per_artifact

    def attack_summary(self) -> dict:
        """Per attack: label, threat model, parameters, and its effect on the source model."""
        out = {}
        for kind, a in self.adv.items():
            idx = a.idx
            entry = {"label": ATTACK_LABELS[kind], "threat_model": ATTACK_THREAT[kind], "n": int(len(idx)),
                     "params": a.params, "seconds": a.seconds, "source_model": None}
            if not isinstance(a.images, dict):
                src_clean = self.torch_predict(self.x[idx]) == self.y[idx]
                src_adv = self.torch_predict(a.images) == self.y[idx]
                entry["source_model"] = {
                    "clean_accuracy": float(src_clean.mean()), "accuracy": float(src_adv.mean()),
                    "success_rate": float((src_clean & ~src_adv).sum() / max(src_clean.sum(), 1))}
            out[kind] = entry
        return out

    # ------------------------------------------------------------------ sanity sweeps

    def eps_sweep(self) -> dict:
        from .. import attacks
        from ..hardening import deterministic

        cfg, x, y = self.cfg, self.x, self.y
        idx = self.first(cfg.n_sweep)
        src_clean = self.torch_predict(x[idx]) == y[idx]
        sweep = [m * self.eps for m in cfg.sweep_eps]
        s = {"eps": sweep, "steps": cfg.sweep_steps, "n": int(len(idx)), "source_success_rate": [],
             "artifacts": {aid: {"success_rate": [], "accuracy": [], "detection_rate": []} for aid in self.models}}
        for e in sweep:
            with deterministic(cfg.seed + 41, cfg.threads):
                images, _ = attacks.white_box(self.module, self.spec, x[idx], y[idx], "pgd", eps=float(e),
                                              step=2.5 * float(e) / cfg.sweep_steps, steps=cfg.sweep_steps)
            src_adv = self.torch_predict(images) == y[idx]
            s["source_success_rate"].append(float((src_clean & ~src_adv).sum() / max(src_clean.sum(), 1)))
            for aid, mdl in self.models.items():
                o = runtime_outputs(mdl, images)
                ok = self.outs[aid]["clean"]["indices"][idx] == y[idx]
                succ = ok & (o["indices"] != y[idx])
                a = s["artifacts"][aid]
                a["success_rate"].append(float(succ.sum() / max(ok.sum(), 1)))
                a["accuracy"].append(float(np.mean(o["indices"] == y[idx])))
                a["detection_rate"].append(float(o["flagged"][succ].mean()) if succ.any() else None)
        return s

    def restart_check(self) -> dict:
        from .. import attacks
        from ..hardening import deterministic

        cfg, x, y = self.cfg, self.x, self.y
        idx = self.first(cfg.n_restart_check)
        with deterministic(cfg.seed + 43, cfg.threads):
            images, _ = attacks.white_box(self.module, self.spec, x[idx], y[idx], "pgd", eps=self.eps,
                                          step=cfg.pgd_step * self.eps, steps=cfg.pgd_steps,
                                          restarts=cfg.restart_check)
        one = self.adv["pgd"].images[idx]
        r = {"n": int(len(idx)), "restarts": cfg.restart_check, "baseline_restarts": cfg.pgd_restarts,
             "source_accuracy_baseline": float(np.mean(self.torch_predict(one) == y[idx])),
             "source_accuracy_restarts": float(np.mean(self.torch_predict(images) == y[idx])),
             "artifacts": {}}
        for aid, mdl in self.models.items():
            o = runtime_outputs(mdl, images)
            r["artifacts"][aid] = {
                "accuracy_baseline": float(np.mean(self.outs[aid]["pgd"]["indices"][idx] == y[idx])),
                "accuracy_restarts": float(np.mean(o["indices"] == y[idx]))}
        return r

    # ------------------------------------------------------------------ cost/benefit

    def costbenefit(self) -> dict:
        """Per squeezer configuration and artifact: threshold at the target FPR on the
        calibration split, FPR on the test inputs, detection per attack on that artifact's
        successful adversarial examples, ROC-AUC, and the added latency on the runtime."""
        from ..calibrate import threshold_at_fpr, threshold_rule

        cfg, calib, x = self.cfg, self.calib, self.x
        cal_x = calib.x
        if self.facts.heldout_every and calib.sha256 == self.facts.calibration_data_sha256:
            from ..gates import split_calibration

            # the bundle's own rule: the threshold part of its calibration data (its held-out part stays out)
            cal_x = calib.x[split_calibration(len(calib), self.facts.heldout_every)[0]]
        unique = []
        for _, sq in cfg.squeezer_configs:
            for s in sq:
                if s not in unique:
                    unique.append(s)
        bundle_key = set(self.facts.squeezers)
        configs = [{"name": nm, "squeezers": sq, "is_bundle_config": set(sq) == bundle_key, "per_artifact": {}}
                   for nm, sq in cfg.squeezer_configs]
        checks = {}
        for aid, mdl in self.models.items():
            allsq = mdl.with_squeezers(unique)
            cal = runtime_outputs(allsq, cal_x)["squeezer_scores"]
            tst = runtime_outputs(allsq, x)["squeezer_scores"]
            atk_scores = {kind: (runtime_outputs(allsq, o["images"])["squeezer_scores"], o["success"])
                          for kind, o in self.outs[aid].items() if kind != "clean"}
            image = calib.x[0]
            for c in configs:
                def score(d, sq=c["squeezers"]):
                    return np.max(np.stack([d[s.name] for s in sq]), axis=0)

                cal_s, tst_s = score(cal), score(tst)
                thr = threshold_at_fpr(cal_s, cfg.target_fpr, cfg.fpr_confidence)
                det, pos_all = {}, []
                for kind, (d, success) in atk_scores.items():
                    s = score(d)[success]
                    det[kind] = float(is_flagged(s, thr).mean()) if len(s) else None
                    if kind != "adaptive":
                        pos_all.append(s)
                pos = np.concatenate(pos_all) if pos_all else np.zeros(0, np.float32)
                guarded = mdl.with_squeezers(c["squeezers"], thr)
                c["per_artifact"][aid] = {
                    "threshold": thr, "calibration_fpr": float(is_flagged(cal_s, thr).mean()),
                    "false_positive_rate": float(is_flagged(tst_s, thr).mean()), "detection": det,
                    "n_successful_non_adaptive": int(len(pos)),
                    "detection_non_adaptive": float(is_flagged(pos, thr).mean()) if len(pos) else None,
                    "roc_auc_non_adaptive": roc_auc(tst_s, pos) if len(pos) else None,
                    "latency": _latency_entry(guarded, mdl, image, cfg.latency_runs)}
                if c["is_bundle_config"]:
                    # the device's own joint score must equal the max over the per-squeezer scores we combined
                    direct = runtime_outputs(guarded, x[:50])["scores"]
                    checks[aid] = {"bundle_threshold": self.thresholds[aid], "recalibrated_threshold": thr,
                                   "max_abs_score_diff_vs_device_joint": float(np.max(np.abs(direct - tst_s[:50])))}
        for c in configs:
            c["squeezers"] = to_manifest_list(c["squeezers"])
        return {"target_fpr": cfg.target_fpr, "calibration_n": int(len(cal_x)), "test_n": int(len(x)),
                "fpr_confidence": cfg.fpr_confidence, "threshold_rule": threshold_rule(cfg.fpr_confidence),
                "latency": "median single-image predict, guarded (this configuration) minus plain (detect=False), "
                           "interleaved, 1 backend thread",
                "configs": configs, "bundle_config_checks": checks}

    # ------------------------------------------------------------------ report

    def curves(self) -> dict:
        """Per artifact and attack: (legitimate test scores, successful adversarial scores)."""
        return {aid: {k: (o["clean"]["scores"], v["scores"][v["success"]]) for k, v in o.items() if k != "clean"}
                for aid, o in self.outs.items()}

    def report(self, per_artifact: dict, sweep, restart, costbenefit, signature_verified: bool) -> dict:
        f = self.facts
        r = {
            "schema": SCHEMA, "schema_version": SCHEMA_VERSION, "created": utc_now(),
            "bundle": {"path": f.path, "sha256": f.sha256, "name": f.name, "version": f.version,
                       "signature_verified": signature_verified, "squeezers": to_manifest_list(f.squeezers),
                       "artifacts": list(self.models)},
            "source": self.source_info, "data": self.data_info,
            "config": {**self.cfg.to_dict(), "eps_in_range": self.eps, "eps_pixel_units": self.eps_unit,
                       "eps_text": eps_text(self.eps_unit)},
            "threat_models": dict(THREAT_MODELS), "attacks": self.attack_summary(), "artifacts": per_artifact,
            "eps_sweep": sweep, "restart_check": restart, "costbenefit": costbenefit,
            "sanity_checks": [], "targets": [], "tools": tool_versions(extra=("matplotlib", "scikit-learn", "tqdm")),
            "timings_s": {}, "notes": self.notes,
        }
        r["sanity_checks"] = sanity_checks(r)
        r["targets"] = targets(r)
        return r


def evaluate(bundle, public_key=None, *, source=None, source_factory: str | None = None, source_weights=None,
             source_kwargs: dict | None = None, data=None, labels=None, calibration=None, calibration_labels=None,
             artifacts=None, config: EvalConfig | None = None, out_dir: str | None = None, name: str | None = None,
             precomputed: dict | None = None, html: bool = True, progress: bool = True, log=None) -> Evaluation:
    """Evaluate every artifact of ``bundle`` (or ``artifacts``) through the device runtime.

    Args:
        bundle: the bundle file; loaded with ``edgeguard.load(bundle, public_key)`` per
            artifact (the signature is checked when ``public_key`` is given).
        source: the source ``torch.nn.Module`` (in memory), or ``source_factory``
            (``"module:function"``) + ``source_weights`` (state_dict file) +
            ``source_kwargs``; default: the ``<name>.source.json`` sidecar the
            converter writes next to the bundle.
        data, labels: labelled held-out test images (uint8 NHWC or floats in range,
            an ``Images``, an ``(x, y)`` tuple, or a .npy (+ ``labels`` .npy) / .npz
            path); default: the MNIST test split the bundle was built with.
        calibration, calibration_labels: legitimate images for the cost/benefit
            thresholds; default with the MNIST data: its calibration split; else the
            cost/benefit table is skipped.
        config: an :class:`EvalConfig` (``EvalConfig.quick()`` for smoke runs).
        out_dir, name: where to write ``<name>.evaluation.json/.html/.txt`` (name:
            the bundle's name); nothing is written without ``out_dir``.
        precomputed: ``{attack: (uint8 images aligned with the FULL test data, params)}``
            to reuse adversarial images the caller already computed with the same
            parameters (the main job passes its PGD digits).
    Returns an :class:`Evaluation`.
    """
    try:
        import art  # noqa: F401
        import torch  # noqa: F401
    except ImportError as e:
        from edgeguard.errors import BackendUnavailableError

        raise BackendUnavailableError(f"the evaluation needs the workstation tools (missing: {e.name}); install "
                                      f"them with: {INSTALL_HINT}") from None
    cfg = config or EvalConfig()
    t_start = time.perf_counter()
    stages = StageTimer(log, prefix="evaluate: ")
    notes: list[str] = []
    bundle_path = os.fspath(bundle)
    facts = BundleFacts.read(bundle_path, public_key, artifacts)
    ids = list(facts.artifacts) if artifacts is None else list(artifacts)
    module, source_info, sidecar = stages.run("source model", load_source, source, source_factory, source_weights,
                                              source_kwargs, facts, notes)
    test, calib, data_info = stages.run("data", load_data, data, labels, calibration, calibration_labels, facts,
                                        sidecar, notes)
    run = EvaluationRun(facts, module, source_info, test, calib, data_info, cfg, ids, public_key, stages, notes,
                        progress)
    run.run_attacks(precomputed)
    per_artifact = stages.run("device runtime (all artifacts)", run.run_device)
    sweep = stages.run("PGD eps sweep (sanity check)", run.eps_sweep) \
        if cfg.sweep_eps and "pgd" in cfg.attacks else None
    restart = stages.run("PGD restarts (sanity check)", run.restart_check) \
        if cfg.restart_check and cfg.restart_check > 1 and "pgd" in cfg.attacks else None
    costbenefit = None
    if cfg.costbenefit and calib is not None and cfg.squeezer_configs:
        costbenefit = stages.run("cost/benefit of squeezer configurations", run.costbenefit)
    elif cfg.costbenefit:
        notes.append("no calibration data: the squeezer cost/benefit table was skipped (pass calibration=/--calib)")
    robustness = None
    if cfg.robustness is not None:
        from dataclasses import replace

        from ..robustness import evaluate_robustness

        robustness = stages.run("corruptions, out-of-distribution inputs, drift streams", evaluate_robustness,
                                facts.path, public_key, run.x, run.y, models=run.models,
                                config=replace(cfg.robustness, seed=cfg.seed), log=log)
    report = run.report(per_artifact, sweep, restart, costbenefit, signature_verified=public_key is not None)
    report["robustness"] = robustness
    report["timings_s"] = {k: round(v, 3) for k, v in {**stages.times,
                                                       "total": time.perf_counter() - t_start}.items()}
    validate_evaluation(report)
    ev = Evaluation(report, render_text(report), curves=run.curves())
    if out_dir is not None:
        _write(ev, out_dir, name or facts.name, html)
    return ev


def _write(ev: Evaluation, out_dir: str, stem: str, html: bool) -> None:
    os.makedirs(out_dir, exist_ok=True)
    if html:
        from .html_page import write_evaluation_html

        t0 = time.perf_counter()
        ev.html_path = write_evaluation_html(ev.report, os.path.join(out_dir, f"{stem}.evaluation.html"),
                                             curves=ev.curves)
        ev.report["timings_s"]["html report"] = round(time.perf_counter() - t0, 3)
        ev.text = render_text(ev.report)
    ev.json_path = os.path.join(out_dir, f"{stem}.evaluation.json")
    with open(ev.json_path, "w", encoding="utf-8") as f:
        json.dump(ev.report, f, indent=2, allow_nan=False)
        f.write("\n")
    ev.text_path = os.path.join(out_dir, f"{stem}.evaluation.txt")
    with open(ev.text_path, "w", encoding="utf-8") as f:
        f.write(ev.text)


def cmd_evaluate(args) -> int:
    """``edgeguard evaluate``: see :func:`edgeguard.converters.cli.add_evaluate_parser`."""
    import sys

    overrides = {}
    for k in ("n_test", "n_cw", "n_blackbox", "blackbox_iter", "adaptive_steps", "pgd_steps", "seed", "threads",
              "eps"):
        v = getattr(args, k, None)
        if v is not None:
            overrides[k] = v
    if args.attacks:
        overrides["attacks"] = tuple(a.strip() for a in args.attacks.split(",") if a.strip())
    if args.no_costbenefit:
        overrides["costbenefit"] = False
    if getattr(args, "no_robustness", False):
        overrides["robustness"] = None
    cfg = EvalConfig.quick(**overrides) if args.quick else EvalConfig(**overrides)
    kwargs = None
    if args.source_kwargs:
        try:
            kwargs = json.loads(args.source_kwargs)
        except ValueError as e:
            raise SourceModelError(f"--source-kwargs is not valid JSON: {e}") from None
    if args.source_factory and not args.source_weights:
        raise SourceModelError("--source-factory needs --source-weights (the state_dict of the source model)")
    artifacts = [a.strip() for a in args.artifacts.split(",") if a.strip()] if args.artifacts else None
    log = None if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    out_dir = args.out or os.path.dirname(os.path.abspath(args.bundle))
    ev = evaluate(args.bundle, args.public_key, source_factory=args.source_factory, source_weights=args.source_weights,
                  source_kwargs=kwargs, data=args.data, labels=args.labels, calibration=args.calib,
                  calibration_labels=args.calib_labels, artifacts=artifacts, config=cfg, out_dir=out_dir,
                  name=args.name, html=not args.no_html, progress=not args.quiet and sys.stderr.isatty(), log=log)
    if args.json:
        print(json.dumps(ev.report, indent=2))
    else:
        sys.stdout.write(ev.text)
        print(f"report: {ev.json_path}" + (f", {ev.html_path}" if ev.html_path else ""))
    return 0
