"""Attacks for the robustness evaluation (:mod:`edgeguard.converters.evaluation`).

Three kinds, each with its threat model:

* **white-box, transferred** -- FGSM, BIM, PGD (L-inf) from IBM ART and Carlini-Wagner
  L2 (:func:`carlini_wagner_l2`, batched PyTorch, run to convergence), computed with the
  gradients of the source PyTorch model, rounded to uint8 pixels and then run on every
  deployed artifact (:func:`white_box`);
* **black-box, query-based** -- ART's Square Attack (or HopSkipJump) through a
  :class:`~art.estimators.classification.BlackBoxClassifierNeuralNetwork` whose
  predict function is the device runtime itself (:class:`RuntimeOracle`:
  ``GuardedModel.predict(uint8 images, detect=False)``), so the int8 / TFLite artifact
  is what is attacked; every image sent to the runtime is counted (:func:`black_box`);
* **adaptive** -- an attack that knows the detector: PGD on the source model through
  the squeezers with BPDA (forward through the real squeezers -- the device's own
  native kernels -- backward as the identity), on a loss that misclassifies *and*
  keeps the detector's score (max over squeezers of the L1 distance between softmaxes)
  under the threshold (:func:`adaptive_bpda`). Necessarily custom: ART has no
  feature-squeezing detector to attack.

Why ART rather than torchattacks: one maintained library gives the white-box
attacks on the PyTorch model, the black-box attacks through
``BlackBoxClassifier(NeuralNetwork)`` on any predict function (here: the device
runtime running ONNX / TFLite, which torchattacks cannot attack since it needs a
differentiable torch model), and the adversarial trainers and
``ProjectedGradientDescent`` the hardening already uses (:mod:`.hardening`), so
attack semantics (projection, random starts, clipping) are the same in training
and in evaluation.

Images cross these functions as uint8 NHWC (what a device receives); attacks work
in the model's float range and layout (``spec.to_range``) and their results are
rounded back with ``spec.to_images`` (kept inside the L-inf ball for L-inf attacks).
"""

from __future__ import annotations

import math
import time

import numpy as np

from .data import InputSpec
from .errors import ConversionError
from .squeezers import Squeezer, to_manifest_list

__all__ = ["white_box", "carlini_wagner_l2", "black_box", "adaptive_bpda", "RuntimeOracle", "WHITE_BOX", "BLACK_BOX",
           "squeeze_np", "detector_scores_torch"]

WHITE_BOX = ("fgsm", "bim", "pgd", "cw_l2")
BLACK_BOX = ("square", "hopskipjump")


def _clf(module, spec: InputSpec):
    from .hardening import art_classifier

    clf, _ = art_classifier(module, spec)
    return clf


def white_box(module, spec: InputSpec, images: np.ndarray, labels: np.ndarray, kind: str, *, eps: float = 0.3,
              step: float | None = None, steps: int = 40, restarts: int = 1, batch_size: int = 250,
              cw: dict | None = None) -> tuple[np.ndarray, dict]:
    """One ART white-box attack on the PyTorch ``module`` (gradients of the source model).

    ``kind``: ``"fgsm"`` (FastGradientMethod, one step of eps), ``"bim"``
    (BasicIterativeMethod: ``steps`` steps of ``step``, no random start), ``"pgd"``
    (ProjectedGradientDescent: random start, ``restarts`` starts, the best kept by
    ART), ``"cw_l2"`` (:func:`carlini_wagner_l2`, untargeted; ``cw``: its keyword
    arguments ``max_iter``, ``binary_search_steps``, ``learning_rate``,
    ``initial_const``, ``confidence``, ``abort_early``).
    Returns (uint8 NHWC adversarial images, the attack's parameters)."""
    import art.attacks.evasion as ev

    clf = _clf(module, spec)
    x = spec.to_range(images).astype(np.float32)
    module.eval()
    if kind == "fgsm":
        atk = ev.FastGradientMethod(clf, norm=np.inf, eps=float(eps), batch_size=batch_size)
        params = {"library": "ART FastGradientMethod", "norm": "inf", "eps": eps, "steps": 1, "random_start": False}
    elif kind == "bim":
        step = float(step if step is not None else eps / 5)
        atk = ev.BasicIterativeMethod(clf, eps=float(eps), eps_step=step, max_iter=int(steps), batch_size=batch_size,
                                      verbose=False)
        params = {"library": "ART BasicIterativeMethod", "norm": "inf", "eps": eps, "step": step, "steps": steps,
                  "random_start": False}
    elif kind == "pgd":
        step = float(step if step is not None else 2.5 * eps / steps)
        atk = ev.ProjectedGradientDescent(clf, norm=np.inf, eps=float(eps), eps_step=step, max_iter=int(steps),
                                          num_random_init=int(restarts), batch_size=batch_size, verbose=False)
        params = {"library": "ART ProjectedGradientDescent", "norm": "inf", "eps": eps, "step": step, "steps": steps,
                  "random_start": True, "restarts": restarts}
    elif kind == "cw_l2":
        return carlini_wagner_l2(module, spec, images, labels, batch_size=batch_size, **(cw or {}))
    else:
        raise ConversionError(f"unknown white-box attack {kind!r}; choose one of {WHITE_BOX}")
    adv = atk.generate(x, y=np.asarray(labels))
    out = spec.to_images(adv, eps=eps, reference=images)
    return out, params


def carlini_wagner_l2(module, spec: InputSpec, images: np.ndarray, labels: np.ndarray, *, max_iter: int = 1000,
                      binary_search_steps: int = 9, learning_rate: float = 0.01, initial_const: float = 0.01,
                      confidence: float = 0.0, abort_early: bool = True, batch_size: int = 250,
                      progress: bool = False) -> tuple[np.ndarray, dict]:
    """Untargeted Carlini-Wagner L2 (Carlini & Wagner 2017), batched in PyTorch, run to
    convergence on uint8 pixels.

    Per input: Adam on ``delta`` minimising ``||delta||^2 + c * max(Z_y - max_{j != y} Z_j +
    confidence, 0)`` at ``x' = x + delta``, projected onto the value range after every step
    (the paper's clipped variant: its tanh change of variables freezes the saturated pixels
    that make most of a digit, so it needs ~10^4 iterations), ``max_iter``
    iterations per constant (stopped early when the loss has not fallen by 0.01% over a tenth
    of them, at least 25), and a binary search over ``c`` per input (x10 until a success, then bisection),
    ``binary_search_steps`` times. What counts is the image a device receives: at every
    iteration the iterate is rounded to uint8 pixels, and the misclassified rounded image with
    the smallest L2 distance is kept (inputs never misclassified come back unchanged).

    Why not ART's ``CarliniL2Method``: it line-searches every sample in numpy; here 20 of its
    iterations on 50 digits took 72 s, so the thousands that convergence needs would take hours.
    Returns (uint8 NHWC images, parameters)."""
    import torch
    from tqdm.auto import tqdm

    lo, hi = (float(v) for v in spec.range)
    shape = (1, -1, 1, 1) if spec.layout == "NCHW" else (1, 1, 1, -1)
    mean = torch.tensor(spec.mean, dtype=torch.float32).reshape(shape)
    std = torch.tensor(spec.std, dtype=torch.float32).reshape(shape)
    scale = float(spec.scale)
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)

    def logits(x):
        return module((x - mean) / std)

    x_all = torch.from_numpy(spec.to_range(images).astype(np.float32))
    y_all = torch.from_numpy(np.asarray(labels, np.int64))
    check_every = max(25, int(max_iter) // 10)  # early abort: progress over this many iterations
    best = x_all.clone()
    best_l2 = torch.full((len(x_all),), float("inf"))
    t0 = time.perf_counter()
    iters_run = 0
    bar = tqdm(total=math.ceil(len(x_all) / batch_size) * binary_search_steps, desc="CW-L2", disable=not progress,
               leave=False, unit="search step")
    try:
        for b in range(0, len(x_all), batch_size):
            x0, y = x_all[b:b + batch_size], y_all[b:b + batch_size]
            n = len(x0)
            onehot = torch.nn.functional.one_hot(y, logits(x0[:1]).shape[1]).bool()
            const = torch.full((n,), float(initial_const))
            lower, upper = torch.zeros(n), torch.full((n,), 1e10)
            for _ in range(int(binary_search_steps)):
                delta = torch.zeros_like(x0, requires_grad=True)
                opt = torch.optim.Adam([delta], lr=float(learning_rate))
                found = torch.zeros(n, dtype=torch.bool)
                prev = float("inf")
                for it in range(int(max_iter)):
                    xa = x0 + delta
                    z = logits(xa)
                    real = z.masked_select(onehot)
                    other = z.masked_fill(onehot, -1e9).max(1).values
                    l2 = ((xa - x0) ** 2).flatten(1).sum(1)
                    loss = (l2 + const * torch.clamp(real - other + float(confidence), min=0)).sum()
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    with torch.no_grad():  # projection onto the value range
                        delta.copy_((x0 + delta).clamp(lo, hi) - x0)
                    iters_run += 1
                    with torch.no_grad():  # the device's view: the iterate rounded to uint8 pixels
                        q = torch.round(xa.detach() / scale).clamp(0, 255) * scale
                        zq = logits(q)
                        margin = zq.masked_fill(onehot, -1e9).max(1).values - zq.masked_select(onehot)
                        ok = (zq.argmax(1) != y) & (margin >= float(confidence))
                        dq = ((q - x0) ** 2).flatten(1).sum(1)
                        better = ok & (dq < best_l2[b:b + n])
                        if better.any():
                            best[b:b + n][better] = q[better]
                            best_l2[b:b + n] = torch.where(better, dq, best_l2[b:b + n])
                        found |= ok
                    if abort_early and it % check_every == 0:
                        if loss.item() > prev * 0.9999:
                            break
                        prev = loss.item()
                upper = torch.where(found, torch.minimum(upper, const), upper)
                lower = torch.where(found, lower, torch.maximum(lower, const))
                const = torch.where(upper < 1e9, (lower + upper) / 2, const * 10)
                bar.update(1)
    finally:
        bar.close()
        for p in module.parameters():
            p.requires_grad_(True)
    out = spec.to_images(best.numpy())
    params = {"method": "Carlini-Wagner L2, untargeted, clipped variant (custom batched PyTorch, Adam; success and "
                        "distance measured on the iterate rounded to uint8 pixels)", "norm": "2", "targeted": False,
              "max_iter": int(max_iter), "binary_search_steps": int(binary_search_steps),
              "learning_rate": float(learning_rate), "initial_const": float(initial_const),
              "confidence": float(confidence), "abort_early": bool(abort_early), "iterations_run": iters_run,
              "seconds": time.perf_counter() - t0}
    return out, params


# ----------------------------------------------------------------------------- black box

class RuntimeOracle:
    """The deployed artifact as a black box: float input in the model's range and layout
    (what ART passes) -> rounded to uint8 pixels (what a device receives) ->
    ``model.predict(images, detect=False).probabilities``. Counts every image queried
    (``queries``) and every call (``calls``)."""

    def __init__(self, model, spec: InputSpec):
        self.model = model
        self.spec = spec
        self.queries = 0
        self.calls = 0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        images = self.spec.to_images(np.clip(np.asarray(x, np.float32), *self.spec.range))
        self.queries += len(images)
        self.calls += 1
        return np.asarray(self.model.predict(images, detect=False).probabilities, np.float32)


def black_box(model, spec: InputSpec, images: np.ndarray, labels: np.ndarray, *, kind: str = "square",
              eps: float = 0.3, max_iter: int = 1000, p_init: float = 0.8, restarts: int = 1, batch_size: int = 128,
              progress: bool = False) -> tuple[np.ndarray, dict]:
    """A query-based attack on the deployed artifact ``model`` (a GuardedModel) through the
    runtime. ``kind``: ``"square"`` (ART SquareAttack, L-inf ``eps``, ``max_iter``
    iterations: the per-image query budget of the paper) or ``"hopskipjump"`` (ART
    HopSkipJump, decision-based, L2, ``max_iter`` iterations). Returns (uint8 NHWC
    adversarial images, parameters with ``queries`` = images the runtime answered)."""
    from art.estimators.classification import BlackBoxClassifier, BlackBoxClassifierNeuralNetwork

    oracle = RuntimeOracle(model, spec)
    x = spec.to_range(images).astype(np.float32)
    t0 = time.perf_counter()
    if kind == "square":
        from art.attacks.evasion import SquareAttack

        est = BlackBoxClassifierNeuralNetwork(oracle, tuple(spec.shape), spec.num_classes,
                                              channels_first=spec.layout == "NCHW", clip_values=tuple(spec.range))
        atk = SquareAttack(est, norm=np.inf, eps=float(eps), max_iter=int(max_iter), p_init=float(p_init),
                           nb_restarts=int(restarts), batch_size=int(batch_size), verbose=progress)
        params = {"library": "ART SquareAttack", "norm": "inf", "eps": eps, "max_iter": max_iter, "p_init": p_init,
                  "restarts": restarts, "feedback": "probabilities (score-based)"}
        adv = atk.generate(x, y=np.asarray(labels))
        out = spec.to_images(adv, eps=eps, reference=images)
    elif kind == "hopskipjump":
        from art.attacks.evasion import HopSkipJump

        est = BlackBoxClassifier(oracle, tuple(spec.shape), spec.num_classes, clip_values=tuple(spec.range))
        atk = HopSkipJump(est, targeted=False, norm=2, max_iter=int(max_iter), max_eval=1000, init_eval=100,
                          batch_size=int(batch_size), verbose=progress)
        params = {"library": "ART HopSkipJump", "norm": "2", "max_iter": max_iter,
                  "feedback": "labels only (decision-based)"}
        adv = atk.generate(x, y=np.asarray(labels))
        out = spec.to_images(adv)
    else:
        raise ConversionError(f"unknown black-box attack {kind!r}; choose one of {BLACK_BOX}")
    params.update(queries=int(oracle.queries), calls=int(oracle.calls), n=int(len(images)),
                  queries_per_image=oracle.queries / max(len(images), 1), seconds=time.perf_counter() - t0)
    return out, params


# ----------------------------------------------------------------------------- adaptive (BPDA)

def squeeze_np(x: np.ndarray, squeezer: Squeezer, layout: str, value_range=(0.0, 1.0)) -> np.ndarray:
    """The device's float squeezer on a float32 batch in the model's layout and range
    (the native kernels, as ``GuardedModel.predict`` runs them on float input). Bit depth
    quantises the unit range, so other ranges are mapped to [0, 1] and back."""
    lo, hi = value_range
    x = np.ascontiguousarray(x, np.float32)
    if squeezer.kind == "bit_depth" and (lo, hi) != (0.0, 1.0):
        unit = np.ascontiguousarray((x - lo) / (hi - lo), np.float32)
        return (squeezer.apply(unit, layout=layout) * (hi - lo) + lo).astype(np.float32)
    return np.asarray(squeezer.apply(x, layout=layout), np.float32)


def _bpda(x, squeezer: Squeezer, spec: InputSpec, smooth: float = 0.0):
    """Forward: the real squeezer; backward: the identity (Athalye et al. 2018), or for bit
    depth with ``smooth`` > 0 a soft rounding ``floor(v) + sigmoid(smooth * (frac(v) - 0.5))``
    of ``v = x * (2**bits - 1)`` (gradient concentrated on the values that can change level)."""
    import torch

    sq = torch.from_numpy(squeeze_np(x.detach().numpy(), squeezer, spec.layout, spec.range))
    if smooth and squeezer.kind == "bit_depth":
        lo, hi = spec.range
        levels = 2 ** int(squeezer.param) - 1
        v = (x - lo) / (hi - lo) * levels
        f = torch.floor(v).detach()
        g = (f + torch.sigmoid(smooth * (v - f - 0.5))) / levels * (hi - lo) + lo
        return g + (sq - g).detach()
    return x + (sq - x).detach()


def detector_scores_torch(model_fn, x, squeezers, spec: InputSpec, smooth: float = 0.0, combination=None):
    """(logits of x and of each squeezed copy, shape (1 + S, N, K); detector score of x) with
    BPDA squeezing: score = max over squeezers of the L1 distance between the softmax of x
    and of squeeze(x), or with a learned ``combination`` (:class:`edgeguard.squeeze.Combination`)
    the device's logistic score of those distances and 1 - top-1 probability."""
    import torch

    n = x.shape[0]
    batch = torch.cat([x] + [_bpda(x, s, spec, smooth) for s in squeezers])
    logits = model_fn(batch).reshape(1 + len(squeezers), n, -1)
    p = torch.softmax(logits, dim=2)
    dists = (p[:1] - p[1:]).abs().sum(2)
    if combination is None:
        return logits, dists.max(0).values
    w = torch.tensor(combination.weights, dtype=dists.dtype)
    z = combination.bias + (w[:, None] * dists).sum(0) + combination.confidence_weight * (1 - p[0].max(1).values)
    return logits, torch.sigmoid(z)


def adaptive_bpda(module, spec: InputSpec, images: np.ndarray, labels: np.ndarray, squeezers, threshold: float, *,
                  eps: float = 0.3, step: float = 0.01, steps: int = 100, restarts: int = 1, weight: float = 1.0,
                  margin: float = 0.5, switch: bool = True, kappa: float = 1.0, smooth: float = 10.0,
                  batch_size: int = 250, seed: int = 0, progress: bool = False,
                  combination=None) -> tuple[np.ndarray, dict]:
    """PGD (L-inf, random start) on the source model against model + detector, with BPDA
    through the squeezers.

    The detector flags an input when the softmax of its squeezed copies differs from its
    own, so the attack pushes the original AND every squeezed copy to the same wrong class
    ``t`` (re-chosen every step: the wrong class with the highest log-probability summed
    over the copies) and penalises the score. Maximised per input::

        sum over x and squeeze_s(x) of log softmax_t - weight * relu(score(x) - margin * threshold)

    and, with ``switch``, once x is misclassified by a logit margin ``kappa``: ``-score(x)``
    alone (lower the score while staying misclassified; Carlini and Wagner 2017's recipe
    against detectors). ``score`` is the detector's score through BPDA (forward: the real
    squeezers, i.e. the device's kernels; backward: the identity for the median, and for
    bit depth a soft rounding of steepness ``smooth`` (0: the identity), which puts the
    gradient on the pixels that can change level). Aiming at ``margin * threshold`` leaves
    room for the uint8 rounding and the transfer to quantised artifacts. Per input, the
    iterate kept is the misclassified one with the lowest score seen (exact forward
    values), else the last one; over ``restarts`` random starts, the best by that rule. With a learned
    ``combination`` the score is the device's logistic score (:func:`detector_scores_torch`)."""
    import torch
    from tqdm.auto import tqdm

    from .hardening import normalized_module

    wrapped = normalized_module(module, spec).eval()
    lo, hi = spec.range
    x_all = torch.from_numpy(spec.to_range(images).astype(np.float32))
    y_all = torch.from_numpy(np.asarray(labels, np.int64))
    target = float(margin) * float(threshold)
    gen = torch.Generator().manual_seed(int(seed))
    best = x_all.clone()
    best_key = torch.full((len(x_all),), float("inf"))  # the score if misclassified, else 10: lower is better
    t0 = time.perf_counter()
    total = restarts * math.ceil(len(x_all) / batch_size) * steps
    bar = tqdm(total=total, desc="adaptive BPDA attack", disable=not progress, leave=False, unit="step")
    for _ in range(int(restarts)):
        for b in range(0, len(x_all), batch_size):
            x0, y = x_all[b:b + batch_size], y_all[b:b + batch_size]
            sl = slice(b, b + len(x0))
            xa = (x0 + (torch.rand(x0.shape, generator=gen) * 2 - 1) * eps).clamp(lo, hi)
            for it in range(int(steps) + 1):
                xa.requires_grad_(True)
                logits, score = detector_scores_torch(wrapped, xa, squeezers, spec, smooth, combination)
                with torch.no_grad():  # keep the best iterate (exact forward values)
                    wrong = logits[0].argmax(1) != y
                    key = torch.where(wrong, score.detach(), torch.full_like(score, 10.0))
                    better = key < best_key[sl]
                    best[sl][better] = xa.detach()[better]
                    best_key[sl] = torch.where(better, key, best_key[sl])
                if it == steps:
                    break
                logp = torch.log_softmax(logits, dim=2).sum(0)  # (N, K): summed over the copies
                t = logp.detach().masked_fill(torch.nn.functional.one_hot(y, logp.shape[1]).bool(), -1e9).argmax(1)
                loss = logp.gather(1, t[:, None])[:, 0] - weight * torch.relu(score - target)
                if switch:  # misclassified with a margin: only lower the score
                    z = logits[0].detach()
                    m = z.gather(1, y[:, None])[:, 0] - z.masked_fill(
                        torch.nn.functional.one_hot(y, z.shape[1]).bool(), -1e9).max(1).values
                    loss = torch.where(m < -kappa, -score, loss)
                grad, = torch.autograd.grad(loss.sum(), xa)
                with torch.no_grad():
                    xa = xa + step * grad.sign()
                    xa = torch.min(torch.max(xa, x0 - eps), x0 + eps).clamp(lo, hi)
                bar.update(1)
    bar.close()
    out = spec.to_images(best.numpy(), eps=eps, reference=images)
    params = {"method": "PGD with BPDA through the squeezers (custom; forward real squeezers, backward identity)",
              "norm": "inf", "eps": eps, "step": step, "steps": steps, "restarts": restarts,
              "loss": "sum over x and squeeze_s(x) of log softmax_t - weight * relu(score - margin * threshold), "
                      "t = the wrong class with the highest summed log-probability"
                      + ("; once misclassified by kappa: -score" if switch else ""),
              "weight": weight, "margin": margin, "switch": switch, "kappa": kappa,
              "bpda_backward": "identity" + (f"; bit depth: soft rounding, steepness {smooth:g}" if smooth else ""),
              "threshold_known": float(threshold),
              "combination_known": None if combination is None else combination.to_manifest(),
              "squeezers": to_manifest_list(squeezers), "seconds": time.perf_counter() - t0}
    return out, params
