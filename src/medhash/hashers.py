"""Hash families beside :class:`~medhash.hashing.KernelLSH`, and a registry to pick one by name.

Every hasher here follows the same contract as :class:`~medhash.hashing.KernelLSH` (scikit-learn
style): the constructor only stores its keyword arguments, ``fit(X)`` validates them and learns
attributes ending in ``_`` (including ``n_features_in_``), ``transform(X)`` returns packed codes of
shape ``(n, ceil(n_bits / 8))``, ``uint8``, in :func:`numpy.packbits` order (bit k of a code is the
most-significant-bit-first bit k of its row; padding bits 0), ``save(path)`` / ``load(path)`` keep a
fitted hasher in a pickle file, and ``describe()`` gives a JSON-able summary.

=================  ==========================  ================================================
name               class                       bits
=================  ==========================  ================================================
``"kernel-lsh"``   :class:`KernelLSH`          random Fourier features, random thresholds
``"pca-sign"``     :class:`PCASign`            sign of the top principal components
``"itq"``          :class:`ITQ`                PCA + learned rotation (iterative quantisation)
``"trained"``      :class:`TrainedKernelHash`  kernel-LSH form, projections learned (torch)
=================  ==========================  ================================================

:func:`make_hasher` builds one by name, :func:`load_hasher` reads any saved one and
:func:`describe_hasher` summarises any of them (``KernelLSH`` included, which has no
``describe`` method of its own).

PCA-sign and ITQ give at most ``min(n_features, n_samples)`` bits; kernel LSH and the trained hash
give any number up to :data:`~medhash.hashing.MAX_BITS`.
"""
from __future__ import annotations

import logging
import math
import os
import pickle
import tempfile
import time
from pathlib import Path

import numpy as np

from .errors import ModelMismatchError, NotFittedError
from .hashing import (MAX_BITS, KernelLSH, _check_features, _check_gamma, _check_int,
                      expected_hamming_fraction)
from .hashing import _FORMAT_NAME as _KERNEL_LSH_FORMAT
from .hashing import FORMAT_VERSION as _KERNEL_LSH_VERSION

log = logging.getLogger(__name__)

__all__ = ["HASHERS", "ITQ", "PCASign", "TrainedKernelHash", "describe_hasher", "load_hasher", "make_hasher"]

FORMAT_VERSION = 1
"""Version of the file layout written by the ``save`` methods of this module's hashers."""

# Rows of X handled at once when projecting or computing pair distances (elements of a work buffer).
_CHUNK_ELEMENTS = 1 << 22


# ---------------------------------------------------------------------- shared machinery
def _packed(bits: np.ndarray) -> np.ndarray:
    """(n, n_bits) bool -> (n, ceil(n_bits / 8)) uint8, MSB-first, padding bits 0."""
    return np.packbits(bits, axis=1)


def _atomic_pickle(path: Path, payload: dict) -> None:
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            pickle.dump(payload, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_payload(path: Path, what: str) -> dict:
    """The unpickled payload dict of ``path``; ModelMismatchError when it is not one."""
    with open(path, "rb") as f:
        try:
            payload = pickle.load(f)
        except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, TypeError) as e:
            raise ModelMismatchError(f"{path}: not a saved {what} (cannot unpickle: {e})") from e
    if not isinstance(payload, dict) or not {"format", "version", "params", "fitted"} <= set(payload):
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ModelMismatchError(f"{path}: not a saved {what} (found {found!r}, not a hasher payload with "
                                 "'format', 'version', 'params' and 'fitted')")
    return payload


def _check_bits_vs_data(what: str, n_bits: int, n: int, d: int) -> None:
    limit = min(n, d)
    if n_bits > limit:
        raise ValueError(f"{what}: n_bits={n_bits} is more than min(n_features, n_samples) = "
                         f"min({d}, {n}) = {limit}; a projection on principal directions gives at most "
                         f"one bit per direction: ask for at most {limit} bits, or use 'kernel-lsh' or "
                         "'trained' for longer codes")


def _pca(X: np.ndarray, n_components: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean (d,), the top principal directions (n_components, d) and their variances, float64.

    The eigenvectors of the covariance matrix, by decreasing eigenvalue; each direction's sign is
    fixed so that its largest-magnitude coordinate is positive (the same result on any machine).
    """
    n, d = X.shape
    mean = np.zeros(d)
    for s in range(0, n, max(1, _CHUNK_ELEMENTS // d)):
        mean += X[s:s + max(1, _CHUNK_ELEMENTS // d)].sum(axis=0, dtype=np.float64)
    mean /= n
    cov = np.zeros((d, d))
    step = max(1, _CHUNK_ELEMENTS // d)
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


def _project(X: np.ndarray, mean: np.ndarray, P: np.ndarray) -> np.ndarray:
    """(X - mean) @ P in float64, in row chunks; P is (d, k)."""
    out = np.empty((X.shape[0], P.shape[1]))
    step = max(1, _CHUNK_ELEMENTS // max(P.shape[0], P.shape[1]))
    for s in range(0, X.shape[0], step):
        out[s:s + step] = (np.asarray(X[s:s + step], dtype=np.float64) - mean) @ P
    return out


class _Hasher:
    """Base of this module's hashers: repr, fit_transform, the feature check, save/load, describe."""

    _NAME: str = ""          # registry name
    _FORMAT: str = ""        # payload "format"
    _FITTED: tuple = ()      # fitted attributes saved
    _PARAMS: tuple = ()      # constructor arguments
    _DESCRIBE: tuple = ()    # fitted scalars shown by describe()

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    def get_params(self) -> dict:
        """The constructor arguments, as given."""
        return {k: getattr(self, k) for k in self._PARAMS}

    def fit_transform(self, X) -> np.ndarray:
        """``fit(X)`` then ``transform(X)``."""
        return self.fit(X).transform(X)

    def _check_fitted(self) -> None:
        if not hasattr(self, "n_features_in_"):
            raise NotFittedError(f"This {type(self).__name__} instance is not fitted yet; "
                                 "call fit(X) before transform(X)")

    def _check_transform_input(self, X) -> np.ndarray:
        self._check_fitted()
        what = f"{type(self).__name__}.transform"
        X = _check_features(X, what)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"{what}: X has {X.shape[1]} features, but this {type(self).__name__} was "
                             f"fitted with {self.n_features_in_} features")
        return X

    def describe(self) -> dict:
        """A JSON-able summary: ``name``, ``class``, ``params`` and, when fitted, key fitted scalars."""
        out = {"name": self._NAME, "class": type(self).__name__, "params": dict(self.get_params()),
               "fitted": hasattr(self, "n_features_in_")}
        for k in self._DESCRIBE:
            if hasattr(self, k):
                v = getattr(self, k)
                out[k] = v.item() if isinstance(v, np.generic) else v
        return out

    def save(self, path) -> None:
        """Write the hasher (parameters and, when fitted, what ``fit`` learned) to ``path`` (pickle).

        The file is written to a temporary name in the same folder and renamed, so a crash never
        leaves a half-written file under ``path``.
        """
        path = Path(path)
        payload = {"format": self._FORMAT, "version": FORMAT_VERSION, "params": self.get_params(),
                   "fitted": {k: getattr(self, k) for k in self._FITTED if hasattr(self, k)}}
        _atomic_pickle(path, payload)

    @classmethod
    def load(cls, path):
        """Read a hasher written by ``save``.

        Load only files you trust: pickle can run code while reading.

        Raises
        ------
        ModelMismatchError
            The file is not a saved hasher of this class, or has a format version this medhash
            cannot read.
        """
        path = Path(path)
        payload = _read_payload(path, cls.__name__)
        return cls._from_payload(path, payload)

    @classmethod
    def _from_payload(cls, path: Path, payload: dict):
        fmt = payload["format"]
        if fmt != cls._FORMAT:
            raise ModelMismatchError(f"{path}: not a saved {cls.__name__} (found {fmt!r}, expected {cls._FORMAT!r})")
        version = payload["version"]
        if version != FORMAT_VERSION:
            raise ModelMismatchError(f"{path}: {cls.__name__} file format version {version!r} cannot be read by "
                                     f"this medhash (it reads version {FORMAT_VERSION}); fit the hasher again")
        params = payload["params"]
        if not isinstance(params, dict) or set(params) != set(cls._PARAMS):
            raise ModelMismatchError(f"{path}: {cls.__name__} parameters {sorted(params)!r} do not match "
                                     f"this medhash's {sorted(cls._PARAMS)!r}; fit the hasher again")
        obj = cls(**params)
        for k, v in payload["fitted"].items():
            if k not in cls._FITTED:
                raise ModelMismatchError(f"{path}: unexpected {cls.__name__} attribute {k!r}")
            setattr(obj, k, v)
        return obj


# ---------------------------------------------------------------------- PCA sign
class PCASign(_Hasher):
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
    >>> from medhash.hashers import PCASign
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

    def fit(self, X) -> "PCASign":
        """Learn the mean and the top ``n_bits`` principal directions of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training features (finite), ``n_bits <= min(n_features, n_samples)``.

        Returns
        -------
        self : PCASign
        """
        n_bits = _check_int("n_bits", self.n_bits, 1, MAX_BITS)
        _check_int("seed", self.seed, 0)
        X = _check_features(X, "PCASign.fit")
        n, d = X.shape
        _check_bits_vs_data("PCASign.fit", n_bits, n, d)
        self.mean_, self.components_, self.explained_variance_ = _pca(X, n_bits)
        self.n_features_in_ = int(d)
        return self

    def transform(self, X) -> np.ndarray:
        """Binary codes of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features_in_)
            Finite features.

        Returns
        -------
        codes : ndarray of shape (n_samples, ceil(n_bits / 8)), uint8
            ``np.packbits`` of the bits ``(X - mean_) @ components_.T > 0`` along each row.
        """
        X = self._check_transform_input(X)
        return _packed(_project(X, self.mean_, self.components_.T) > 0)


# ---------------------------------------------------------------------- ITQ
class ITQ(_Hasher):
    """Iterative quantisation (Gong & Lazebnik): PCA to ``n_bits`` dimensions, then a learned rotation.

    With ``V = (X - mean_) @ components_.T`` (n, n_bits), ITQ looks for the binary codes
    ``B`` in {-1, +1}^(n x n_bits) and the orthogonal ``R`` (n_bits, n_bits) that minimise the
    quantisation loss ``||B - V R||_F^2``, alternating ``n_iter`` times

    * ``B = sign(V R)`` (best codes for a fixed rotation; 0 counts as +1), then
    * ``R = U W^T`` where ``V^T B = U S W^T`` is an SVD (orthogonal Procrustes: best rotation for
      fixed codes),

    from a random orthogonal ``R`` drawn from the seed. Bit k of x is ``((x - mean_) @
    components_.T @ rotation_)_k > 0``. Each half-step can only lower the loss, so ``objective_`` is
    non-increasing.

    Parameters
    ----------
    n_bits : int, default=64
        Code length, 1 to ``min(n_features, n_samples)`` of the fit data.
    seed : int, default=0
        Seed (>= 0) of the initial random rotation.
    n_iter : int, default=50
        Number of (codes, rotation) updates (>= 0; 0 keeps the random rotation).

    Attributes
    ----------
    mean_ : ndarray of shape (n_features_in_,), float64
        Mean of the fit data.
    components_ : ndarray of shape (n_bits, n_features_in_), float64
        Principal directions, as in :class:`PCASign`.
    rotation_ : ndarray of shape (n_bits, n_bits), float64
        The learned orthogonal rotation ``R`` (``R R^T = I``).
    objective_ : list of float
        Quantisation loss ``||B - V R||_F^2 / n_samples`` (feature units squared, per item) after
        each iteration; ``objective_[0]`` is the loss of the initial random rotation, so it has
        ``n_iter + 1`` entries.
    n_features_in_ : int
        Number of features seen in ``fit``; ``transform`` requires the same.

    Notes
    -----
    Y. Gong and S. Lazebnik, "Iterative quantization: a Procrustean approach to learning binary
    codes", CVPR 2011; Y. Gong, S. Lazebnik, A. Gordo, F. Perronnin, TPAMI 35(12), 2013.

    Examples
    --------
    >>> import numpy as np
    >>> from medhash.hashers import ITQ
    >>> X = np.random.default_rng(0).standard_normal((200, 32))
    >>> itq = ITQ(n_bits=16, seed=0).fit(X)
    >>> itq.transform(X).shape
    (200, 2)
    >>> bool(np.allclose(itq.rotation_ @ itq.rotation_.T, np.eye(16)))
    True
    >>> all(a >= b - 1e-9 for a, b in zip(itq.objective_, itq.objective_[1:]))
    True
    """

    _NAME = "itq"
    _FORMAT = "medhash.hashers.ITQ"
    _PARAMS = ("n_bits", "seed", "n_iter")
    _FITTED = ("mean_", "components_", "rotation_", "objective_", "n_features_in_")
    _DESCRIBE = ("n_features_in_", "final_objective")

    def __init__(self, n_bits: int = 64, seed: int = 0, n_iter: int = 50):
        self.n_bits = n_bits
        self.seed = seed
        self.n_iter = n_iter

    @property
    def final_objective(self) -> float:
        """The last entry of ``objective_`` (only once fitted)."""
        if not hasattr(self, "objective_"):
            raise AttributeError("final_objective")
        return float(self.objective_[-1])

    def fit(self, X) -> "ITQ":
        """Learn the mean, principal directions and rotation from ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training features (finite), ``n_bits <= min(n_features, n_samples)``.

        Returns
        -------
        self : ITQ
        """
        n_bits = _check_int("n_bits", self.n_bits, 1, MAX_BITS)
        seed = _check_int("seed", self.seed, 0)
        n_iter = _check_int("n_iter", self.n_iter, 0)
        X = _check_features(X, "ITQ.fit")
        n, d = X.shape
        _check_bits_vs_data("ITQ.fit", n_bits, n, d)
        mean, comps, _ = _pca(X, n_bits)
        V = _project(X, mean, comps.T)                                  # (n, n_bits)
        G = np.random.default_rng([seed, 4]).standard_normal((n_bits, n_bits))
        Q, Rq = np.linalg.qr(G)
        R = Q * np.where(np.diag(Rq) < 0, -1.0, 1.0)                    # Haar-distributed orthogonal

        def loss(B, VR):
            return float(np.einsum("ij,ij->", B - VR, B - VR) / n)

        VR = V @ R
        B = np.where(VR >= 0, 1.0, -1.0)
        objective = [loss(B, VR)]
        for _ in range(n_iter):
            U, _s, Wt = np.linalg.svd(V.T @ B)
            R = U @ Wt
            VR = V @ R
            B = np.where(VR >= 0, 1.0, -1.0)
            objective.append(loss(B, VR))
        # Re-orthonormalise away the rounding of many products (R R^T = I to ~1e-15).
        U, _s, Wt = np.linalg.svd(R)
        self.mean_ = mean
        self.components_ = comps
        self.rotation_ = U @ Wt
        self.objective_ = objective
        self.n_features_in_ = int(d)
        log.debug("ITQ fitted: %d bits, %d features, objective %.6g -> %.6g", n_bits, d, objective[0], objective[-1])
        return self

    def transform(self, X) -> np.ndarray:
        """Binary codes of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features_in_)
            Finite features.

        Returns
        -------
        codes : ndarray of shape (n_samples, ceil(n_bits / 8)), uint8
            ``np.packbits`` of the bits ``(X - mean_) @ components_.T @ rotation_ >= 0``.
        """
        X = self._check_transform_input(X)
        return _packed(_project(X, self.mean_, self.components_.T @ self.rotation_) >= 0)
