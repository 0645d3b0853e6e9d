"""The one :class:`Hasher` base class every hasher subclasses, and the argument checks they share.

A hasher follows the scikit-learn estimator contract: the constructor only stores its keyword
arguments (listed in ``_PARAMS``), ``fit(X)`` validates them and learns attributes ending in ``_``
(including ``n_features_in_``), ``transform(X)`` returns packed codes of shape
``(n, ceil(n_bits / 8))``, ``uint8``, in :func:`numpy.packbits` order (bit k of a code is the
most-significant-bit-first bit k of its row; padding bits 0). The base gives every hasher its
``get_params``, ``repr``, ``fit_transform``, ``describe`` and ``save`` / ``load``: a pickle of the
payload ``{"format", "version", "params", "fitted"}`` written through
:func:`medhash.store.durable.write_pickle_atomic` (fsynced, atomic).

To add a hasher: subclass :class:`Hasher`, set ``_NAME`` (registry name), ``_FORMAT`` (the payload's
``"format"``; never change it once files exist), ``_PARAMS``, ``_FITTED`` and ``_DESCRIBE``, write
``__init__`` (store the arguments), ``_fit`` and ``_codes``, and list the class in
:data:`medhash.hashing.registry.HASHERS`.
"""
from __future__ import annotations

import math
import numbers
import pickle
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from ..errors import ModelMismatchError, NotFittedError
from ..store.durable import write_pickle_atomic

__all__ = ["FORMAT_VERSION", "MAX_BITS", "Hasher", "check_features", "check_gamma", "check_int", "check_real",
           "read_payload"]

MAX_BITS = 16384
"""Largest code length (bits) a hasher accepts."""

FORMAT_VERSION = 1
"""Version of the file layout written by :meth:`Hasher.save` (the payload's ``"version"``)."""

CHUNK_ELEMENTS = 1 << 22
"""Elements of a work buffer (32 MiB of float64) when projecting rows or computing pair distances."""


# ---------------------------------------------------------------------- argument checks
def check_int(name: str, value, low: int, high: int | None = None) -> int:
    """``value`` as an int in [low, high]; bool and non-integral numbers are refused (ValueError)."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
    if ok:
        value = int(value)
        ok = value >= low and (high is None or value <= high)
    if not ok:
        rule = f"an integer in [{low}, {high}]" if high is not None else f"an integer >= {low}"
        raise ValueError(f"{name} must be {rule}, got {value!r}")
    return value


def check_real(name: str, value, low: float, low_open: bool) -> float:
    """``value`` as a finite float ``> low`` (``low_open``) or ``>= low``; bool is refused (ValueError)."""
    ok = (isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, (bool, np.bool_))
          and math.isfinite(float(value)) and (float(value) > low if low_open else float(value) >= low))
    if not ok:
        raise ValueError(f"{name} must be a finite number {'>' if low_open else '>='} {low}, got {value!r}")
    return float(value)


def check_gamma(gamma, allow_auto: bool) -> float | str:
    """``gamma`` as a float (finite, > 0), or ``"auto"`` where allowed (ValueError otherwise)."""
    if allow_auto and isinstance(gamma, str) and gamma == "auto":
        return "auto"
    if (isinstance(gamma, numbers.Real) and not isinstance(gamma, (bool, np.bool_))
            and math.isfinite(float(gamma)) and float(gamma) > 0):
        return float(gamma)
    rule = "'auto' or a finite number > 0" if allow_auto else "a finite number > 0"
    raise ValueError(f"gamma must be {rule}, got {gamma!r}")


def check_features(X, what: str) -> np.ndarray:
    """``X`` as a 2-D real array (n_samples, n_features) with finite values; the dtype is kept when
    already float or integer. ``what`` (e.g. ``"ITQ.fit"``) starts the messages."""
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


def read_payload(path: Path, what: str) -> dict:
    """The unpickled payload dict of a saved hasher at ``path``.

    Raises
    ------
    ModelMismatchError
        ``path`` is not a pickle, or not a dict with ``format``, ``version``, ``params`` and
        ``fitted`` (the message calls it "not a saved ``what``").
    """
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


# ---------------------------------------------------------------------- the base class
class Hasher(ABC):
    """Base of every hasher: parameters, repr, ``fit_transform``, input checks, describe, save and load.

    Subclasses set the class attributes below, store their constructor arguments and implement
    ``_fit`` (called by :meth:`fit`) and ``_codes`` (called by :meth:`transform` with checked features).

    Attributes
    ----------
    _NAME : str
        Registry name (``"kernel-lsh"``, ``"itq"``, ...).
    _FORMAT : str
        The ``"format"`` string of saved files (fixed forever: archives hold such files).
    _PARAMS : tuple of str
        Constructor arguments, in order (what :meth:`get_params` returns and ``save`` keeps).
    _FITTED : tuple of str
        Attributes learned by ``fit`` that ``save`` keeps.
    _DESCRIBE : tuple of str
        Fitted scalars (attributes or properties) that :meth:`describe` shows.
    """

    _NAME: str = ""
    _FORMAT: str = ""
    _PARAMS: tuple = ()
    _FITTED: tuple = ()
    _DESCRIBE: tuple = ()

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    def get_params(self) -> dict:
        """The constructor arguments, as given."""
        return {k: getattr(self, k) for k in self._PARAMS}

    def fit(self, X) -> "Hasher":
        """Learn the hash functions from ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training features (finite); what each hasher needs of them (rows, at most how many bits)
            is in its class description.

        Returns
        -------
        self : the fitted hasher.
        """
        self._fit(X)
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
            ``np.packbits`` of the bits along each row (bit k = MSB-first bit k; padding bits 0); each
            hasher's bit is given in its class description.
        """
        return self._codes(self._check_transform_input(X))

    @abstractmethod
    def _fit(self, X) -> None:
        """Check the parameters and ``X`` and set the fitted attributes (those ending in ``_``)."""

    @abstractmethod
    def _codes(self, X: np.ndarray) -> np.ndarray:
        """Packed codes of checked features ``X`` (n_samples, n_features_in_)."""

    def _fitted(self, attr: str, name: str):
        """The fitted attribute ``attr``; AttributeError(``name``) before ``fit`` (for properties)."""
        if not hasattr(self, attr):
            raise AttributeError(name)
        return getattr(self, attr)

    def fit_transform(self, X) -> np.ndarray:
        """``fit(X)`` then ``transform(X)``."""
        return self.fit(X).transform(X)

    def _check_fitted(self) -> None:
        if not hasattr(self, "n_features_in_"):
            raise NotFittedError(f"This {type(self).__name__} instance is not fitted yet; "
                                 "call fit(X) before transform(X)")

    def _check_transform_input(self, X) -> np.ndarray:
        """``X`` checked for ``transform``: fitted, finite, 2-D, ``n_features_in_`` columns."""
        self._check_fitted()
        what = f"{type(self).__name__}.transform"
        X = check_features(X, what)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"{what}: X has {X.shape[1]} features, but this {type(self).__name__} was "
                             f"fitted with {self.n_features_in_} features")
        return X

    def describe(self) -> dict:
        """A JSON-able summary: ``name``, ``class``, ``params``, ``fitted`` and, when fitted, the
        scalars named in ``_DESCRIBE``."""
        out = {"name": self._NAME, "class": type(self).__name__, "params": dict(self.get_params()),
               "fitted": hasattr(self, "n_features_in_")}
        for k in self._DESCRIBE:
            if hasattr(self, k):
                v = getattr(self, k)
                out[k] = v.item() if isinstance(v, np.generic) else v
        return out

    # ------------------------------------------------------------------ persistence
    def save(self, path) -> None:
        """Write the hasher (parameters and, when fitted, what ``fit`` learned) to ``path`` (pickle).

        The file is written under a temporary name in the same folder, fsynced and renamed
        (:func:`~medhash.store.durable.write_pickle_atomic`), so a crash never leaves a
        half-written file under ``path``.
        """
        payload = {"format": self._FORMAT, "version": FORMAT_VERSION, "params": self.get_params(),
                   "fitted": {k: getattr(self, k) for k in self._FITTED if hasattr(self, k)}}
        write_pickle_atomic(Path(path), payload)

    @classmethod
    def load(cls, path) -> "Hasher":
        """Read a hasher of this class written by :meth:`save`.

        Load only files you trust: pickle can run code while reading.

        Raises
        ------
        ModelMismatchError
            The file is not a saved hasher of this class, or has a format version this medhash
            cannot read.
        """
        path = Path(path)
        return cls.from_payload(path, read_payload(path, cls.__name__))

    @classmethod
    def from_payload(cls, path: Path, payload: dict) -> "Hasher":
        """The hasher of a payload read from ``path`` (:func:`read_payload`), checked against this class."""
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
