"""Results of :meth:`edgeguard.guard.GuardedModel.predict`: :class:`Predictions` and :class:`Prediction`.

Both are views of one float32 buffer filled by the native kernels; fields are
computed on first access.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .squeeze import is_flagged

__all__ = ["Prediction", "Predictions"]


class Predictions(Sequence):
    """Results of one :meth:`GuardedModel.predict` call, as arrays over the batch.

    Indexing gives a :class:`Prediction`. Arrays: ``probabilities`` (N, classes)
    (the answer: softmax of the original input, or under the squeeze policy of
    the squeezed copies for flagged inputs), ``scores`` (N,), ``indices`` (N,),
    ``is_adversarial`` (N,) bool, ``squeezer_scores`` {name: (N,)} and
    ``squeezed_probabilities`` (S, N, classes). ``labels`` and ``answered_by``
    are lists; ``timings`` maps each stage (see :data:`STAGES`) and ``total``
    to the seconds spent on the whole call; ``threshold`` is the detector's
    (None without a calibrated detector). Scores are NaN when detection did
    not run (``detect=False`` or no squeezers); such inputs are never flagged.
    A NaN score from a detector that did run (non-finite model outputs) counts
    as flagged: the guard fails closed.

    Every field is a view of one buffer filled by the native kernels, made on
    first access: a field nobody reads costs nothing.
    """

    __slots__ = ("threshold", "stage_times", "_buf", "_n", "_s", "_k", "_off", "_labels", "_names", "_detected",
                 "_probs", "_scores", "_indices", "_flagged", "_answered_mask")

    def __init__(self, buf, n, s, k, names, labels, threshold, detected, times=None):
        # buf: float32 [(1 + s) * n * k probabilities: original rows, then each squeezer's | n scores | s * n
        # per-squeezer scores]
        self.threshold = threshold
        self._buf, self._n, self._s, self._k = buf, n, s, k
        self._off = (1 + s) * n * k
        self._labels = labels
        self._names = names
        self._detected = detected
        self.stage_times = times  # perf_counter stamps around the guard's stages (see timings)
        self._probs = self._scores = self._indices = self._flagged = self._answered_mask = None

    @property
    def probabilities(self) -> np.ndarray:
        v = self._probs
        if v is None:
            v = self._probs = self._buf[:self._n * self._k].reshape(self._n, self._k)
        return v

    @property
    def scores(self) -> np.ndarray:
        v = self._scores
        if v is None:
            v = self._scores = self._buf[self._off:self._off + self._n]
        return v

    @property
    def squeezed_probabilities(self) -> np.ndarray:
        n, k = self._n, self._k
        return self._buf[n * k:self._off].reshape(self._s, n, k)

    @property
    def squeezer_scores(self) -> dict:
        n, start = self._n, self._off + self._n
        return {name: self._buf[start + j * n:start + (j + 1) * n] for j, name in enumerate(self._names)}

    @property
    def indices(self) -> np.ndarray:
        v = self._indices
        if v is None:
            v = self._indices = self.probabilities.argmax(axis=1)
        return v

    @property
    def labels(self) -> list:
        labels = self._labels
        return [labels[i] for i in self.indices.tolist()]

    @property
    def is_adversarial(self) -> np.ndarray:
        v = self._flagged
        if v is None:
            if self._detected and self.threshold is not None:
                v = is_flagged(self.scores, self.threshold)
            else:
                v = np.zeros(self._n, bool)
            self._flagged = v
        return v

    @property
    def answered_by(self) -> list:
        mask = self._answered_mask
        if mask is None:
            return ["original"] * self._n
        return ["squeezed" if m else "original" for m in mask.tolist()]

    @property
    def timings(self) -> dict:
        t0, t1, t2, t3, t4, t5 = self.stage_times
        return {"preprocess": (t1 - t0) + (t3 - t2), "squeeze": t2 - t1, "model": t4 - t3, "detect": t5 - t4,
                "total": t5 - t0}

    @property
    def model_probabilities(self) -> np.ndarray:
        """(N, classes): the model's softmax on the original inputs, whatever the policy answered
        (what the monitor's reference statistics describe)."""
        return self._buf[:self._n * self._k].reshape(self._n, self._k)

    def first(self) -> tuple[int, float, float, bool]:
        """(index, confidence, score, is_adversarial) of input 0 from the model's own outputs, as
        Python scalars: the monitor's per-call fast path for single inputs."""
        k = self._k
        row = self._buf[:k]
        idx = int(row.argmax())
        score = float(self._buf[self._off])
        fl = self._flagged
        if fl is not None:
            flag = bool(fl[0])
        else:
            flag = bool(self._detected and self.threshold is not None and is_flagged(score, self.threshold))
        return idx, float(row[idx]), score, flag

    def answer_from_squeezed(self, flagged: np.ndarray) -> None:
        """The squeeze policy: answer the `flagged` inputs with the mean softmax of their squeezed copies."""
        final = self.probabilities.copy()
        final[flagged] = self.squeezed_probabilities[:, flagged].mean(axis=0)
        self._probs = final
        self._indices = None
        self._answered_mask = flagged

    # sequence protocol
    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [Prediction(self, j) for j in range(*i.indices(self._n))]
        n = self._n
        i = int(i)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} predictions")
        return Prediction(self, i % n)

    def to_dicts(self) -> list[dict]:
        """One JSON-ready dict per input (see :meth:`Prediction.to_dict`)."""
        return [p.to_dict() for p in self]

    def __repr__(self) -> str:
        return f"<Predictions n={self._n} flagged={int(np.count_nonzero(self.is_adversarial))}>"


class Prediction:
    """The result for one input: a view of one row of a :class:`Predictions`.

    Fields: ``label``, ``index`` (class index), ``confidence`` (its
    probability), ``probabilities`` (classes,), ``score`` (float; NaN if
    detection did not run), ``is_adversarial``, ``squeezer_scores``
    {name: float}, ``answered_by`` ("original" or "squeezed"), ``threshold``,
    and ``timings`` of the whole call (seconds). ``results`` is the
    :class:`Predictions` it belongs to.
    """

    __slots__ = ("results", "_i")

    def __init__(self, results: Predictions, i: int):
        self.results = results
        self._i = i

    @property
    def index(self) -> int:
        r = self.results
        if r._probs is None and r._indices is None:  # one row of the buffer: no 2-d view needed
            k = r._k
            return int(r._buf[self._i * k:(self._i + 1) * k].argmax())
        return int(r.indices[self._i])

    @property
    def label(self) -> str:
        return self.results._labels[self.index]

    @property
    def probabilities(self) -> np.ndarray:
        return self.results.probabilities[self._i]

    @property
    def confidence(self) -> float:
        """The probability of the predicted class."""
        return float(self.results.probabilities[self._i, self.index])

    @property
    def score(self) -> float:
        r = self.results
        return float(r._buf[r._off + self._i])

    @property
    def is_adversarial(self) -> bool:
        r = self.results
        if r._flagged is None:
            if not (r._detected and r.threshold is not None):
                return False
            return is_flagged(float(r._buf[r._off + self._i]), r.threshold)
        return bool(r._flagged[self._i])

    @property
    def squeezer_scores(self) -> dict:
        r, i = self.results, self._i
        start, n = r._off + r._n, r._n
        return {name: float(r._buf[start + j * n + i]) for j, name in enumerate(r._names)}

    @property
    def answered_by(self) -> str:
        mask = self.results._answered_mask
        return "squeezed" if mask is not None and mask[self._i] else "original"

    @property
    def threshold(self) -> float | None:
        return self.results.threshold

    @property
    def timings(self) -> dict:
        return self.results.timings

    def to_dict(self) -> dict:
        """JSON-ready: label, index, confidence, score (None if NaN), is_adversarial,
        squeezer_scores, answered_by, threshold, probabilities (list)."""
        score = self.score
        return {"label": self.label, "index": self.index, "confidence": self.confidence,
                "score": None if math.isnan(score) else score, "is_adversarial": self.is_adversarial,
                "squeezer_scores": self.squeezer_scores, "answered_by": self.answered_by,
                "threshold": self.threshold, "probabilities": self.probabilities.tolist()}

    def __repr__(self) -> str:
        return (f"Prediction(label={self.label!r}, index={self.index}, confidence={self.confidence:.4f}, "
                f"score={self.score:.4f}, is_adversarial={self.is_adversarial}, answered_by={self.answered_by!r})")
