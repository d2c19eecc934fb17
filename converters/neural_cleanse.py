"""Neural Cleanse (Wang et al., IEEE S&P 2019) on a PyTorch source model: a model-level second
stage of the poisoning scan that does not depend on the poison forming its own cluster.

A backdoored class is one that *every* input reaches through a tiny change: the trigger. Neural
Cleanse reverse-engineers, for each class t, the smallest mask m and pattern p such that
``(1 - m) * x + m * p`` is classified t for (almost) all inputs x; a class whose mask's L1 norm
is an outlier on the small side (anomaly index = |norm - median| / (1.4826 * MAD) > 2) is
flagged as a backdoor target.

ART implements this (``art.defences.transformer.poisoning.NeuralCleanse``) for Keras models
only (``KerasNeuralCleanse``; TensorFlow is not installed here). The optimisation below is a
line-by-line PyTorch port of ``KerasNeuralCleanse.generate_backdoor`` (same parameters and
defaults, tanh-parametrised mask and pattern, Adam(lr, 0.5, 0.9), the paper's cost schedule and
early stop, with one fix: ART 1.20.1 resets the cost every few successful steps, the paper's
code only when it is 0, see below); the outlier test is ART's own ``NeuralCleanseMixin.outlier_detection``, called
unchanged on this class.

Which *training images* carry the reversed trigger (the paper detects backdoored inputs by
neuron activations at test time; it does not clean training data) is decided here by the
reversed trigger itself: an image labelled with a flagged class t whose pixels under the mask
match the reversed pattern. Its score is the mask-weighted mean absolute difference
``sum(m * |x - p|) / sum(m)``; the images of the *other* classes, which under the attack model
(poison is relabelled to the target) do not carry this trigger, give the null distribution, and
an image of class t is flagged when its score is below that distribution's ``null_quantile``
quantile. With the default 1% quantile about 1% of class t's clean images are flagged.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import numpy as np

from .errors import ConversionError

__all__ = ["NeuralCleanseConfig", "reverse_engineer_triggers", "trigger_match_scores"]


@dataclass(frozen=True)
class NeuralCleanseConfig:
    """ART ``NeuralCleanse`` parameters (ART's defaults unless noted) and the sample rule's."""

    steps: int = 1000  # ART's default; early stop ends most classes far sooner
    init_cost: float = 1e-3
    norm: int = 1  # the paper's L1 (ART's default is 2; its outlier test measures L1 either way)
    learning_rate: float = 0.1
    attack_success_threshold: float = 0.99
    patience: int = 5
    early_stop: bool = True
    early_stop_threshold: float = 0.99
    early_stop_patience: int = 10
    cost_multiplier: float = 1.5
    batch_size: int = 32
    n_images: int = 320  # training images (stratified) the triggers are optimised on: 10 batches a step
    anomaly_index: float = 2.0  # the paper's and ART's bound (fixed inside ART's outlier test)
    null_quantile: float = 0.01  # sample rule: flag class-t images matching better than 1% of the others

    def __post_init__(self):
        if self.norm not in (1, 2):
            raise ConversionError(f"neural cleanse norm must be 1 or 2, got {self.norm!r}")
        if not (self.steps >= 1 and self.batch_size >= 1 and self.n_images >= self.batch_size
                and 0 < self.null_quantile < 0.5 and self.learning_rate > 0 and self.cost_multiplier > 1):
            raise ConversionError("neural cleanse needs steps >= 1, n_images >= batch_size >= 1, "
                                  "0 < null_quantile < 0.5, learning_rate > 0, cost_multiplier > 1")
        if self.anomaly_index != 2.0:
            raise ConversionError("ART's outlier test fixes the anomaly index bound at 2")

    def to_dict(self) -> dict:
        return asdict(self)


def _art_torch_neural_cleanse():
    """A ``NeuralCleanseMixin`` (ART) whose ``generate_backdoor`` runs in PyTorch."""
    import torch
    from art.estimators.poison_mitigation.neural_cleanse.neural_cleanse import NeuralCleanseMixin

    class TorchNeuralCleanse(NeuralCleanseMixin):
        def __init__(self, model, nb_classes: int, value_range, cfg: NeuralCleanseConfig, seed: int):
            super().__init__(cfg.steps, init_cost=cfg.init_cost, norm=cfg.norm, learning_rate=cfg.learning_rate,
                             attack_success_threshold=cfg.attack_success_threshold, patience=cfg.patience,
                             early_stop=cfg.early_stop, early_stop_threshold=cfg.early_stop_threshold,
                             early_stop_patience=cfg.early_stop_patience, cost_multiplier=cfg.cost_multiplier,
                             batch_size=cfg.batch_size)
            self.model = model
            self._nb_classes = nb_classes
            self.lo, self.hi = float(value_range[0]), float(value_range[1])
            self.seed = seed
            self.steps_run: list[int] = []

        @property
        def nb_classes(self) -> int:
            return self._nb_classes

        def generate_backdoor(self, x_val, y_val, y_target):
            # KerasNeuralCleanse.generate_backdoor, in torch: fresh random mask/pattern and optimiser
            # per class, cost schedule and early stop as in the paper's code
            eps = 1e-7  # keras.backend.epsilon()
            target = int(np.argmax(y_target))
            gen = torch.Generator().manual_seed(self.seed * 1000 + target)
            shape = x_val.shape[1:]
            mask_raw = torch.rand(shape, generator=gen).requires_grad_(True)
            pattern_raw = torch.rand(shape, generator=gen).requires_grad_(True)
            opt = torch.optim.Adam([mask_raw, pattern_raw], lr=self.learning_rate, betas=(0.5, 0.9))
            x_all = torch.from_numpy(np.ascontiguousarray(x_val, np.float32))
            y_batch_all = torch.full((len(x_all),), target, dtype=torch.long)
            cost = self.init_cost
            mask_best = pattern_best = None
            reg_best = float("inf")
            cost_set_counter = cost_up_counter = cost_down_counter = 0
            cost_up_flag = cost_down_flag = False
            early_stop_counter = 0
            early_stop_reg_best = reg_best
            n_batches = max(len(x_all) // self.batch_size, 1)
            step = 0
            for step in range(1, self.steps + 1):
                order = torch.randperm(len(x_all), generator=gen)
                regs, accs = [], []
                for b in range(n_batches):
                    sel = order[b * self.batch_size:(b + 1) * self.batch_size]
                    mask = torch.tanh(mask_raw) / (2 - eps) + 0.5
                    pattern = self.lo + (self.hi - self.lo) * (torch.tanh(pattern_raw) / (2 - eps) + 0.5)
                    x_adv = (1 - mask) * x_all[sel] + mask * pattern
                    logits = self.model(x_adv)
                    loss_ce = torch.nn.functional.cross_entropy(logits, y_batch_all[sel])
                    channels = shape[0]
                    if self.norm == 1:
                        loss_reg = mask.abs().sum() / channels
                    else:
                        loss_reg = torch.sqrt((mask ** 2).sum() / channels)
                    loss = loss_ce + cost * loss_reg
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    regs.append(float(loss_reg.detach()))
                    accs.append(float((logits.argmax(1) == target).float().mean()))
                avg_reg, avg_acc = float(np.mean(regs)), float(np.mean(accs))
                if avg_acc >= self.attack_success_threshold and avg_reg < reg_best:
                    with torch.no_grad():
                        mask_best = (torch.tanh(mask_raw) / (2 - eps) + 0.5).numpy().copy()
                        pattern_best = (self.lo + (self.hi - self.lo)
                                        * (torch.tanh(pattern_raw) / (2 - eps) + 0.5)).numpy().copy()
                    reg_best = avg_reg
                if self.early_stop:
                    if reg_best < float("inf"):
                        if reg_best >= self.early_stop_threshold * early_stop_reg_best:
                            early_stop_counter += 1
                        else:
                            early_stop_counter = 0
                    early_stop_reg_best = min(reg_best, early_stop_reg_best)
                    if cost_down_flag and cost_up_flag and early_stop_counter >= self.early_stop_patience:
                        break
                # the paper's code: `if self.cost == 0 and ...`; ART 1.20.1 dropped `cost == 0`, which
                # resets the cost to init_cost every `patience` successful steps, so it never grows
                # and the mask never shrinks (all classes' masks stay at 70-100 pixels on MNIST)
                if cost == 0 and avg_acc >= self.attack_success_threshold:
                    cost_set_counter += 1
                    if cost_set_counter >= self.patience:
                        cost = self.init_cost
                        cost_up_counter = cost_down_counter = 0
                        cost_up_flag = cost_down_flag = False
                else:
                    cost_set_counter = 0
                if avg_acc >= self.attack_success_threshold:
                    cost_up_counter += 1
                    cost_down_counter = 0
                else:
                    cost_up_counter = 0
                    cost_down_counter += 1
                if cost_up_counter >= self.patience:
                    cost_up_counter = 0
                    cost *= self.cost_multiplier_up
                    cost_up_flag = True
                elif cost_down_counter >= self.patience:
                    cost_down_counter = 0
                    cost /= self.cost_multiplier_down
                    cost_down_flag = True
            self.steps_run.append(step)
            if os.environ.get("NC_DEBUG"):
                print(f"class {target}: {step} steps, reg_best {reg_best:.1f}", flush=True)
            if mask_best is None:  # never reached the success threshold: the last mask (as ART)
                with torch.no_grad():
                    mask_best = (torch.tanh(mask_raw) / (2 - eps) + 0.5).numpy().copy()
                    pattern_best = (self.lo + (self.hi - self.lo)
                                    * (torch.tanh(pattern_raw) / (2 - eps) + 0.5)).numpy().copy()
            return mask_best, pattern_best

    return TorchNeuralCleanse


def reverse_engineer_triggers(model, x_val: np.ndarray, y_val: np.ndarray, nb_classes: int, value_range,
                              cfg: NeuralCleanseConfig, seed: int = 0) -> dict:
    """Run Neural Cleanse on ``model`` (a torch module taking float inputs in ``value_range``, in
    eval mode) over ``x_val`` (float, model layout) and integer labels ``y_val``. Returns per-class
    masks, patterns, L1 norms, anomaly indices and the flagged classes (ART's outlier test)."""
    import torch

    cls = _art_torch_neural_cleanse()
    nc = cls(model, nb_classes, value_range, cfg, seed)
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        masks, patterns, norms = {}, {}, []
        original = nc.generate_backdoor

        def recording(xv, yv, y_target):  # keep every class's trigger, not only the flagged ones
            mask, pattern = original(xv, yv, y_target)
            k = int(np.argmax(y_target))
            masks[k], patterns[k] = mask, pattern
            norms.append(float(np.sum(np.abs(mask))))
            return mask, pattern

        nc.generate_backdoor = recording
        y_onehot = np.eye(nb_classes, dtype=np.float32)[y_val]
        with torch.enable_grad():
            flagged = [int(label) for label, _, _ in nc.outlier_detection(x_val, y_onehot)]
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
    norms_a = np.asarray(norms)
    median = float(np.median(norms_a))
    mad = 1.4826 * float(np.median(np.abs(norms_a - median)))
    anomaly = [float(abs(v - median) / mad) if mad > 0 else 0.0 for v in norms_a]
    return {"masks": masks, "patterns": patterns, "l1_norms": norms, "anomaly_index": anomaly,
            "flagged": flagged, "steps_run": list(nc.steps_run)}


def trigger_match_scores(x: np.ndarray, mask: np.ndarray, pattern: np.ndarray) -> np.ndarray:
    """Mask-weighted mean absolute difference between each image (float, model layout, value
    range) and the reversed pattern: small = the image carries the reversed trigger."""
    m = np.asarray(mask, np.float64)
    diff = np.abs(np.asarray(x, np.float64) - np.asarray(pattern, np.float64)[None])
    return (diff * m[None]).reshape(len(x), -1).sum(1) / max(float(m.sum()), 1e-12)
