"""Hash families beside :class:`~medhash.hashing.kernel_lsh.KernelLSH`, and a registry to pick one by name.

Every hasher here follows the same contract as :class:`~medhash.hashing.kernel_lsh.KernelLSH` (scikit-learn
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
give any number up to :data:`~medhash.hashing.kernel_lsh.MAX_BITS`.
"""
from __future__ import annotations

import logging
import math
import pickle
import time
from pathlib import Path

import numpy as np

from ..errors import ModelMismatchError, NotFittedError
from ..store.durable import write_pickle_atomic
from .kernel_lsh import (MAX_BITS, KernelLSH, _check_features, _check_gamma, _check_int,
                      expected_hamming_fraction)
from .kernel_lsh import _FORMAT_NAME as _KERNEL_LSH_FORMAT
from .kernel_lsh import FORMAT_VERSION as _KERNEL_LSH_VERSION

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


def _pca_fit_input(hasher, X, what: str) -> tuple[int, int, np.ndarray]:
    """Checked (n_bits, seed, X) of a PCA-based hasher's fit: at most one bit per feature and sample."""
    n_bits = _check_int("n_bits", hasher.n_bits, 1, MAX_BITS)
    seed = _check_int("seed", hasher.seed, 0)
    X = _check_features(X, what)
    _check_bits_vs_data(what, n_bits, *X.shape)
    return n_bits, seed, X


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
        write_pickle_atomic(path, payload)

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
    >>> from medhash.hashing.hashers import PCASign
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
        n_bits, _seed, X = _pca_fit_input(self, X, "PCASign.fit")
        d = X.shape[1]
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
    >>> from medhash.hashing.hashers import ITQ
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
        n_bits, seed, X = _pca_fit_input(self, X, "ITQ.fit")
        n_iter = _check_int("n_iter", self.n_iter, 0)
        n, d = X.shape
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


# ---------------------------------------------------------------------- trained kernel hash
class TrainedKernelHash(_Hasher):
    """Kernel-LSH-form hash whose projections and phases are learned to keep neighbours.

    Bit k of x is, as in :class:`~medhash.hashing.kernel_lsh.KernelLSH`::

        h_k(x) = [cos(<w_k, x> + b_k) + t_k > 0],

    but ``w_k`` and ``b_k`` start from the KernelLSH draws of the same ``seed``, ``gamma`` and
    ``n_pairs`` and are then trained (torch, CPU, one thread); the thresholds ``t_k`` stay as drawn.
    With ``epochs=0`` the codes are exactly KernelLSH's.

    Parameters
    ----------
    n_bits : int, default=256
        Code length, 1 to :data:`~medhash.hashing.kernel_lsh.MAX_BITS`.
    gamma : float or "auto", default="auto"
        Kernel width of the starting KernelLSH (``w ~ N(0, gamma I)``); ``"auto"`` is
        ``4 / median ||x_i - x_j||^2`` over ``n_pairs`` random pairs (see KernelLSH).
    seed : int, default=0
        Seed (>= 0) of the starting draws and of every sample taken during training. The same seed,
        parameters and data give the same codes (training runs on one CPU thread).
    n_pairs : int, default=2000
        Random pairs used by ``gamma="auto"`` (as in KernelLSH).
    epochs : int, default=10
        Passes over the training items as anchors (>= 0).
    lr : float, default=0.01
        Adam learning rate, for ``w / sqrt(gamma_)`` (unit-variance at the start) and ``b`` (radians).
    batch_size : int, default=256
        Anchors per step; a step hashes ``4 * batch_size`` items (see Notes).
    n_neighbors : int, default=100
        Size of the Euclidean k-NN list of each training item that the ranking pairs come from.
    rank_weight : float, default=1.0
        Weight ``lambda`` of the neighbour-ranking term (>= 0; 0 trains on the distance fit alone).
    alpha : float, default=2.0
        Slope of the relaxation ``tanh(alpha (cos(.) + t))`` that stands for the bit in training.
    max_samples : int, default=20000
        At most this many rows of the fit data (drawn with the seed) are used for training, which
        bounds the exact k-NN search (quadratic in the rows).

    Attributes
    ----------
    gamma_ : float
        Kernel width of the starting KernelLSH (also the scale of the training target).
    weights_ : ndarray of shape (n_bits, n_features_in_), float64
        The learned projections ``w_k`` (feature units^-1 · radians).
    offset_ : ndarray of shape (n_bits,), float64
        The learned phases ``b_k`` (radians).
    threshold_ : ndarray of shape (n_bits,), float64
        The thresholds ``t_k`` of the starting KernelLSH (``U[-1, 1]``, not trained).
    loss_ : list of float
        The training loss (Notes) on a fixed set of monitoring batches drawn once from the seed:
        ``loss_[0]`` before training (the KernelLSH draws), then after each epoch (``epochs + 1``
        entries).
    train_loss_ : list of float
        Mean training-step loss of each epoch.
    fit_seconds_ : float
        Wall time of ``fit``.
    n_features_in_ : int
        Number of features seen in ``fit``; ``transform`` requires the same.

    Notes
    -----
    **Loss.** At each step a set S of items is hashed: ``batch_size`` anchors ``a`` (a shuffled pass
    over the training rows), as many random rows, and for each anchor two rows ``p, q`` of its
    ``n_neighbors`` Euclidean nearest neighbours, drawn at random ranks with rank(p) < rank(q).
    With ``c = cos(x W^T + b) + t`` (n_bits values per item; the bit is ``c > 0``) and the relaxed
    code ``u = tanh(alpha c)`` in (-1, 1), the relaxed normalised Hamming distance of two items is
    ``H_ij = (1 - <u_i, u_j> / n_bits) / 2`` (equal to the real one when ``u`` is +-1) and the step
    loss is::

        L = mean_{i<j in S} (H_ij - tau(||x_i - x_j||))^2
            + lambda * mean_a softplus(beta (H_ap - H_aq)) / beta,      beta = 50.

    *Distance term.* ``tau(r) = expected_hamming_fraction(r, gamma_)``, the KernelLSH expectation
    (Raginsky & Lazebnik, Lemma 2.3), monotone from 0 to 4/pi^2. The random KernelLSH codes meet it
    only on average, with a binomial spread of about ``sqrt(tau (1 - tau) / n_bits)`` per pair; it
    is that spread that reorders neighbours. Fitting each pair to its expectation removes the spread
    on the data at hand without changing the geometry: ``gamma_`` keeps its meaning and
    ``expected_hamming_fraction`` still converts Hamming fractions to distances for the trained
    codes. (``(1 - exp(-gamma r^2 / 2)) / 2`` is the target of a code without thresholds; it asks
    the thresholded form for a scale it cannot reach at large r.) Most random pairs are far apart,
    so this term alone mostly shapes the far field.

    *Neighbour term.* A logistic ranking loss (soft hinge with margin 0) on triples from each
    anchor's Euclidean k-NN list: the nearer neighbour ``p`` should have the smaller Hamming
    distance. This is what a k-NN overlap score (Dice@k of Hamming vs Euclidean top-k) measures. On
    the 60-patient archive (ct-shallow, 128 features) it raises Dice@50 at 256 bits from 0.728
    (KernelLSH) to 0.773 and at 64 bits from 0.525 to 0.584 (benchmarks/hashers.py); the distance
    term alone lowers it slightly (0.713 at 256 bits, measured with the straight-through variant
    below).

    *Relaxation.* A straight-through estimator (real bits forward, ``tanh`` gradient backward) was
    tried: as good at 256 bits, worse at short codes (Dice@50 0.548 instead of 0.584 at 64 bits,
    below KernelLSH at 16 and 32 bits, where the training loss did not even decrease), because one
    flipped bit moves ``H`` by ``1 / n_bits`` and the tanh gradient no longer describes the step.
    ``alpha = 2`` was the best of 1, 2, 4 and 6.

    Training samples rows and pairs with numpy generators seeded from ``seed`` and runs torch on one
    thread with deterministic algorithms; the global torch settings are restored afterwards.

    Examples
    --------
    >>> import numpy as np
    >>> from medhash.hashing.hashers import TrainedKernelHash
    >>> from medhash.hashing.kernel_lsh import KernelLSH
    >>> X = np.random.default_rng(0).standard_normal((300, 8))
    >>> h0 = TrainedKernelHash(n_bits=32, epochs=0).fit(X)
    >>> bool((h0.transform(X) == KernelLSH(n_bits=32).fit(X).transform(X)).all())
    True
    >>> h = TrainedKernelHash(n_bits=32, epochs=3, batch_size=64, n_neighbors=20).fit(X)
    >>> h.transform(X).shape, len(h.loss_)
    ((300, 4), 4)
    """

    _NAME = "trained"
    _FORMAT = "medhash.hashers.TrainedKernelHash"
    _PARAMS = ("n_bits", "gamma", "seed", "n_pairs", "epochs", "lr", "batch_size", "n_neighbors",
               "rank_weight", "alpha", "max_samples")
    _FITTED = ("gamma_", "weights_", "offset_", "threshold_", "loss_", "train_loss_", "fit_seconds_",
               "n_features_in_")
    _DESCRIBE = ("gamma_", "n_features_in_", "initial_loss", "final_loss", "fit_seconds_")
    _BETA = 50.0
    _MONITOR_BATCHES = 4

    def __init__(self, n_bits: int = 256, gamma: float | str = "auto", seed: int = 0, n_pairs: int = 2000,
                 epochs: int = 10, lr: float = 0.01, batch_size: int = 256, n_neighbors: int = 100,
                 rank_weight: float = 1.0, alpha: float = 2.0, max_samples: int = 20000):
        self.n_bits = n_bits
        self.gamma = gamma
        self.seed = seed
        self.n_pairs = n_pairs
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.n_neighbors = n_neighbors
        self.rank_weight = rank_weight
        self.alpha = alpha
        self.max_samples = max_samples

    @property
    def initial_loss(self) -> float:
        """``loss_[0]``: the loss of the starting KernelLSH draws (only once fitted)."""
        if not hasattr(self, "loss_"):
            raise AttributeError("initial_loss")
        return float(self.loss_[0])

    @property
    def final_loss(self) -> float:
        """``loss_[-1]``: the loss after training (only once fitted)."""
        if not hasattr(self, "loss_"):
            raise AttributeError("final_loss")
        return float(self.loss_[-1])

    @staticmethod
    def _check_real(name: str, value, low: float, low_open: bool) -> float:
        ok = (isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, (bool, np.bool_))
              and math.isfinite(float(value)) and (float(value) > low if low_open else float(value) >= low))
        if not ok:
            raise ValueError(f"{name} must be a finite number {'>' if low_open else '>='} {low}, got {value!r}")
        return float(value)

    def fit(self, X) -> "TrainedKernelHash":
        """Draw the starting KernelLSH from ``X`` and train its projections and phases on ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training features (finite); at least 2 rows (``n_neighbors`` is capped at
            ``n_samples - 1``).

        Returns
        -------
        self : TrainedKernelHash
        """
        t_start = time.perf_counter()
        n_bits = _check_int("n_bits", self.n_bits, 1, MAX_BITS)
        _check_gamma(self.gamma, allow_auto=True)
        seed = _check_int("seed", self.seed, 0)
        epochs = _check_int("epochs", self.epochs, 0)
        lr = self._check_real("lr", self.lr, 0.0, low_open=True)
        batch_size = _check_int("batch_size", self.batch_size, 1)
        n_neighbors = _check_int("n_neighbors", self.n_neighbors, 2)
        rank_weight = self._check_real("rank_weight", self.rank_weight, 0.0, low_open=False)
        alpha = self._check_real("alpha", self.alpha, 0.0, low_open=True)
        max_samples = _check_int("max_samples", self.max_samples, 2)
        X = _check_features(X, "TrainedKernelHash.fit")
        base = KernelLSH(n_bits=n_bits, gamma=self.gamma, seed=seed, n_pairs=self.n_pairs).fit(X)
        gamma_ = base.gamma_
        weights, offset = base.random_weights_, base.random_offset_
        loss, train_loss = [], []
        if epochs > 0:
            if X.shape[0] < 3:
                raise ValueError(f"TrainedKernelHash.fit: training needs at least 3 rows of X, got {X.shape[0]}; "
                                 "pass epochs=0 for the plain KernelLSH draws")
            weights, offset, loss, train_loss = self._train(
                X, base, epochs, lr, batch_size, n_neighbors, rank_weight, alpha, max_samples, seed)
        self.gamma_ = float(gamma_)
        self.weights_ = np.asarray(weights, dtype=np.float64)
        self.offset_ = np.asarray(offset, dtype=np.float64)
        self.threshold_ = base.threshold_
        self.loss_ = loss
        self.train_loss_ = train_loss
        self.n_features_in_ = int(X.shape[1])
        self.fit_seconds_ = time.perf_counter() - t_start
        log.debug("TrainedKernelHash fitted: %d bits, %d features, gamma_=%.6g, loss %s, %.1f s", n_bits,
                  X.shape[1], gamma_, f"{loss[0]:.5g} -> {loss[-1]:.5g}" if loss else "(not trained)",
                  self.fit_seconds_)
        return self

    @staticmethod
    def _knn(X: np.ndarray, k: int) -> np.ndarray:
        """(n, k) indices of each row's k Euclidean nearest other rows, nearest first (ties by index)."""
        n = X.shape[0]
        sq = np.einsum("ij,ij->i", X, X)
        out = np.empty((n, k), dtype=np.int64)
        step = max(1, _CHUNK_ELEMENTS // max(1, n))
        for s in range(0, n, step):
            D = sq[s:s + step, None] + sq[None, :] - 2.0 * (X[s:s + step] @ X.T)
            D[np.arange(D.shape[0]), np.arange(s, s + D.shape[0])] = np.inf
            part = np.argpartition(D, k - 1, axis=1)[:, :k]
            dp = np.take_along_axis(D, part, axis=1)
            order = np.lexsort((part, dp), axis=1)
            out[s:s + step] = np.take_along_axis(part, order, axis=1)
        return out

    def _train(self, X, base, epochs, lr, batch_size, n_neighbors, rank_weight, alpha, max_samples, seed):
        import torch  # a dependency of medhash.features; imported here so that hashing stays light

        rng = np.random.default_rng([seed, 5])
        n_all = X.shape[0]
        rows = np.sort(rng.choice(n_all, size=max_samples, replace=False)) if n_all > max_samples else np.arange(n_all)
        Xs = np.asarray(X[rows], dtype=np.float64)
        n = Xs.shape[0]
        k = min(n_neighbors, n - 1)
        nn = self._knn(Xs, k)
        gamma_ = base.gamma_
        sg = math.sqrt(gamma_)
        # tau(r) on a fine grid (the series is too costly per pair); beyond it tau = 4/pi^2 to 1e-30.
        grid = np.linspace(0.0, 12.0 / sg, 4097)
        table = expected_hamming_fraction(grid, gamma_)
        bs = min(batch_size, n)
        n_bits = base.random_weights_.shape[0]

        def draw_batch(anchors):
            m = len(anchors)
            rand = rng.integers(0, n, m)
            ranks = np.sort(rng.integers(0, k, (m, 2)), axis=1)
            ranks[:, 0] = np.minimum(ranks[:, 0], k - 2)
            ranks[:, 1] = np.maximum(ranks[:, 1], ranks[:, 0] + 1)
            items = np.concatenate([anchors, rand, nn[anchors, ranks[:, 0]], nn[anchors, ranks[:, 1]]])
            xb = Xs[items]
            sqb = np.einsum("ij,ij->i", xb, xb)
            d = np.sqrt(np.maximum(sqb[:, None] + sqb[None, :] - 2.0 * (xb @ xb.T), 0.0))
            tau = np.interp(d, grid, table, right=4.0 / np.pi ** 2)
            return (torch.from_numpy(xb.astype(np.float32)), torch.from_numpy(tau.astype(np.float32)), m)

        threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
        torch.set_num_threads(1)
        torch.use_deterministic_algorithms(True)
        try:
            W0 = torch.tensor(base.random_weights_ / sg, dtype=torch.float32, requires_grad=True)
            b = torch.tensor(base.random_offset_, dtype=torch.float32, requires_grad=True)
            t = torch.tensor(base.threshold_, dtype=torch.float32)
            opt = torch.optim.Adam([W0, b], lr=lr)
            beta = self._BETA

            def step_loss(xb, tau, m):
                c = torch.cos(sg * (xb @ W0.T) + b) + t
                u = torch.tanh(alpha * c)                            # relaxed bit in (-1, 1)
                H = (1.0 - (u @ u.T) / n_bits) * 0.5
                iu = torch.triu_indices(H.shape[0], H.shape[0], 1)
                fit = ((H - tau)[iu[0], iu[1]] ** 2).mean()
                if rank_weight == 0:
                    return fit
                ia = torch.arange(m)
                h_p, h_q = H[ia, 2 * m + ia], H[ia, 3 * m + ia]
                return fit + rank_weight * torch.nn.functional.softplus(beta * (h_p - h_q)).mean() / beta

            monitor = [draw_batch(rng.choice(n, size=bs, replace=False)) for _ in range(self._MONITOR_BATCHES)]

            def monitor_loss():
                with torch.no_grad():
                    return float(np.mean([step_loss(*mb).item() for mb in monitor]))

            loss = [monitor_loss()]
            train_loss = []
            for epoch in range(epochs):
                perm = rng.permutation(n)
                total, steps = 0.0, 0
                for s in range(0, n - bs + 1, bs):                     # whole batches only
                    value = step_loss(*draw_batch(perm[s:s + bs]))
                    opt.zero_grad()
                    value.backward()
                    opt.step()
                    total += value.item()
                    steps += 1
                train_loss.append(total / steps)
                loss.append(monitor_loss())
                log.debug("TrainedKernelHash epoch %d/%d: train %.6g, monitor %.6g", epoch + 1, epochs,
                          train_loss[-1], loss[-1])
            weights = W0.detach().double().numpy() * sg
            offset = b.detach().double().numpy()
        finally:
            torch.set_num_threads(threads)
            torch.use_deterministic_algorithms(deterministic)
        return weights, offset, loss, train_loss

    def _as_kernel_lsh(self) -> KernelLSH:
        h = KernelLSH(n_bits=self.weights_.shape[0], gamma=self.gamma_, seed=0)
        h.random_weights_, h.random_offset_, h.threshold_ = self.weights_, self.offset_, self.threshold_
        h.gamma_, h.n_features_in_ = self.gamma_, self.n_features_in_
        return h

    def transform(self, X) -> np.ndarray:
        """Binary codes of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features_in_)
            Finite features.

        Returns
        -------
        codes : ndarray of shape (n_samples, ceil(n_bits / 8)), uint8
            ``np.packbits`` of the bits ``cos(X @ weights_.T + offset_) + threshold_ > 0`` (computed
            by :meth:`KernelLSH.transform <medhash.hashing.kernel_lsh.KernelLSH.transform>`, so the arithmetic
            is the same); padding bits 0.
        """
        X = self._check_transform_input(X)
        return self._as_kernel_lsh().transform(X)


# ---------------------------------------------------------------------- registry
HASHERS: dict[str, type] = {"kernel-lsh": KernelLSH, "itq": ITQ, "pca-sign": PCASign, "trained": TrainedKernelHash}
"""The hashers by name, for :func:`make_hasher` and the command line."""

_BY_FORMAT = {_KERNEL_LSH_FORMAT: KernelLSH, ITQ._FORMAT: ITQ, PCASign._FORMAT: PCASign,
              TrainedKernelHash._FORMAT: TrainedKernelHash}


def make_hasher(name: str, n_bits: int, seed: int = 0, **params):
    """A new (unfitted) hasher of the registry.

    Parameters
    ----------
    name : str
        A key of :data:`HASHERS`: ``"kernel-lsh"``, ``"itq"``, ``"pca-sign"`` or ``"trained"``.
    n_bits : int
        Code length.
    seed : int, default=0
        Seed of the hasher's random draws.
    **params
        Further constructor arguments of that class (e.g. ``gamma``, ``n_iter``, ``epochs``).

    Raises
    ------
    ValueError
        Unknown name (the message lists the known ones), or a parameter the class does not take.

    Examples
    --------
    >>> from medhash.hashing.hashers import make_hasher
    >>> make_hasher("itq", 32, seed=1, n_iter=20)
    ITQ(n_bits=32, seed=1, n_iter=20)
    """
    if name not in HASHERS:
        raise ValueError(f"unknown hasher {name!r}; the hashers are: {', '.join(sorted(HASHERS))}")
    cls = HASHERS[name]
    known = set(cls().get_params())
    bad = sorted(set(params) - known)
    if bad:
        raise ValueError(f"hasher {name!r} ({cls.__name__}) takes no parameter {', '.join(map(repr, bad))}; "
                         f"its parameters are: {', '.join(sorted(known))}")
    return cls(n_bits=n_bits, seed=seed, **params)


def load_hasher(path):
    """Read any hasher saved by its ``save`` method (KernelLSH included), chosen by the file's format.

    Load only files you trust: pickle can run code while reading.

    Raises
    ------
    ModelMismatchError
        The file is not a saved hasher, is a hasher this medhash does not know, or has a format
        version it cannot read.
    """
    path = Path(path)
    payload = _read_payload(path, "hasher")
    fmt = payload["format"]
    cls = _BY_FORMAT.get(fmt)
    if cls is None:
        raise ModelMismatchError(f"{path}: not a hasher this medhash can read (format {fmt!r}; known: "
                                 f"{', '.join(sorted(_BY_FORMAT))})")
    if cls is KernelLSH:
        if payload["version"] != _KERNEL_LSH_VERSION:
            raise ModelMismatchError(f"{path}: KernelLSH file format version {payload['version']!r} cannot be "
                                     f"read by this medhash (it reads version {_KERNEL_LSH_VERSION}); fit the "
                                     "hasher again")
        return KernelLSH.load(path)
    return cls._from_payload(path, payload)


def describe_hasher(hasher) -> dict:
    """A JSON-able summary of any hasher: ``hasher.describe()``, or the same fields for KernelLSH.

    Returns
    -------
    dict
        ``name`` (registry key), ``class``, ``params``, ``fitted`` and key fitted scalars
        (``gamma_``, ``n_features_in_``, ...).
    """
    if isinstance(hasher, KernelLSH):
        out = {"name": "kernel-lsh", "class": "KernelLSH", "params": dict(hasher.get_params()),
               "fitted": hasattr(hasher, "random_weights_")}
        for k in ("gamma_", "n_features_in_"):
            if hasattr(hasher, k):
                out[k] = getattr(hasher, k)
        return out
    if not hasattr(hasher, "describe"):
        raise TypeError(f"not a medhash hasher: {type(hasher).__name__}")
    return hasher.describe()
