"""Drift statistics for on-device monitoring, in numpy and the standard library.

No scipy on the device: the Kolmogorov-Smirnov statistic and its asymptotic
p-value (the Kolmogorov distribution's series), the chi-squared survival
function (regularized upper incomplete gamma: a series below ``a + 1``, Lentz's
continued fraction above), the binomial tail and the population stability index
are implemented here and checked against scipy in ``tests/test_monitor.py``.

The reference side of every test comes from a bundle's ``reference_stats``
(docs/bundle-format.md): fixed-edge histograms, quantiles and class counts of
``m`` legitimate calibration images. A window of ``n`` device observations is
compared with them as a *two-sample* problem (the reference is itself a sample
of size ``m``), and where the reference is known only on a grid (histogram
edges, stored quantiles) the KS statistic is taken on that grid only: the
grouped statistic, whose continuous-distribution p-value is conservative.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["kolmogorov_sf", "ks_pvalue", "ks_2samp_statistic", "ks_grouped", "reference_knots", "chi2_sf",
           "gammaincc", "chi2_homogeneity", "binom_sf", "psi"]

_SQRT_2PI = math.sqrt(2.0 * math.pi)
_PI2_8 = math.pi ** 2 / 8.0


# ----------------------------------------------------------------------------- Kolmogorov-Smirnov

def kolmogorov_sf(x: float) -> float:
    """P(K > x) for the Kolmogorov distribution K = sup |Brownian bridge| (scipy.special.kolmogorov).

    Two series, each used where it converges in a few terms:
    ``x >= 1.18``: ``2 * sum_{k>=1} (-1)^(k-1) exp(-2 k^2 x^2)``;
    ``x < 1.18``: ``1 - sqrt(2 pi) / x * sum_{k>=1} exp(-(2k-1)^2 pi^2 / (8 x^2))``.
    """
    x = float(x)
    if not x > 0:  # also NaN -> 1
        return 1.0
    if x < 1.18:
        t = _PI2_8 / (x * x)
        s = 0.0
        for k in range(1, 12):
            term = math.exp(-(2 * k - 1) ** 2 * t)
            s += term
            if term < 1e-17 * s:
                break
        return min(1.0, max(0.0, 1.0 - _SQRT_2PI / x * s))
    q = math.exp(-2.0 * x * x)
    s, sign = 0.0, 1.0
    for k in range(1, 101):
        term = q ** (k * k)
        s += sign * term
        if term < 1e-17 * abs(s) or term == 0.0:
            break
        sign = -sign
    return min(1.0, max(0.0, 2.0 * s))


def ks_pvalue(d: float, n: int, m: int | None = None) -> float:
    """Asymptotic p-value of a KS statistic ``d``: one sample of size ``n`` (``m`` None) or two samples.

    Uses the effective size ``en = n m / (n + m)`` and Stephens' small-sample
    correction ``lambda = (sqrt(en) + 0.12 + 0.11 / sqrt(en)) d`` (Numerical
    Recipes ``probks``), then :func:`kolmogorov_sf`.
    """
    if n <= 0 or (m is not None and m <= 0):
        return 1.0
    en = float(n) if m is None else n * m / (n + m)
    s = math.sqrt(en)
    return kolmogorov_sf((s + 0.12 + 0.11 / s) * float(d))


def ks_2samp_statistic(a, b) -> float:
    """Two-sample KS statistic sup |F_a - F_b| of two raw samples (scipy.stats.ks_2samp's statistic)."""
    a = np.sort(np.asarray(a, np.float64).ravel())
    b = np.sort(np.asarray(b, np.float64).ravel())
    if not len(a) or not len(b):
        return 0.0
    grid = np.concatenate([a, b])
    fa = np.searchsorted(a, grid, side="right") / len(a)
    fb = np.searchsorted(b, grid, side="right") / len(b)
    return float(np.max(np.abs(fa - fb)))


def reference_knots(stat: dict, lo: float | None = None, hi: float | None = None):
    """The reference CDF where ``reference_stats`` knows it: ``(x, F, side)`` arrays.

    ``stat`` is a reference entry with ``histogram`` (edges, counts; bins
    ``[e_i, e_i+1)``, the last one closed) and optionally ``quantiles``. A
    histogram edge ``e`` gives ``F = P(X < e)`` (side ``"left"``; the top edge
    ``P(X <= e) = 1``, side ``"right"``), a stored quantile ``q`` at value ``v``
    gives ``F = P(X <= v) = q`` (side ``"right"``, up to numpy's interpolation,
    at most ``1/m``). Knots are sorted by ``x``; ``F`` is made non-decreasing.
    """
    h = stat["histogram"]
    edges = np.asarray(h["edges"], np.float64)
    counts = np.asarray(h["counts"], np.float64)
    total = counts.sum()
    if total <= 0:
        raise ValueError("empty reference histogram")
    cum = np.concatenate([[0.0], np.cumsum(counts) / total])
    xs, fs, sides = list(edges[1:-1]), list(cum[1:-1]), [0] * (len(edges) - 2)
    xs.append(edges[-1])
    fs.append(1.0)
    sides.append(1)
    for q, v in (stat.get("quantiles") or {}).items():
        q, v = float(q), float(v)
        if math.isfinite(v) and 0.0 < q < 1.0:
            xs.append(v)
            fs.append(q)
            sides.append(1)
    x = np.asarray(xs, np.float64)
    f = np.asarray(fs, np.float64)
    side = np.asarray(sides, np.int8)
    order = np.lexsort((side, x))  # by x, and at equal x "left" (<) before "right" (<=)
    x, f, side = x[order], np.maximum.accumulate(f[order]), side[order]
    keep = np.ones(len(x), bool)
    if lo is not None:
        keep &= x >= lo
    if hi is not None:
        keep &= x <= hi
    return x[keep], f[keep], side[keep]


def ks_grouped(sample, knots, m: int | None) -> tuple[float, float]:
    """KS test of a sample against a reference CDF known at ``knots`` (from :func:`reference_knots`).

    The statistic is ``max_k |F_sample(x_k) - F_ref(x_k)|`` over the knots only
    (``F_sample(x) = P(X < x)`` or ``P(X <= x)`` per the knot's side): the
    grouped KS statistic, never larger than the continuous one, so the
    asymptotic p-value (:func:`ks_pvalue` with the reference size ``m``, two
    samples) is conservative. When both samples live on the knots (discrete
    data on that grid), it equals the exact two-sample statistic.
    Returns ``(D, p)``; ``(0, 1)`` for an empty sample.
    """
    s = np.sort(np.asarray(sample, np.float64).ravel())
    n = len(s)
    if n == 0:
        return 0.0, 1.0
    x, f, side = knots
    left = np.searchsorted(s, x, side="left")
    right = np.searchsorted(s, x, side="right")
    fs = np.where(side == 1, right, left) / n
    d = float(np.max(np.abs(fs - f))) if len(x) else 0.0
    return d, ks_pvalue(d, n, m)


# ----------------------------------------------------------------------------- chi-squared

def gammaincc(a: float, x: float) -> float:
    """Regularized upper incomplete gamma Q(a, x) = Gamma(a, x) / Gamma(a) (scipy.special.gammaincc).

    For ``x < a + 1`` the series of P(a, x) (Q = 1 - P); otherwise the
    continued fraction of Q(a, x), evaluated with the modified Lentz method
    (Numerical Recipes ``gser`` / ``gcf``). Relative accuracy ~1e-14.
    """
    if a <= 0:
        raise ValueError("a must be > 0")
    if x <= 0:
        return 1.0
    if math.isinf(x):
        return 0.0
    log_pre = -x + a * math.log(x) - math.lgamma(a)
    if x < a + 1.0:
        ap, total, delta = a, 1.0 / a, 1.0 / a
        for _ in range(10_000):
            ap += 1.0
            delta *= x / ap
            total += delta
            if abs(delta) < abs(total) * 1e-16:
                break
        return max(0.0, 1.0 - total * math.exp(log_pre))
    tiny = 1e-300
    b = x + 1.0 - a
    c = 1.0 / tiny
    d = 1.0 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        if abs(d) < tiny:
            d = tiny
        c = b + an / c
        if abs(c) < tiny:
            c = tiny
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-16:
            break
    return min(1.0, math.exp(log_pre) * h)


def chi2_sf(x: float, df: float) -> float:
    """P(X > x) for X ~ chi-squared with ``df`` degrees of freedom (scipy.stats.chi2.sf)."""
    if df <= 0:
        return 1.0
    return gammaincc(df / 2.0, max(float(x), 0.0) / 2.0)


def chi2_homogeneity(a, b, *, min_expected: float = 5.0, ordered: bool = False) -> tuple[float, int, float]:
    """Chi-squared test that two count vectors come from the same categorical distribution.

    The 2 x K contingency table (``a``: the device window, ``b``: the
    reference) without continuity correction, as
    ``scipy.stats.chi2_contingency(..., correction=False)``. Categories empty in
    both are dropped; categories whose smaller expected count is below
    ``min_expected`` are pooled (``ordered``: with their neighbour, for binned
    values; else all together into one "other" category) so the asymptotic
    distribution holds. Returns ``(statistic, dof, p)``; ``(0, 0, 1)`` when
    fewer than two categories remain.
    """
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError("count vectors differ in length")
    na, nb = a.sum(), b.sum()
    if na <= 0 or nb <= 0:
        return 0.0, 0, 1.0
    keep = (a + b) > 0
    a, b = a[keep], b[keep]
    frac_small = min(na, nb) / (na + nb)

    def small(ca, cb):
        return (ca + cb) * frac_small < min_expected

    if ordered:
        ra, rb, acc_a, acc_b = [], [], 0.0, 0.0
        for ca, cb in zip(a.tolist(), b.tolist()):
            acc_a += ca
            acc_b += cb
            if not small(acc_a, acc_b):
                ra.append(acc_a)
                rb.append(acc_b)
                acc_a = acc_b = 0.0
        if acc_a or acc_b:
            if ra:
                ra[-1] += acc_a
                rb[-1] += acc_b
            else:
                ra, rb = [acc_a], [acc_b]
        a, b = np.asarray(ra), np.asarray(rb)
    else:
        low = small(a, b)
        if low.any():
            pa, pb = a[low].sum(), b[low].sum()
            a, b = a[~low], b[~low]
            if pa or pb:
                a, b = np.append(a, pa), np.append(b, pb)
    k = len(a)
    if k < 2:
        return 0.0, 0, 1.0
    col = a + b
    n = na + nb
    ea, eb = col * (na / n), col * (nb / n)
    stat = float(np.sum((a - ea) ** 2 / ea) + np.sum((b - eb) ** 2 / eb))
    dof = k - 1
    return stat, dof, chi2_sf(stat, dof)


# ----------------------------------------------------------------------------- binomial, PSI

def binom_sf(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p) (scipy.stats.binom.sf(k - 1, n, p)), summed in log space."""
    k, n = int(k), int(n)
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p <= 0:
        return 0.0
    if p >= 1:
        return 1.0
    # log pmf(k), then the ratio pmf(j + 1) / pmf(j) = (n - j) / (j + 1) * p / (1 - p), accumulated
    log_k = (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * math.log(p)
             + (n - k) * math.log1p(-p))
    j = np.arange(k, n, dtype=np.float64)
    steps = np.log((n - j) / (j + 1)) + (math.log(p) - math.log1p(-p))
    logs = log_k + np.concatenate([[0.0], np.cumsum(steps)])
    top = logs.max()
    return float(min(1.0, math.exp(top) * np.exp(logs - top).sum()))


def psi(expected, actual, eps: float = 1e-4) -> float:
    """Population stability index ``sum (a_i - e_i) ln(a_i / e_i)`` over bins.

    ``expected`` (the reference) and ``actual`` (the window) are counts or
    fractions on the same bins; each is normalised to fractions, and fractions
    below ``eps`` are raised to ``eps`` (an empty bin would make the index
    infinite). Conventional reading: < 0.1 stable, 0.1-0.25 moderate shift,
    > 0.25 significant shift. PSI is an effect size: it does not grow with the
    sample size, unlike a test statistic.
    """
    e = np.asarray(expected, np.float64).ravel()
    a = np.asarray(actual, np.float64).ravel()
    if e.shape != a.shape:
        raise ValueError("bins differ in length")
    se, sa = e.sum(), a.sum()
    if se <= 0 or sa <= 0:
        return 0.0
    e = np.maximum(e / se, eps)
    a = np.maximum(a / sa, eps)
    return float(np.sum((a - e) * np.log(a / e)))


def autocorrelation_time(x, max_lag: int | None = None) -> float:
    """Integrated autocorrelation time ``tau = 1 + 2 sum_k rho_k`` of a series, summed over lags until
    the first non-positive pair sum ``rho_{2j-1} + rho_{2j}`` (Geyer's initial positive sequence), at
    most ``max_lag`` (default ``n // 4``). A series of ``n`` dependent values carries about as much
    information about its distribution as ``n / tau`` independent ones; ``tau`` is 1 for independent
    values (at least 1 here). A 2-D ``x`` (n, k) is a vector series (e.g. one-hot classes): its
    autocovariances are summed over the k columns."""
    v = np.asarray(x, np.float64)
    v = v.reshape(len(v), -1)
    n = len(v)
    if n < 8:
        return 1.0
    v = v - v.mean(axis=0)
    var = float(np.sum(v * v))
    if var <= 0:
        return float(n)  # constant: one value's worth of information
    lags = min(n // 4, max_lag or n)
    f = np.fft.rfft(v, 2 * n, axis=0)
    acf = np.fft.irfft(f * np.conj(f), axis=0)[:lags + 1].sum(axis=1) / var
    tau = 1.0
    for j in range(1, lags // 2 + 1):
        pair = acf[2 * j - 1] + acf[2 * j]
        if pair <= 0:
            break
        tau += 2.0 * pair
    return max(1.0, tau)
