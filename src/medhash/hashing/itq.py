"""Iterative quantisation (:class:`ITQ`, Gong & Lazebnik): PCA, then a learned rotation."""
from __future__ import annotations

import logging

import numpy as np

from .base import Hasher, check_int
from .codes import packed
from .pca import pca, pca_fit_input, project

log = logging.getLogger(__name__)

__all__ = ["ITQ"]


class ITQ(Hasher):
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
    >>> from medhash.hashing import ITQ
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
        return float(self._fitted("objective_", "final_objective")[-1])

    def _fit(self, X) -> None:
        """Learn the mean, principal directions and rotation from ``X``."""
        n_bits, seed, X = pca_fit_input(self, X, "ITQ.fit")
        n_iter = check_int("n_iter", self.n_iter, 0)
        n, d = X.shape
        mean, comps, _ = pca(X, n_bits)
        V = project(X, mean, comps.T)                                  # (n, n_bits)
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

    def _codes(self, X: np.ndarray) -> np.ndarray:
        """The bits ``(X - mean_) @ components_.T @ rotation_ >= 0``, packed."""
        return packed(project(X, self.mean_, self.components_.T @ self.rotation_) >= 0)
