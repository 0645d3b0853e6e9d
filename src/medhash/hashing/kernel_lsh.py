"""Kernel locality-sensitive binary codes (Raginsky & Lazebnik, NIPS 2009) and their expected Hamming distance.

A :class:`KernelLSH` turns feature vectors ``x`` in R^d into n-bit codes. Bit k of the code is::

    h_k(x) = 1/2 [1 + sign(cos(<w_k, x> + b_k) + t_k)],
    w_k ~ N(0, gamma I_d),  b_k ~ U[-pi, pi],  t_k ~ U[-1, 1],

with ``w, b, t`` drawn once, from the seed, and shared by every vector hashed with the fitted
hasher. The expected fraction of differing bits between ``x`` and ``y`` depends only on
``r = ||x - y||`` and is given by :func:`expected_hamming_fraction`.

Codes are packed as described in :mod:`medhash.hashing.codes`.
"""
from __future__ import annotations

import logging
import math

import numpy as np

from .base import MAX_BITS, Hasher, check_features, check_gamma, check_int

log = logging.getLogger(__name__)

__all__ = ["KernelLSH", "expected_hamming_fraction"]

_FORMAT_NAME = "medhash.hashing.KernelLSH"
# Elements of one (rows x n_bits) float64 work buffer in transform (32 MiB); rows per chunk follow.
_CHUNK_ELEMENTS = 1 << 22
# Elements of the blocks the elementwise steps of transform run on (256 KiB of float64: stays in cache).
_CACHE_ELEMENTS = 1 << 15
# Pair differences computed at once when gamma="auto" (elements of the (pairs, d) buffer).
_PAIR_CHUNK_ELEMENTS = 1 << 22
# Below this value of sqrt(gamma) * r, expected_hamming_fraction uses the Dawson-integral form.
_DAWSON_BELOW = 1.0
_TWO_PI = 2.0 * math.pi


class KernelLSH(Hasher):
    """Kernel LSH of Raginsky & Lazebnik (NIPS 2009) for the Gaussian kernel exp(-gamma r^2 / 2).

    Binary codes whose Hamming distances track the Euclidean distances of the feature vectors:
    random Fourier features ``cos(<w, x> + b)`` quantised to one bit each with a random threshold.

    Parameters
    ----------
    n_bits : int, default=256
        Code length, 1 to :data:`MAX_BITS`. Codes take ``ceil(n_bits / 8)`` bytes.
    gamma : float or "auto", default="auto"
        Kernel width: ``w ~ N(0, gamma I)``, kernel ``exp(-gamma r^2 / 2)``. ``"auto"`` sets
        ``gamma_ = 4 / median(||x_i - x_j||^2)`` over ``n_pairs`` random pairs of rows of the fit
        data (see Notes).
    seed : int, default=0
        Seed (>= 0) of every random draw. The same seed, ``n_bits`` and feature count give the same
        hash functions on any machine.
    n_pairs : int, default=2000
        Number of random pairs of rows used by ``gamma="auto"``.

    Attributes
    ----------
    gamma_ : float
        The kernel width used (``gamma``, or the value found by ``"auto"``).
    random_weights_ : ndarray of shape (n_bits, n_features_in_), float64
        The projections ``w_k``, one per row, drawn from ``N(0, gamma_ I)``.
    random_offset_ : ndarray of shape (n_bits,), float64
        The phases ``b_k``, from ``U[-pi, pi]``.
    threshold_ : ndarray of shape (n_bits,), float64
        The thresholds ``t_k``, from ``U[-1, 1]``.
    n_features_in_ : int
        Number of features seen in ``fit``; ``transform`` requires the same.

    Notes
    -----
    Bit k of the code of ``x`` is ``h_k(x) = 1/2 [1 + sign(cos(<w_k, x> + b_k) + t_k)]``, i.e. 1
    when ``cos(<w_k, x> + b_k) + t_k > 0`` [1]_. For two vectors at distance ``r`` the expected
    fraction of differing bits is :func:`expected_hamming_fraction` (Lemma 2.3 of [1]_): about
    ``0.254 sqrt(gamma) r`` for small ``r``, saturating at ``4 / pi^2 ~ 0.405`` once
    ``gamma r^2`` is large.

    Kernel convention: ``w ~ N(0, gamma I)`` is the Fourier transform of ``exp(-gamma r^2 / 2)``.
    scikit-learn's ``RBFSampler(gamma=g)`` uses the kernel ``exp(-g r^2)``, which is ``gamma = 2 g``
    here.

    ``gamma="auto"`` (the reference rule of the project): with ``rng = np.random.default_rng(seed)``
    and ``n`` rows, ``i = rng.integers(0, n, n_pairs)``, ``j = (i + rng.integers(1, n, n_pairs)) % n``
    (uniform over ordered pairs with ``i != j``), ``gamma_ = 4 / median(||X[i] - X[j]||^2)``. A
    typical random pair then has ``gamma r^2 = 4`` (expected fraction 0.30, near saturation) while
    near neighbours still fall on the steep part of the curve. A ``gamma`` far too large makes every
    pair look "far" (all distances near ``0.405 n_bits``, a flat Hamming-vs-Euclidean scatter); far
    too small, and all distances are near 0 and ties swamp the ranking.

    The hash functions are drawn from three streams that depend only on ``seed``:
    ``random_weights_`` is ``default_rng([seed, 1]).standard_normal((n_bits, d)) * sqrt(gamma_)``,
    ``random_offset_`` and ``threshold_`` come from ``default_rng([seed, 2])`` and
    ``default_rng([seed, 3])``. Hence the first k bits of an n-bit hasher equal a k-bit hasher with
    the same seed and data, and ``gamma="auto"`` and a numeric gamma give the same directions up to
    scale.

    ``transform`` works in float64, in chunks of rows, and evaluates the bit by the equivalent test
    ``|phi| < arccos(-t)``, where ``phi`` is the phase ``<w, x> + b`` reduced to [-pi, pi] (no
    cosine is evaluated; the bits agree with the formula above except at exact float ties).

    References
    ----------
    .. [1] M. Raginsky and S. Lazebnik, "Locality-sensitive binary codes from shift-invariant
       kernels", Advances in Neural Information Processing Systems 22 (NIPS 2009).

    Examples
    --------
    >>> import numpy as np
    >>> from medhash.hashing import KernelLSH, hamming_distances
    >>> X = np.random.default_rng(0).standard_normal((100, 16))
    >>> hasher = KernelLSH(n_bits=64, seed=0).fit(X)
    >>> codes = hasher.transform(X)
    >>> codes.shape, codes.dtype
    ((100, 8), dtype('uint8'))
    >>> int(hamming_distances(codes[:1], codes[:1])[0, 0])
    0
    """

    _NAME = "kernel-lsh"
    _FORMAT = _FORMAT_NAME
    _PARAMS = ("n_bits", "gamma", "seed", "n_pairs")
    _FITTED = ("random_weights_", "random_offset_", "threshold_", "gamma_", "n_features_in_")
    _DESCRIBE = ("gamma_", "n_features_in_")

    def __init__(self, n_bits: int = 256, gamma: float | str = "auto", seed: int = 0, n_pairs: int = 2000):
        self.n_bits = n_bits
        self.gamma = gamma
        self.seed = seed
        self.n_pairs = n_pairs

    # ------------------------------------------------------------------ fit / transform
    def _fit(self, X) -> None:
        """Resolve ``gamma`` and draw the hash functions for ``X.shape[1]`` features; ``X`` is only used for
        its feature count and, with ``gamma="auto"``, for the median squared distance of random pairs of rows."""
        n_bits = check_int("n_bits", self.n_bits, 1, MAX_BITS)
        gamma = check_gamma(self.gamma, allow_auto=True)
        seed = check_int("seed", self.seed, 0)
        n_pairs = check_int("n_pairs", self.n_pairs, 1)
        X = check_features(X, "KernelLSH.fit")
        n, d = X.shape
        if n == 0:
            raise ValueError("KernelLSH.fit: X has 0 rows; fit needs at least 1 row (2 for gamma='auto')")
        if d == 0:
            raise ValueError("KernelLSH.fit: X has 0 features (shape (n, 0)); at least 1 feature is needed")

        gamma_ = self._auto_gamma(X, seed, n_pairs) if gamma == "auto" else gamma
        weights = np.random.default_rng([seed, 1]).standard_normal((n_bits, d))
        weights *= math.sqrt(gamma_)
        self.random_weights_ = weights
        self.random_offset_ = np.random.default_rng([seed, 2]).uniform(-np.pi, np.pi, n_bits)
        self.threshold_ = np.random.default_rng([seed, 3]).uniform(-1.0, 1.0, n_bits)
        self.gamma_ = float(gamma_)
        self.n_features_in_ = int(d)
        log.debug("KernelLSH fitted: %d bits, %d features, gamma_=%.6g (%s)", n_bits, d, gamma_,
                  "auto" if gamma == "auto" else "given")

    @staticmethod
    def _auto_gamma(X: np.ndarray, seed: int, n_pairs: int) -> float:
        n = X.shape[0]
        if n < 2:
            raise ValueError(f"KernelLSH.fit: gamma='auto' needs at least 2 rows of X, got {n}; "
                             "pass a numeric gamma")
        rng = np.random.default_rng(seed)
        i = rng.integers(0, n, n_pairs)
        j = (i + rng.integers(1, n, n_pairs)) % n
        sq = np.empty(n_pairs)
        step = max(1, _PAIR_CHUNK_ELEMENTS // X.shape[1])
        for s in range(0, n_pairs, step):
            diff = X[i[s:s + step]].astype(np.float64) - X[j[s:s + step]]
            sq[s:s + step] = np.einsum("ij,ij->i", diff, diff)
        med = float(np.median(sq))
        if not med > 0:
            raise ValueError(f"KernelLSH.fit: gamma='auto' cannot be set: the median squared distance of "
                             f"{n_pairs} random pairs of rows is 0 (the rows of X are identical, or mostly "
                             "duplicates); pass a numeric gamma")
        if not math.isfinite(4.0 / med):
            raise ValueError(f"KernelLSH.fit: gamma='auto' gives 4 / {med!r}, which is not finite; "
                             "scale the features or pass a numeric gamma")
        return 4.0 / med

    def _codes(self, X: np.ndarray) -> np.ndarray:
        """The codes, by the phase test of the Notes, in row chunks."""
        n = X.shape[0]
        n_bits = self.random_weights_.shape[0]
        codes = np.empty((n, (n_bits + 7) // 8), dtype=np.uint8)
        if n == 0:
            return codes
        # Phases in turns: q = <w, x>/2pi + b/2pi; bit = |q - rint(q)| < arccos(-t)/2pi.
        w_turns = self.random_weights_.T * (1.0 / _TWO_PI)          # (d, n_bits), float64
        b_turns = self.random_offset_ * (1.0 / _TWO_PI)
        half_width = np.arccos(-self.threshold_) * (1.0 / _TWO_PI)  # in [0, 1/2]
        rows = max(1, min(n, _CHUNK_ELEMENTS // n_bits))       # rows per matrix product
        sub = max(1, min(rows, _CACHE_ELEMENTS // n_bits))      # rows per cache-sized elementwise block
        q_buf = np.empty((rows, n_bits))
        r_buf = np.empty((sub, n_bits))
        bit_buf = np.empty((rows, n_bits), dtype=bool)
        for s in range(0, n, rows):
            xs = np.asarray(X[s:s + rows], dtype=np.float64)
            m = xs.shape[0]
            np.matmul(xs, w_turns, out=q_buf[:m])
            for u in range(0, m, sub):
                q = q_buf[u:min(m, u + sub)]
                r = r_buf[:q.shape[0]]
                q += b_turns
                np.rint(q, out=r)
                q -= r
                np.abs(q, out=q)
                np.less(q, half_width, out=bit_buf[u:u + q.shape[0]])
            codes[s:s + m] = np.packbits(bit_buf[:m], axis=1)
        return codes


# ---------------------------------------------------------------------- module functions
def expected_hamming_fraction(r, gamma: float, terms: int = 200) -> np.ndarray:
    """Expected fraction of differing bits of :class:`KernelLSH` codes at Euclidean distance ``r``.

    Parameters
    ----------
    r : float or array-like
        Distances ``||x - y||`` (>= 0; ``inf`` allowed).
    gamma : float
        Kernel width of the hasher (``gamma_``), finite and > 0.
    terms : int, default=200
        Number of series terms where ``sqrt(gamma) r >= 1`` (there the terms fall like
        ``exp(-m^2 gamma r^2 / 2)``; a dozen already reach float64 precision).

    Returns
    -------
    ndarray of float64, the shape of ``r``
        ``E[hamming / n_bits]``, in [0, 4/pi^2).

    Notes
    -----
    Raginsky & Lazebnik (2009), Lemma 2.3::

        E[hamming / n] = (8/pi^2) sum_{m>=1} (1 - exp(-gamma m^2 r^2 / 2)) / (4 m^2 - 1)
                       = 4/pi^2 - (8/pi^2) sum_{m>=1} exp(-gamma m^2 r^2 / 2) / (4 m^2 - 1).

    Equivalently, with ``s = sqrt(gamma) r`` and ``delta ~ N(0, s^2)`` the projected phase
    difference, it is ``(2/pi) E|sin(delta / 2)|``. The second series is summed where ``s >= 1``.
    Below, where it converges slowly, the equivalent ``(4 / pi^{3/2}) F(s / (2 sqrt 2))`` with
    Dawson's integral ``F`` is used (it replaces ``|sin|`` by ``sin|.|``, wrong only where
    ``|delta| > 2 pi``, an error below 1e-9): it is exactly 0 at ``r = 0`` and has the slope
    ``sqrt(2) / pi^{3/2} sqrt(gamma) ~ 0.254 sqrt(gamma)``.

    Examples
    --------
    >>> from medhash.hashing import expected_hamming_fraction
    >>> [round(float(v), 4) for v in expected_hamming_fraction([0.0, 1.0, 100.0], gamma=0.5)]
    [0.0, 0.1723, 0.4053]
    """
    gamma = check_gamma(gamma, allow_auto=False)
    terms = check_int("terms", terms, 1)
    r = np.asarray(r, dtype=np.float64)
    if np.isnan(r).any() or (r < 0).any():
        raise ValueError("r must hold distances >= 0 (no NaN)")
    s = np.sqrt(gamma) * r
    out = np.empty_like(s)
    small = s < _DAWSON_BELOW
    from scipy.special import dawsn  # start-up: scipy.special (0.3 s) only for this closed form

    out[small] = 4.0 / np.pi ** 1.5 * dawsn(s[small] / (2.0 * math.sqrt(2.0)))
    big = ~small
    if big.any():
        sb = s[big]
        m = np.arange(1, terms + 1, dtype=np.float64)
        with np.errstate(under="ignore"):
            series = np.exp(-0.5 * np.multiply.outer(sb * sb, m * m)) @ (1.0 / (4.0 * m * m - 1.0))
        out[big] = 4.0 / np.pi ** 2 - 8.0 / np.pi ** 2 * series
    return out
