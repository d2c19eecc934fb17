"""An input-space occlusion scan of labelled training images (after SentiNet, Chou et al. 2020):
a stage of the poisoning scan that does not need the poison to form its own cluster.

A poisoned training image carries a small trigger and the attacker's label t; the backdoored
source model predicts t *because of* the trigger. Hide the trigger region and the model falls
back to what the image shows (the source class): the labelled class's probability collapses and
another class wins. A clean image that the model gets right confidently rarely hinges on one
small region in the same way. So, for every training image, an occluder of ``size`` x ``size``
pixels (filled with a neutral value: the image's own per-channel median, MNIST's background, by
default) slides over the image with ``stride``; all occluded copies of a batch of images go
through the model in one forward pass, and the scan keeps per image

* ``flip_drop``: the largest drop of the labelled class's probability among the positions where
  the prediction moves to another class (0 when no position moves it);
* ``new_class``: the class that wins at that position, and the position itself.

A *candidate* is a confident flip: the label had probability >= ``min_confidence`` unoccluded
and ``flip_drop`` >= ``flip_drop_threshold``. On the small MNIST CNN measured here one hidden
6x6 region flips a third of the clean training digits too (nearly every 9: hide part of its
loop and it reads 4 or 7), so a flip alone says little. What sets poison apart is that a patch
trigger is *the same pixels at the same place* on every poisoned image: a candidate is flagged
when at least ``min_group`` candidates of its class flip at the same position to the same class
and their pixels under the occluder match (mean absolute difference under ``match_distance`` of
the value range). The classes with flagged images are the likely backdoor targets.

A poisoned image whose *largest* flip sits at a neighbouring occluder position (the occluder
shifted by one stride still covers most of the trigger) falls into a shifted group that may be
too small. So, with ``expand_groups`` (the default), each flagged group's pixels (the median crop
of its members) are matched against every image *labelled as the group's class* at the group's
own position, candidate or not: an image whose crop there lies within ``match_distance`` is
flagged too (counted apart, as "expanded"). It carries the same pixels where the group's trigger
is, so it carries the trigger.

:func:`paste_test` is SentiNet's own second test (paste the region on images of the class it
moved to and count how many now read as the label); it is reported for the flagged images as
evidence, but it is not part of the rule: on the development cases clean 9s "fool" as well as
the trigger does (a piece of loop pasted on a 4 makes a 9).

The settings (the defaults of :class:`OcclusionScanConfig`) were chosen on the planted-trigger
experiment's development cases and its unpoisoned control only
(``poison_experiment.DEV_CASES``), then frozen; docs/data-governance.md reports them on cases
drawn afterwards and on a trigger of another size and place. IBM ART has no occlusion/SentiNet
detector (its STRIP is a test-time input filter), so this is hand-written on PyTorch.

What it cannot catch: a trigger larger than the occluder (hiding part of it need not break
it), blended or image-wide triggers (no small region carries them), triggers that differ from
image to image (position or pixels: no group of matching regions), fewer than ``min_group``
poisoned images in a class, and clean-label attacks (the poisoned images keep their true label,
so hiding the trigger does not move the prediction away from it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .errors import ConversionError

__all__ = ["OcclusionScanConfig", "as_nchw", "occlusion_scores", "paste_test", "flag_occlusion", "FILLS"]

FILLS = ("median", "mean")


@dataclass(frozen=True)
class OcclusionScanConfig:
    """Occluder and flag rule; chosen on the development cases only (module docstring)."""

    size: int = 6  # occluder side in pixels
    stride: int = 3  # with size 6, some position covers any square up to 6 - 3 + 1 = 4 px whole (far border included)
    fill: str = "median"  # "median": each image's own per-channel median; "mean": the scanned set's mean
    min_confidence: float = 0.5  # candidate: the label won with at least this probability unoccluded ...
    flip_drop_threshold: float = 0.5  # ... and one occluder position drops it this much while another class wins
    match_distance: float = 0.05  # "the same pixels": mean absolute difference, as a share of the value range
    min_group: int = 5  # flagged: this many candidates of a class share position, new class and pixels
    expand_groups: bool = True  # also flag the class's images whose pixels at a group's position match it
    paste_recipients: int = 32  # paste_test: images of the class it moved to that a region is pasted on
    batch_images: int = 16  # images per forward pass (times the number of positions)

    def __post_init__(self):
        if self.fill not in FILLS:
            raise ConversionError(f"occlusion fill must be one of {FILLS}, got {self.fill!r}")
        if not (self.size >= 1 and self.stride >= 1 and self.batch_images >= 1 and self.min_group >= 2
                and self.paste_recipients >= 1 and 0 <= self.min_confidence < 1
                and 0 < self.flip_drop_threshold <= 1 and 0 < self.match_distance < 1):
            raise ConversionError("occlusion scan needs size, stride, batch_images, paste_recipients >= 1, "
                                  "min_group >= 2, 0 <= min_confidence < 1, 0 < flip_drop_threshold <= 1, "
                                  "0 < match_distance < 1")

    def to_dict(self) -> dict:
        return asdict(self)


def _positions(extent: int, size: int, stride: int) -> list:
    if size > extent:
        raise ConversionError(f"occluder of {size} px does not fit an image of {extent} px")
    starts = list(range(0, extent - size + 1, stride))
    if starts[-1] != extent - size:  # cover the far border too (where corner triggers sit)
        starts.append(extent - size)
    return starts


def as_nchw(model, x: np.ndarray, layout: str):
    """(``model`` as a callable on NCHW batches, ``x`` as NCHW): the scan works in NCHW, whatever
    the model's layout; this is the one place that converts."""
    if layout not in ("NCHW", "NHWC"):
        raise ConversionError(f"layout must be NCHW or NHWC, got {layout!r}")
    if layout == "NCHW":
        return model, x
    return (lambda batch: model(batch.permute(0, 2, 3, 1))), np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2))


def occlusion_scores(model, x: np.ndarray, y: np.ndarray, cfg: OcclusionScanConfig) -> dict:
    """Occlude every image of ``x`` (float NCHW, in the model's value range; :func:`as_nchw`) at
    every position; ``model`` maps such a batch to logits (e.g. ``hardening.normalized_module``) and is
    only read. Returns per image: ``confidence`` (the label's unoccluded probability),
    ``flip_drop``, ``new_class`` (-1 when no position moves the prediction), ``position``
    (row, column of the occluder's top-left corner at the largest flipping drop)."""
    import torch

    xt = torch.from_numpy(np.ascontiguousarray(x, np.float32))
    n, _, h, w = xt.shape
    y = np.asarray(y, np.int64)
    if len(y) != n:
        raise ConversionError(f"{n} images but {len(y)} labels")
    rows, cols = _positions(h, cfg.size, cfg.stride), _positions(w, cfg.size, cfg.stride)
    grid = [(r, c) for r in rows for c in cols]
    masks = torch.zeros(len(grid), 1, h, w)
    for j, (r, c) in enumerate(grid):
        masks[j, :, r:r + cfg.size, c:c + cfg.size] = 1.0
    dataset_mean = xt.mean(dim=(0, 2, 3)).reshape(1, -1, 1, 1)
    confidence = np.zeros(n, np.float32)
    flip_drop = np.zeros(n, np.float32)
    new_class = np.full(n, -1, np.int64)
    position = np.full((n, 2), -1, np.int64)

    def forward(batch):
        return torch.softmax(model(batch), dim=1)

    with torch.no_grad():
        for start in range(0, n, cfg.batch_images):
            xb = xt[start:start + cfg.batch_images]
            yb = torch.from_numpy(y[start:start + cfg.batch_images])
            b = len(xb)
            fill = (xb.flatten(2).median(dim=2).values.reshape(b, -1, 1, 1) if cfg.fill == "median"
                    else dataset_mean.expand(b, -1, 1, 1))
            occluded = xb[:, None] * (1 - masks[None]) + fill[:, None] * masks[None]  # (b, P, C, H, W)
            p0 = forward(xb)
            p = forward(occluded.reshape(b * len(grid), *xb.shape[1:])).reshape(b, len(grid), -1)
            p0_label = p0.gather(1, yb[:, None])[:, 0]
            p_label = p.gather(2, yb[:, None, None].expand(b, len(grid), 1))[..., 0]
            winner = p.argmax(dim=2)
            drop = torch.where(winner != yb[:, None], p0_label[:, None] - p_label, torch.full_like(p_label, -1.0))
            best_drop, best_j = drop.max(dim=1)
            moved = best_drop > -1.0
            confidence[start:start + b] = p0_label.numpy()
            flip_drop[start:start + b] = torch.where(moved, best_drop, torch.zeros_like(best_drop)).numpy()
            won = winner.gather(1, best_j[:, None])[:, 0]
            new_class[start:start + b] = torch.where(moved, won, torch.full_like(won, -1)).numpy()
            position[start:start + b] = np.where(moved.numpy()[:, None], np.asarray(grid)[best_j.numpy()], -1)
    return {"confidence": confidence, "flip_drop": flip_drop, "new_class": new_class, "position": position,
            "n_positions": len(grid)}


def flag_occlusion(x: np.ndarray, y: np.ndarray, scores: dict, num_classes: int, cfg: OcclusionScanConfig,
                   value_range=(0.0, 1.0)):
    """(flagged mask, per-class rows, suspect class indices, expanded mask) by the rule of the module
    docstring: a candidate is a confident flip; it is flagged when at least ``cfg.min_group``
    candidates of its class (itself included) flip at the same position to the same class with
    (nearly) the same pixels there (mean absolute difference under ``cfg.match_distance`` of the
    value range). With ``cfg.expand_groups``, every image of a flagged group's class whose pixels at
    the group's position lie that close to the group's median crop is flagged too; the expanded mask
    holds those that were not group members (they are in the flagged mask as well)."""
    y = np.asarray(y, np.int64)
    width = float(value_range[1] - value_range[0]) or 1.0
    s = cfg.size

    def crops(idx, r, c):
        return np.asarray(x[idx][:, :, r:r + s, c:c + s], np.float32).reshape(len(idx), -1) / width

    confident_flip = (scores["confidence"] >= cfg.min_confidence) & (scores["flip_drop"] >= cfg.flip_drop_threshold)
    cand = np.flatnonzero(confident_flip & (scores["new_class"] >= 0))
    pos, new_class = scores["position"], scores["new_class"]
    flagged = np.zeros(len(y), bool)
    groups = []  # (label, row, column, new class, flagged members)
    for key in sorted({(int(y[i]), int(pos[i, 0]), int(pos[i, 1]), int(new_class[i])) for i in cand}):
        label, r, c, k = key
        members = cand[(y[cand] == label) & (pos[cand, 0] == r) & (pos[cand, 1] == c) & (new_class[cand] == k)]
        if len(members) < cfg.min_group:
            continue
        m = crops(members, r, c)
        close = np.abs(m[:, None, :] - m[None, :, :]).mean(axis=2) < cfg.match_distance
        kept = members[close.sum(axis=1) >= cfg.min_group]
        if len(kept):
            flagged[kept] = True
            groups.append((label, r, c, k, kept))
    expanded = np.zeros(len(y), bool)
    if cfg.expand_groups:
        for label, r, c, _, kept in groups:
            template = np.median(crops(kept, r, c), axis=0)
            same_class = np.flatnonzero(y == label)
            match = same_class[np.abs(crops(same_class, r, c) - template).mean(axis=1) < cfg.match_distance]
            expanded[match[~flagged[match]]] = True
        flagged |= expanded
    rows, suspect = [], []
    for k in range(num_classes):
        members = flagged & (y == k)
        n_flag = int(members.sum())
        in_groups = [g for g in groups if g[0] == k]
        moved = np.zeros(num_classes, np.int64)
        for g in in_groups:
            moved[g[3]] += len(g[4])
        rows.append({"class": k, "n": int((y == k).sum()), "n_candidates": int((y[cand] == k).sum()),
                     "n_flagged": n_flag, "n_expanded": int((expanded & (y == k)).sum()),
                     "moved_to": int(np.argmax(moved)) if n_flag else None,
                     "positions": sorted({(g[1], g[2]) for g in in_groups}), "suspect": n_flag > 0})
        rows[-1]["positions"] = [list(p) for p in rows[-1]["positions"]]
        if n_flag:
            suspect.append(k)
    return flagged, rows, suspect, expanded


def paste_test(model, x: np.ndarray, y: np.ndarray, scores: dict, candidates: np.ndarray,
               cfg: OcclusionScanConfig, seed: int = 0) -> np.ndarray:
    """SentiNet's second test: copy the region whose occlusion moved candidate i's prediction
    onto ``cfg.paste_recipients`` other training images labelled (and predicted as) the class it
    moved to, at the same place, and return per candidate the share of them the model then
    classifies as candidate i's label ("fooled"). A trigger carries its effect to other images
    of the source class; a piece of a clean digit seldom turns a whole other digit into its class.
    ``x`` as in :func:`occlusion_scores` (NCHW, value range); ``model`` maps it to logits."""
    import torch

    candidates = np.asarray(candidates, np.int64)
    fooled = np.zeros(len(candidates), np.float32)
    if len(candidates) == 0:
        return fooled
    xt = torch.from_numpy(np.ascontiguousarray(x, np.float32))
    y = np.asarray(y, np.int64)
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        predicted = np.concatenate([model(xt[i:i + 512]).argmax(dim=1).numpy() for i in range(0, len(xt), 512)])
    pool = {}
    excluded = np.zeros(len(y), bool)
    excluded[candidates] = True
    for i, cand in enumerate(candidates):
        k = int(scores["new_class"][cand])
        if k < 0:
            continue
        if k not in pool:
            eligible = np.flatnonzero((y == k) & (predicted == k) & ~excluded)
            pool[k] = rng.choice(eligible, min(cfg.paste_recipients, len(eligible)), replace=False)
        recipients = pool[k]
        if len(recipients) == 0:
            continue
        r, c = (int(v) for v in scores["position"][cand])
        pasted = xt[recipients].clone()
        pasted[:, :, r:r + cfg.size, c:c + cfg.size] = xt[cand, :, r:r + cfg.size, c:c + cfg.size]
        with torch.no_grad():
            fooled[i] = float((model(pasted).argmax(dim=1) == int(y[cand])).float().mean())
    return fooled
