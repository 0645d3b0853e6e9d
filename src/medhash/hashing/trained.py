"""The trained kernel hash (:class:`TrainedKernelHash`): kernel-LSH form, projections and phases learned.

Training runs torch on one CPU thread with deterministic algorithms, inside
:func:`medhash.threads.torch_settings` (the caller's torch settings are restored afterwards). torch
is imported only inside the training code, so that importing :mod:`medhash.hashing` does not.
"""
from __future__ import annotations

import logging
import math
import time

import numpy as np

from ..threads import torch_settings
from .base import CHUNK_ELEMENTS, MAX_BITS, Hasher, check_features, check_gamma, check_int, check_real
from .kernel_lsh import KernelLSH, expected_hamming_fraction

log = logging.getLogger(__name__)

__all__ = ["TrainedKernelHash"]


class TrainedKernelHash(Hasher):
    """Kernel-LSH-form hash whose projections and phases are learned to keep neighbours.

    Bit k of x is, as in :class:`~medhash.hashing.KernelLSH`::

        h_k(x) = [cos(<w_k, x> + b_k) + t_k > 0],

    but ``w_k`` and ``b_k`` start from the KernelLSH draws of the same ``seed``, ``gamma`` and
    ``n_pairs`` and are then trained (torch, CPU, one thread); the thresholds ``t_k`` stay as drawn.
    With ``epochs=0`` the codes are exactly KernelLSH's.

    Parameters
    ----------
    n_bits : int, default=256
        Code length, 1 to :data:`~medhash.hashing.MAX_BITS`.
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
    >>> from medhash.hashing import TrainedKernelHash
    >>> from medhash.hashing import KernelLSH
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
        return float(self._fitted("loss_", "initial_loss")[0])

    @property
    def final_loss(self) -> float:
        """``loss_[-1]``: the loss after training (only once fitted)."""
        return float(self._fitted("loss_", "final_loss")[-1])

    def _fit(self, X) -> None:
        """Draw the starting KernelLSH from ``X`` (at least 2 rows; 3 to train) and train its projections and
        phases on ``X`` (``n_neighbors`` is capped at ``n_samples - 1``)."""
        t_start = time.perf_counter()
        n_bits = check_int("n_bits", self.n_bits, 1, MAX_BITS)
        check_gamma(self.gamma, allow_auto=True)
        seed = check_int("seed", self.seed, 0)
        epochs = check_int("epochs", self.epochs, 0)
        lr = check_real("lr", self.lr, 0.0, low_open=True)
        batch_size = check_int("batch_size", self.batch_size, 1)
        n_neighbors = check_int("n_neighbors", self.n_neighbors, 2)
        rank_weight = check_real("rank_weight", self.rank_weight, 0.0, low_open=False)
        alpha = check_real("alpha", self.alpha, 0.0, low_open=True)
        max_samples = check_int("max_samples", self.max_samples, 2)
        X = check_features(X, "TrainedKernelHash.fit")
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

    def _train(self, X, base, epochs, lr, batch_size, n_neighbors, rank_weight, alpha, max_samples, seed):
        """Train the projections and phases of ``base`` (a fitted KernelLSH) on ``X``; returns
        ``(weights, offset, loss, train_loss)`` (see the class Notes)."""
        # start-up: torch only for the trained hash (and medhash.threads imports it)
        import torch

        rng = np.random.default_rng([seed, 5])
        batches = _Batches(X, base.gamma_, n_neighbors, max_samples, rng)
        bs = min(batch_size, batches.n)
        with torch_settings(threads=1, deterministic=True):
            sg = math.sqrt(base.gamma_)
            W0 = torch.tensor(base.random_weights_ / sg, dtype=torch.float32, requires_grad=True)
            b = torch.tensor(base.random_offset_, dtype=torch.float32, requires_grad=True)
            t = torch.tensor(base.threshold_, dtype=torch.float32)
            opt = torch.optim.Adam([W0, b], lr=lr)
            step_loss = _relaxed_loss(W0, b, t, sg, alpha, rank_weight, self._BETA)
            monitor = [batches.draw(rng.choice(batches.n, size=bs, replace=False))
                       for _ in range(self._MONITOR_BATCHES)]

            def monitor_loss():
                with torch.no_grad():
                    return float(np.mean([step_loss(*mb).item() for mb in monitor]))

            loss = [monitor_loss()]
            train_loss = []
            for epoch in range(epochs):
                perm = rng.permutation(batches.n)
                total, steps = 0.0, 0
                for s in range(0, batches.n - bs + 1, bs):             # whole batches only
                    value = step_loss(*batches.draw(perm[s:s + bs]))
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
        return weights, offset, loss, train_loss

    def _as_kernel_lsh(self) -> KernelLSH:
        h = KernelLSH(n_bits=self.weights_.shape[0], gamma=self.gamma_, seed=0)
        h.random_weights_, h.random_offset_, h.threshold_ = self.weights_, self.offset_, self.threshold_
        h.gamma_, h.n_features_in_ = self.gamma_, self.n_features_in_
        return h

    def _codes(self, X: np.ndarray) -> np.ndarray:
        """The bits ``cos(X @ weights_.T + offset_) + threshold_ > 0``, packed, computed by
        :meth:`KernelLSH.transform <medhash.hashing.KernelLSH.transform>` (the same arithmetic)."""
        return self._as_kernel_lsh().transform(X)


# ---------------------------------------------------------------------- training pieces
def _knn(X: np.ndarray, k: int) -> np.ndarray:
    """(n, k) indices of each row's k Euclidean nearest other rows, nearest first (ties by index)."""
    n = X.shape[0]
    sq = np.einsum("ij,ij->i", X, X)
    out = np.empty((n, k), dtype=np.int64)
    step = max(1, CHUNK_ELEMENTS // max(1, n))
    for s in range(0, n, step):
        D = sq[s:s + step, None] + sq[None, :] - 2.0 * (X[s:s + step] @ X.T)
        D[np.arange(D.shape[0]), np.arange(s, s + D.shape[0])] = np.inf
        part = np.argpartition(D, k - 1, axis=1)[:, :k]
        dp = np.take_along_axis(D, part, axis=1)
        order = np.lexsort((part, dp), axis=1)
        out[s:s + step] = np.take_along_axis(part, order, axis=1)
    return out


class _Batches:
    """The training rows (at most ``max_samples`` of X, drawn with ``rng``), their k-NN lists, and the
    target ``tau(r)`` on a grid; :meth:`draw` makes one step's items and targets."""

    def __init__(self, X: np.ndarray, gamma_: float, n_neighbors: int, max_samples: int, rng) -> None:
        n_all = X.shape[0]
        rows = np.sort(rng.choice(n_all, size=max_samples, replace=False)) if n_all > max_samples else np.arange(n_all)
        self.X = np.asarray(X[rows], dtype=np.float64)
        self.n = self.X.shape[0]
        self.k = min(n_neighbors, self.n - 1)
        self.nn = _knn(self.X, self.k)
        self.rng = rng
        # tau(r) on a fine grid (the series is too costly per pair); beyond it tau = 4/pi^2 to 1e-30.
        self.grid = np.linspace(0.0, 12.0 / math.sqrt(gamma_), 4097)
        self.table = expected_hamming_fraction(self.grid, gamma_)

    def draw(self, anchors: np.ndarray):
        """(items (4m, d) float32 tensor, tau (4m, 4m) float32 tensor, m): the anchors, as many random
        rows, and for each anchor two of its k-NN at random ranks, nearer first."""
        import torch  # start-up: torch only for the trained hash

        rng, k, nn = self.rng, self.k, self.nn
        m = len(anchors)
        rand = rng.integers(0, self.n, m)
        ranks = np.sort(rng.integers(0, k, (m, 2)), axis=1)
        ranks[:, 0] = np.minimum(ranks[:, 0], k - 2)
        ranks[:, 1] = np.maximum(ranks[:, 1], ranks[:, 0] + 1)
        items = np.concatenate([anchors, rand, nn[anchors, ranks[:, 0]], nn[anchors, ranks[:, 1]]])
        xb = self.X[items]
        sqb = np.einsum("ij,ij->i", xb, xb)
        d = np.sqrt(np.maximum(sqb[:, None] + sqb[None, :] - 2.0 * (xb @ xb.T), 0.0))
        tau = np.interp(d, self.grid, self.table, right=4.0 / np.pi ** 2)
        return torch.from_numpy(xb.astype(np.float32)), torch.from_numpy(tau.astype(np.float32)), m


def _relaxed_loss(W0, b, t, sg: float, alpha: float, rank_weight: float, beta: float):
    """The step loss of the class Notes as a function of one batch ``(xb, tau, m)`` (torch tensors)."""
    import torch  # start-up: torch only for the trained hash

    n_bits = W0.shape[0]

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
    return step_loss
