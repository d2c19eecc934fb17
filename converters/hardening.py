"""Hardening by adversarial fine-tuning, and robustness evaluation, with ART attacks.

Two methods, both fine-tuning the given module in place:

* ``"fgsm"`` -- fast adversarial training (Wong, Rice, Kolter, ICLR 2020, "Fast is
  better than free"): each batch is attacked by one FGSM step of size ``alpha``
  (default ``1.25 * eps``) from a uniformly random start in the eps-ball, then the
  model takes one optimiser step on the attacked batch.
* ``"pgd"`` -- PGD adversarial training (Madry et al., ICLR 2018): each batch is
  attacked by ``steps`` projected signed-gradient steps of size ``alpha`` (default
  ``2.5 * eps / steps``) from a random start.

The adversarial batches come from ART's :class:`ProjectedGradientDescent` (with
``max_iter=1`` and one random init it *is* FGSM with a random start and step
``alpha``). The training loop itself is a short one written here, not ART's
trainers, because they lack knobs this issue needs:

* ``AdversarialTrainerFBFPyTorch`` hard-codes its learning-rate schedule (a triangle
  from 0 up to 0.21 at ``nb_epochs * 2 // 5`` -- integer division, so with fewer
  than 3 epochs the peak sits at 0 -- and back to 0), writes that rate into the
  optimiser whatever its type (0.21 suits SGD on CIFAR-10, not Adam on MNIST), and
  hard-codes the step (``1.25 * eps``) and gradient clipping (0.5).
* ``AdversarialTrainerMadryPGD`` trains through ``AdversarialTrainer`` with
  ``classifier.fit(nb_epochs=1)`` per batch: no learning-rate schedule at all.

Here ``lr_schedule`` is ``"cyclic"`` (Wong et al.: linear 0 -> ``lr_max`` over the
first 2/5 of training, then linear back to 0, updated every batch, fractional
epochs), ``"constant"`` or ``"step"`` (``lr_max``, divided by 10 at 50% and 75%).

Robustness is measured with ART's PGD (default eps 0.3, step 2.5 * eps / 40, 40 iterations,
one random start) on the source PyTorch model: a white-box attack on the float
model, weaker than Wong et al.'s 50-step, 10-restart evaluation, so robust
accuracies here are upper bounds.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from dataclasses import asdict, dataclass

import numpy as np

from .data import Images, InputSpec
from .errors import CalibrationDataError, ConversionError

__all__ = ["HardeningConfig", "AttackConfig", "harden", "evaluate_robustness", "attack_images",
           "art_classifier", "normalized_module", "deterministic", "lr_at"]

METHODS = ("fgsm", "pgd")
SCHEDULES = ("cyclic", "constant", "step")
OPTIMIZERS = ("adam", "sgd")


@dataclass(frozen=True)
class HardeningConfig:
    """Adversarial fine-tuning parameters; eps and alpha are in the input's value range."""

    method: str = "fgsm"
    eps: float = 0.3
    alpha: float | None = None  # fgsm: 1.25 * eps; pgd: 2.5 * eps / steps
    steps: int | None = None  # pgd iterations per batch (default 10); fgsm: 1
    epochs: int = 10
    lr_max: float = 5e-3
    lr_schedule: str = "cyclic"
    optimizer: str = "adam"
    batch_size: int = 100
    momentum: float = 0.9  # sgd only
    weight_decay: float = 0.0

    def __post_init__(self):
        if self.method not in METHODS:
            raise ConversionError(f"unknown hardening method {self.method!r}; choose one of {METHODS}")
        if self.lr_schedule not in SCHEDULES:
            raise ConversionError(f"unknown lr_schedule {self.lr_schedule!r}; choose one of {SCHEDULES}")
        if self.optimizer not in OPTIMIZERS:
            raise ConversionError(f"unknown optimizer {self.optimizer!r}; choose one of {OPTIMIZERS}")
        if not (self.eps > 0 and self.epochs >= 1 and self.batch_size >= 1 and self.lr_max > 0):
            raise ConversionError("hardening needs eps > 0, epochs >= 1, batch_size >= 1 and lr_max > 0")
        if self.method == "fgsm" and self.steps not in (None, 1):
            raise ConversionError("fgsm takes one step; use method 'pgd' for several")

    @property
    def n_steps(self) -> int:
        return 1 if self.method == "fgsm" else (self.steps or 10)

    @property
    def step_size(self) -> float:
        if self.alpha is not None:
            return float(self.alpha)
        return 1.25 * self.eps if self.method == "fgsm" else 2.5 * self.eps / self.n_steps

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(alpha=self.step_size, steps=self.n_steps,
                 reference="Wong, Rice, Kolter 2020 (FGSM with random start)" if self.method == "fgsm"
                 else "Madry et al. 2018 (PGD adversarial training)")
        return d


@dataclass(frozen=True)
class AttackConfig:
    """A white-box L-inf PGD evaluation (ART ProjectedGradientDescent); eps in the input's
    value range; ``step`` None: relative to eps, ``2.5 * eps / steps`` (Madry et al.)."""

    eps: float = 0.3
    step: float | None = None
    steps: int = 40
    restarts: int = 1
    batch_size: int = 250

    @property
    def step_size(self) -> float:
        return float(self.step) if self.step is not None else 2.5 * self.eps / self.steps

    def to_dict(self) -> dict:
        return {"attack": "PGD (ART ProjectedGradientDescent, L-inf, random start)", **asdict(self),
                "step": self.step_size}


def lr_at(t: float, cfg: HardeningConfig) -> float:
    """Learning rate at fractional epoch ``t`` (0..epochs)."""
    e = cfg.epochs
    if cfg.lr_schedule == "cyclic":
        return float(np.interp(t, [0.0, e * 2 / 5, e], [0.0, cfg.lr_max, 0.0]))
    if cfg.lr_schedule == "step":
        return cfg.lr_max * (0.1 if t >= 0.5 * e else 1.0) * (0.1 if t >= 0.75 * e else 1.0)
    return cfg.lr_max


@contextlib.contextmanager
def deterministic(seed: int, threads: int | None = 1):
    """Seed python, numpy (global: ART draws its random starts from it) and torch; make
    torch deterministic and (by default) single-threaded; restore the torch settings after."""
    import torch

    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det)


def normalized_module(module, spec: InputSpec):
    """``module`` behind its input normalisation: the returned torch module takes inputs in
    the value range (what attacks perturb) and feeds ``(x - mean) / std`` to ``module``."""
    import torch
    from torch import nn

    shape = (1, -1, 1, 1) if spec.layout == "NCHW" else (1, 1, 1, -1)

    class Normalized(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = module
            self.register_buffer("mean", torch.tensor(spec.mean, dtype=torch.float32).reshape(shape))
            self.register_buffer("std", torch.tensor(spec.std, dtype=torch.float32).reshape(shape))

        def forward(self, x):
            return self.inner((x - self.mean) / self.std)

    return Normalized()


def art_classifier(module, spec: InputSpec, optimizer=None):
    """An ART PyTorchClassifier over ``module`` taking inputs in the value range (normalisation inside)."""
    from art.estimators.classification import PyTorchClassifier
    from torch import nn

    wrapped = normalized_module(module, spec)
    return PyTorchClassifier(
        model=wrapped, loss=nn.CrossEntropyLoss(), optimizer=optimizer, input_shape=tuple(spec.shape),
        nb_classes=spec.num_classes, clip_values=(float(spec.range[0]), float(spec.range[1])),
        channels_first=spec.layout == "NCHW", device_type="cpu"), wrapped


def _pgd(classifier, eps, step, steps, restarts, batch_size):
    from art.attacks.evasion import ProjectedGradientDescent

    return ProjectedGradientDescent(classifier, norm=np.inf, eps=float(eps), eps_step=float(step),
                                    max_iter=int(steps), num_random_init=int(restarts), batch_size=int(batch_size),
                                    verbose=False)


def attack_images(module, spec: InputSpec, data: Images, kind: str, *, eps: float = 0.3,
                  config: AttackConfig | None = None, seed: int = 0, threads: int | None = None) -> np.ndarray:
    """Adversarial versions of ``data`` against the PyTorch ``module`` (white box), as
    uint8 NHWC images rounded to the nearest pixel value and kept inside the eps-ball.

    ``kind``: ``"fgsm"`` (ART FastGradientMethod, one step of eps, no random start) or
    ``"pgd"`` (ART ProjectedGradientDescent with ``config``)."""
    if data.y is None:
        raise CalibrationDataError(f"{data.name}: attacks need labels")
    clf, _ = art_classifier(module, spec)
    x = spec.to_range(data.x)
    with deterministic(seed, threads):
        module.eval()
        if kind == "fgsm":
            from art.attacks.evasion import FastGradientMethod

            atk = FastGradientMethod(clf, norm=np.inf, eps=float(eps), batch_size=500)
        elif kind == "pgd":
            c = config or AttackConfig(eps=eps)
            atk = _pgd(clf, c.eps, c.step_size, c.steps, c.restarts, c.batch_size)
            eps = c.eps
        else:
            raise ConversionError(f"unknown attack {kind!r}; use 'fgsm' or 'pgd'")
        adv = atk.generate(x.astype(np.float32), y=data.y)
    return spec.to_images(adv, eps=eps, reference=data.x)


def _accuracy(module, spec, x_range: np.ndarray, y: np.ndarray) -> float:
    from .source import torch_forward

    return float(np.mean(torch_forward(module, spec.normalize(x_range)).argmax(1) == y))


def evaluate_robustness(module, spec: InputSpec, data: Images, config: AttackConfig | None = None, *,
                        seed: int = 0, threads: int | None = None, return_adversarial: bool = False):
    """Clean and PGD accuracy of the PyTorch ``module`` on ``data`` (labels needed).

    PGD accuracy is measured on the adversarial images rounded to uint8 (what a
    device would receive). Returns a dict (and the uint8 adversarial images if asked)."""
    config = config or AttackConfig()
    if data.y is None:
        raise CalibrationDataError(f"{data.name}: robustness evaluation needs labels")
    t0 = time.perf_counter()
    adv = attack_images(module, spec, data, "pgd", config=config, seed=seed, threads=threads)
    result = {
        "n": len(data),
        "data_sha256": data.sha256,
        "clean_accuracy": _accuracy(module, spec, spec.to_range(data.x), data.y),
        "pgd_accuracy": _accuracy(module, spec, spec.to_range(adv), data.y),
        "attack": config.to_dict(),
        "seconds": time.perf_counter() - t0,
    }
    return (result, adv) if return_adversarial else result


def harden(module, spec: InputSpec, train: Images, config: HardeningConfig | None = None, *,
           seed: int = 0, threads: int | None = 1, progress: bool = True) -> dict:
    """Adversarially fine-tune ``module`` in place on ``train`` (labels needed); returns the
    training history (per epoch: learning rate at its end, adversarial loss and accuracy)."""
    import torch
    from torch import nn
    from tqdm.auto import tqdm

    config = config or HardeningConfig()
    if train.y is None:
        raise CalibrationDataError(f"{train.name}: hardening needs labelled training data")
    if config.eps >= spec.range[1]:
        raise ConversionError(f"eps {config.eps} is not below the input range's top {spec.range[1]}")
    x_all = spec.to_range(train.x)
    y_all = train.y
    n = len(x_all)
    nb = math.ceil(n / config.batch_size)
    history = []
    t0 = time.perf_counter()
    with deterministic(seed, threads):
        params = [p for p in module.parameters() if p.requires_grad]
        if config.optimizer == "adam":
            opt = torch.optim.Adam(params, lr=config.lr_max, weight_decay=config.weight_decay)
        else:
            opt = torch.optim.SGD(params, lr=config.lr_max, momentum=config.momentum,
                                  weight_decay=config.weight_decay)
        clf, wrapped = art_classifier(module, spec)
        attack = _pgd(clf, config.eps, config.step_size, config.n_steps, 1, config.batch_size)
        loss_fn = nn.CrossEntropyLoss()
        rng = np.random.default_rng(seed)
        bar = tqdm(range(config.epochs), desc=f"hardening ({config.method}, eps {config.eps:g})",
                   disable=not progress, unit="epoch", leave=False)
        for epoch in bar:
            perm = rng.permutation(n)
            tot_loss = tot_correct = 0.0
            lr = 0.0
            for b in range(nb):
                idx = perm[b * config.batch_size:(b + 1) * config.batch_size]
                xb, yb = x_all[idx], y_all[idx]
                module.eval()
                x_adv = attack.generate(xb, y=yb)  # ART: random start + signed-gradient step(s), projected
                lr = lr_at(epoch + (b + 1) / nb, config)
                for g in opt.param_groups:
                    g["lr"] = lr
                module.train()
                opt.zero_grad(set_to_none=True)
                out = wrapped(torch.from_numpy(np.ascontiguousarray(x_adv, np.float32)))
                target = torch.from_numpy(yb)
                loss = loss_fn(out, target)
                loss.backward()
                opt.step()
                tot_loss += float(loss.detach()) * len(idx)
                tot_correct += float((out.argmax(1) == target).sum())
            module.eval()
            row = {"epoch": epoch + 1, "lr": lr, "adv_loss": tot_loss / n, "adv_accuracy": tot_correct / n}
            history.append(row)
            bar.set_postfix(loss=f"{row['adv_loss']:.3f}", adv_acc=f"{row['adv_accuracy']:.3f}")
        bar.close()
    module.eval()
    return {"config": config.to_dict(), "history": history, "seconds": time.perf_counter() - t0,
            "train_n": n, "train_data_sha256": train.sha256}


def train_clean(module, spec: InputSpec, train: Images, *, epochs: int = 6, lr_max: float = 3e-3,
                batch_size: int = 64, seed: int = 0, threads: int | None = 1, progress: bool = True) -> dict:
    """Plain (non-adversarial) training with Adam and the cyclic schedule: how the
    embedded MNIST job makes its source model before hardening."""
    import torch
    from torch import nn
    from tqdm.auto import tqdm

    if train.y is None:
        raise CalibrationDataError(f"{train.name}: training needs labels")
    cfg = HardeningConfig(epochs=epochs, lr_max=lr_max, batch_size=batch_size)
    x_all = spec.model_input(train.x)
    y_all = train.y
    n = len(x_all)
    nb = math.ceil(n / batch_size)
    t0 = time.perf_counter()
    with deterministic(seed, threads):
        opt = torch.optim.Adam(module.parameters(), lr=lr_max)
        rng = np.random.default_rng(seed)
        loss_fn = nn.CrossEntropyLoss()
        module.train()
        for epoch in tqdm(range(epochs), desc="training (clean)", disable=not progress, unit="epoch", leave=False):
            perm = rng.permutation(n)
            for b in range(nb):
                idx = perm[b * batch_size:(b + 1) * batch_size]
                for g in opt.param_groups:
                    g["lr"] = lr_at(epoch + (b + 1) / nb, cfg)
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(module(torch.from_numpy(x_all[idx])), torch.from_numpy(y_all[idx]))
                loss.backward()
                opt.step()
    module.eval()
    return {"epochs": epochs, "lr_max": lr_max, "lr_schedule": "cyclic", "optimizer": "adam",
            "batch_size": batch_size, "seconds": time.perf_counter() - t0}
