"""Kernel locality-sensitive binary codes (Raginsky & Lazebnik, NIPS 2009) and Hamming helpers.

A :class:`KernelLSH` turns feature vectors ``x`` in R^d into n-bit codes. Bit k of the code is::

    h_k(x) = 1/2 [1 + sign(cos(<w_k, x> + b_k) + t_k)],
    w_k ~ N(0, gamma I_d),  b_k ~ U[-pi, pi],  t_k ~ U[-1, 1],

with ``w, b, t`` drawn once, from the seed, and shared by every vector hashed with the fitted
hasher. The expected fraction of differing bits between ``x`` and ``y`` depends only on
``r = ||x - y||`` and is given by :func:`expected_hamming_fraction`.

Codes are packed ``uint8`` arrays of shape ``(n, ceil(n_bits / 8))`` in :func:`numpy.packbits`
order (bit k of a code is the most-significant-bit-first bit k of the row); padding bits are 0, so
they never change a Hamming distance. :func:`hamming_distances` and :func:`unpack` work on such
codes; faiss ``IndexBinaryFlat`` (dimension ``8 * n_bytes``) reads them as they are.
"""
from __future__ import annotations

import logging
import math
import numbers
import pickle
from pathlib import Path

import numpy as np
from scipy.special import dawsn

from ..errors import ModelMismatchError, NotFittedError
from ..store.durable import write_pickle_atomic

log = logging.getLogger(__name__)

__all__ = ["MAX_BITS", "KernelLSH", "expected_hamming_fraction", "hamming_distances", "unpack"]

MAX_BITS = 16384
"""Largest number of bits a :class:`KernelLSH` accepts."""

FORMAT_VERSION = 1
"""Version of the file layout written by :meth:`KernelLSH.save`."""

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


def _check_int(name: str, value, low: int, high: int | None = None) -> int:
    """``value`` as an int in [low, high]; bool and non-integral numbers are refused."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
    if ok:
        value = int(value)
        ok = value >= low and (high is None or value <= high)
    if not ok:
        rule = f"an integer in [{low}, {high}]" if high is not None else f"an integer >= {low}"
        raise ValueError(f"{name} must be {rule}, got {value!r}")
    return value


def _check_gamma(gamma, allow_auto: bool) -> float | str:
    """``gamma`` as a float (finite, > 0), or ``"auto"`` where allowed."""
    if allow_auto and isinstance(gamma, str) and gamma == "auto":
        return "auto"
    if (isinstance(gamma, numbers.Real) and not isinstance(gamma, (bool, np.bool_))
            and math.isfinite(float(gamma)) and float(gamma) > 0):
        return float(gamma)
    rule = "'auto' or a finite number > 0" if allow_auto else "a finite number > 0"
    raise ValueError(f"gamma must be {rule}, got {gamma!r}")


def _check_features(X, what: str) -> np.ndarray:
    """``X`` as a 2-D real array (dtype kept when already float/int) with finite values."""
    X = np.asarray(X)
    if X.dtype.kind not in "biuf":
        try:
            X = X.astype(np.float64)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{what}: X must be a numeric array, got dtype {X.dtype}") from e
    if X.ndim != 2:
        raise ValueError(f"{what}: X must be a 2-D array (n_samples, n_features), got shape {X.shape}"
                         + ("; use X.reshape(1, -1) for a single vector" if X.ndim == 1 else ""))
    if X.dtype.kind == "f":
        finite = np.isfinite(X).all(axis=1)
        if not finite.all():
            bad = np.flatnonzero(~finite)
            raise ValueError(f"{what}: X contains NaN or infinity in {bad.size} row(s), first row {bad[0]}; "
                             "remove or impute those rows")
    return X


class KernelLSH:
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
    >>> from medhash.hashing.kernel_lsh import KernelLSH, hamming_distances
    >>> X = np.random.default_rng(0).standard_normal((100, 16))
    >>> hasher = KernelLSH(n_bits=64, seed=0).fit(X)
    >>> codes = hasher.transform(X)
    >>> codes.shape, codes.dtype
    ((100, 8), dtype('uint8'))
    >>> int(hamming_distances(codes[:1], codes[:1])[0, 0])
    0
    """

    def __init__(self, n_bits: int = 256, gamma: float | str = "auto", seed: int = 0, n_pairs: int = 2000):
        self.n_bits = n_bits
        self.gamma = gamma
        self.seed = seed
        self.n_pairs = n_pairs

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    def get_params(self) -> dict:
        """The constructor arguments, as given: ``n_bits``, ``gamma``, ``seed``, ``n_pairs``."""
        return {"n_bits": self.n_bits, "gamma": self.gamma, "seed": self.seed, "n_pairs": self.n_pairs}

    # ------------------------------------------------------------------ fit / transform
    def fit(self, X) -> "KernelLSH":
        """Resolve ``gamma`` and draw the hash functions for ``X.shape[1]`` features.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training features (finite). Only used for its feature count and, with
            ``gamma="auto"``, for the median squared distance of random pairs of rows.

        Returns
        -------
        self : KernelLSH
        """
        n_bits = _check_int("n_bits", self.n_bits, 1, MAX_BITS)
        gamma = _check_gamma(self.gamma, allow_auto=True)
        seed = _check_int("seed", self.seed, 0)
        n_pairs = _check_int("n_pairs", self.n_pairs, 1)
        X = _check_features(X, "KernelLSH.fit")
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
        return self

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

    def _check_fitted(self) -> None:
        if not hasattr(self, "random_weights_"):
            raise NotFittedError(f"This {type(self).__name__} instance is not fitted yet; "
                                 "call fit(X) before transform(X)")

    def transform(self, X) -> np.ndarray:
        """Binary codes of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features_in_)
            Finite features.

        Returns
        -------
        codes : ndarray of shape (n_samples, ceil(n_bits / 8)), uint8
            ``np.packbits`` of the bits along each row (bit k = MSB-first bit k); padding bits 0.
        """
        self._check_fitted()
        X = _check_features(X, "KernelLSH.transform")
        n, d = X.shape
        if d != self.n_features_in_:
            raise ValueError(f"KernelLSH.transform: X has {d} features, but this KernelLSH was fitted "
                             f"with {self.n_features_in_} features")
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

    def fit_transform(self, X) -> np.ndarray:
        """``fit(X)`` then ``transform(X)``."""
        return self.fit(X).transform(X)

    # ------------------------------------------------------------------ persistence
    _FITTED = ("random_weights_", "random_offset_", "threshold_", "gamma_", "n_features_in_")

    def save(self, path) -> None:
        """Write the hasher (parameters and, when fitted, its draws) to ``path`` (pickle).

        The file is written to a temporary name in the same folder and renamed, so a crash never
        leaves a half-written file under ``path``.
        """
        path = Path(path)
        payload = {"format": _FORMAT_NAME, "version": FORMAT_VERSION, "params": self.get_params(),
                   "fitted": {k: getattr(self, k) for k in self._FITTED if hasattr(self, k)}}
        write_pickle_atomic(path, payload)

    @classmethod
    def load(cls, path) -> "KernelLSH":
        """Read a hasher written by :meth:`save`.

        Load only files you trust: pickle can run code while reading.

        Raises
        ------
        ModelMismatchError
            The file is not a saved KernelLSH, or has a format version this medhash cannot read.
        """
        path = Path(path)
        with open(path, "rb") as f:
            try:
                payload = pickle.load(f)
            except (pickle.UnpicklingError, EOFError) as e:
                raise ModelMismatchError(f"{path}: not a saved KernelLSH (cannot unpickle: {e})") from e
        fmt = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        if fmt != _FORMAT_NAME:
            raise ModelMismatchError(f"{path}: not a saved KernelLSH (found {fmt!r}, expected {_FORMAT_NAME!r})")
        version = payload.get("version")
        if version != FORMAT_VERSION:
            raise ModelMismatchError(f"{path}: KernelLSH file format version {version!r} cannot be read by "
                                     f"this medhash (it reads version {FORMAT_VERSION}); fit the hasher again")
        obj = cls(**payload["params"])
        for k, v in payload["fitted"].items():
            if k not in cls._FITTED:
                raise ModelMismatchError(f"{path}: unexpected KernelLSH attribute {k!r}")
            setattr(obj, k, v)
        return obj


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
    >>> from medhash.hashing.kernel_lsh import expected_hamming_fraction
    >>> [round(float(v), 4) for v in expected_hamming_fraction([0.0, 1.0, 100.0], gamma=0.5)]
    [0.0, 0.1723, 0.4053]
    """
    gamma = _check_gamma(gamma, allow_auto=False)
    terms = _check_int("terms", terms, 1)
    r = np.asarray(r, dtype=np.float64)
    if np.isnan(r).any() or (r < 0).any():
        raise ValueError("r must hold distances >= 0 (no NaN)")
    s = np.sqrt(gamma) * r
    out = np.empty_like(s)
    small = s < _DAWSON_BELOW
    out[small] = 4.0 / np.pi ** 1.5 * dawsn(s[small] / (2.0 * math.sqrt(2.0)))
    big = ~small
    if big.any():
        sb = s[big]
        m = np.arange(1, terms + 1, dtype=np.float64)
        with np.errstate(under="ignore"):
            series = np.exp(-0.5 * np.multiply.outer(sb * sb, m * m)) @ (1.0 / (4.0 * m * m - 1.0))
        out[big] = 4.0 / np.pi ** 2 - 8.0 / np.pi ** 2 * series
    return out


def _check_codes(name: str, codes) -> np.ndarray:
    codes = np.asarray(codes)
    if codes.dtype != np.uint8 or codes.ndim != 2:
        raise ValueError(f"{name} must be packed codes, a 2-D uint8 array (n, n_bytes); "
                         f"got dtype {codes.dtype}, shape {codes.shape}")
    return codes


def hamming_distances(A, B) -> np.ndarray:
    """Hamming distances between every code of ``A`` and every code of ``B``.

    Parameters
    ----------
    A : ndarray of shape (n_a, n_bytes), uint8
    B : ndarray of shape (n_b, n_bytes), uint8
        Packed codes (e.g. from :meth:`KernelLSH.transform`) of the same length.

    Returns
    -------
    D : ndarray of shape (n_a, n_b), int32
        ``D[i, j]`` = number of differing bits of ``A[i]`` and ``B[j]`` (popcount of the XOR), the
        same integers faiss ``IndexBinaryFlat`` reports.

    Notes
    -----
    Exact, in numpy, in blocks of rows of ``A``; for searching large archives use faiss.
    """
    A = _check_codes("A", A)
    B = _check_codes("B", B)
    if A.shape[1] != B.shape[1]:
        raise ValueError(f"A and B must have the same code length, got {A.shape[1]} and {B.shape[1]} bytes")
    n_a, n_b, n_bytes = A.shape[0], B.shape[0], A.shape[1]
    D = np.zeros((n_a, n_b), dtype=np.int32)
    if n_a == 0 or n_b == 0 or n_bytes == 0:
        return D
    # Zero padding to whole 64-bit words changes no distance.
    words = -(-n_bytes // 8)

    def as_words(C):
        padded = np.zeros((C.shape[0], words * 8), dtype=np.uint8)
        padded[:, :n_bytes] = C
        return padded.view(np.uint64)

    A64, B64 = as_words(A), as_words(B)
    popcount = getattr(np, "bitwise_count", None)
    if popcount is None:  # numpy < 2.0
        table = np.array([bin(v).count("1") for v in range(256)], dtype=np.uint8)

        def popcount(x):
            return table[x.view(np.uint8)].reshape(*x.shape, 8).sum(axis=-1, dtype=np.uint8)

    rows = max(1, (1 << 21) // max(1, n_b * words))
    for s in range(0, n_a, rows):
        x = A64[s:s + rows, None, :] ^ B64[None, :, :]
        D[s:s + rows] = popcount(x).sum(axis=2, dtype=np.int32)
    return D


def unpack(codes, n_bits: int) -> np.ndarray:
    """The bits of packed codes.

    Parameters
    ----------
    codes : ndarray of shape (n, ceil(n_bits / 8)), uint8
    n_bits : int
        Code length; padding bits beyond it are dropped.

    Returns
    -------
    bits : ndarray of shape (n, n_bits), uint8 of 0 and 1
    """
    codes = _check_codes("codes", codes)
    n_bits = _check_int("n_bits", n_bits, 1, MAX_BITS)
    if codes.shape[1] != (n_bits + 7) // 8:
        raise ValueError(f"codes of {n_bits} bits take {(n_bits + 7) // 8} bytes a row, got {codes.shape[1]}")
    return np.unpackbits(codes, axis=1, count=n_bits)
