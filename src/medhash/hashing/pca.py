"""PCA-sign codes (:class:`PCASign`) and the principal-component helpers it shares with :class:`~medhash.hashing.itq.ITQ`.

PCA-based hashers give at most one bit per principal direction: at most ``min(n_features, n_samples)``
bits of the fit data.
"""
from __future__ import annotations

import numpy as np

from .base import CHUNK_ELEMENTS, MAX_BITS, Hasher, check_features, check_int
from .codes import packed

__all__ = ["PCASign", "check_bits_vs_data", "pca", "pca_fit_input", "project"]


def check_bits_vs_data(what: str, n_bits: int, n: int, d: int) -> None:
    """ValueError when ``n_bits`` exceeds ``min(n, d)``: one bit per principal direction at most."""
    limit = min(n, d)
    if n_bits > limit:
        raise ValueError(f"{what}: n_bits={n_bits} is more than min(n_features, n_samples) = "
                         f"min({d}, {n}) = {limit}; a projection on principal directions gives at most "
                         f"one bit per direction: ask for at most {limit} bits, or use 'kernel-lsh' or "
                         "'trained' for longer codes")


def pca_fit_input(hasher, X, what: str) -> tuple[int, int, np.ndarray]:
    """Checked (n_bits, seed, X) of a PCA-based hasher's fit: at most one bit per feature and sample."""
    n_bits = check_int("n_bits", hasher.n_bits, 1, MAX_BITS)
    seed = check_int("seed", hasher.seed, 0)
    X = check_features(X, what)
    check_bits_vs_data(what, n_bits, *X.shape)
    return n_bits, seed, X


def pca(X: np.ndarray, n_components: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean (d,), the top principal directions (n_components, d) and their variances, float64.

    The eigenvectors of the covariance matrix, by decreasing eigenvalue; each direction's sign is
    fixed so that its largest-magnitude coordinate is positive (the same result on any machine).
    """
    n, d = X.shape
    mean = np.zeros(d)
    for s in range(0, n, max(1, CHUNK_ELEMENTS // d)):
        mean += X[s:s + max(1, CHUNK_ELEMENTS // d)].sum(axis=0, dtype=np.float64)
    mean /= n
    cov = np.zeros((d, d))
    step = max(1, CHUNK_ELEMENTS // d)
    for s in range(0, n, step):
        xc = np.asarray(X[s:s + step], dtype=np.float64) - mean
        cov += xc.T @ xc
    cov /= max(1, n - 1)
    evals, evecs = np.linalg.eigh(cov)
    order = np.argsort(evals, kind="stable")[::-1][:n_components]
    comps = evecs[:, order].T.copy()
    big = np.argmax(np.abs(comps), axis=1)
    comps *= np.sign(comps[np.arange(len(comps)), big])[:, None]
    return mean, comps, np.maximum(evals[order], 0.0)


def project(X: np.ndarray, mean: np.ndarray, P: np.ndarray) -> np.ndarray:
    """(X - mean) @ P in float64, in row chunks; P is (d, k)."""
    out = np.empty((X.shape[0], P.shape[1]))
    step = max(1, CHUNK_ELEMENTS // max(P.shape[0], P.shape[1]))
    for s in range(0, X.shape[0], step):
        out[s:s + step] = (np.asarray(X[s:s + step], dtype=np.float64) - mean) @ P
    return out


class PCASign(Hasher):
    """Sign of the top principal components: bit k = ``<c_k, x - mean> > 0``.

    The simplest data-dependent binary code: centre the features and keep the sign of the
    projection on each of the ``n_bits`` directions of largest variance. No randomness; the code
    length is limited by the number of directions, ``min(n_features, n_samples)``.

    Parameters
    ----------
    n_bits : int, default=64
        Code length, 1 to ``min(n_features, n_samples)`` of the fit data.
    seed : int, default=0
        Accepted (>= 0) for a uniform interface with the other hashers; PCA-sign draws nothing, so
        the codes do not depend on it.

    Attributes
    ----------
    mean_ : ndarray of shape (n_features_in_,), float64
        Mean of the fit data.
    components_ : ndarray of shape (n_bits, n_features_in_), float64
        Orthonormal principal directions by decreasing variance; each one's largest-magnitude
        coordinate is positive.
    explained_variance_ : ndarray of shape (n_bits,), float64
        Variance of the fit data along each direction (feature units squared).
    n_features_in_ : int
        Number of features seen in ``fit``; ``transform`` requires the same.

    Notes
    -----
    A baseline of Gong & Lazebnik (CVPR 2011 / TPAMI 2013): the high-variance directions carry
    most of the distance, but giving each the same weight of one bit over-counts the low-variance
    ones, which :class:`ITQ` corrects with a rotation.

    Examples
    --------
    >>> import numpy as np
    >>> from medhash.hashing import PCASign
    >>> X = np.random.default_rng(0).standard_normal((100, 16))
    >>> codes = PCASign(n_bits=8).fit_transform(X)
    >>> codes.shape, codes.dtype
    ((100, 1), dtype('uint8'))
    """

    _NAME = "pca-sign"
    _FORMAT = "medhash.hashers.PCASign"
    _PARAMS = ("n_bits", "seed")
    _FITTED = ("mean_", "components_", "explained_variance_", "n_features_in_")
    _DESCRIBE = ("n_features_in_",)

    def __init__(self, n_bits: int = 64, seed: int = 0):
        self.n_bits = n_bits
        self.seed = seed

    def _fit(self, X) -> None:
        """Learn the mean and the top ``n_bits`` principal directions of ``X``."""
        n_bits, _seed, X = pca_fit_input(self, X, "PCASign.fit")
        d = X.shape[1]
        self.mean_, self.components_, self.explained_variance_ = pca(X, n_bits)
        self.n_features_in_ = int(d)

    def _codes(self, X: np.ndarray) -> np.ndarray:
        """The bits ``(X - mean_) @ components_.T > 0``, packed."""
        return packed(project(X, self.mean_, self.components_.T) > 0)
