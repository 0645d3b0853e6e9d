"""The hashers by name: :data:`HASHERS`, :func:`make_hasher`, :func:`load_hasher` and :func:`describe_hasher`.

=================  ==========================  ================================================
name               class                       bits
=================  ==========================  ================================================
``"kernel-lsh"``   :class:`KernelLSH`          random Fourier features, random thresholds
``"pca-sign"``     :class:`PCASign`            sign of the top principal components
``"itq"``          :class:`ITQ`                PCA + learned rotation (iterative quantisation)
``"trained"``      :class:`TrainedKernelHash`  kernel-LSH form, projections learned (torch)
=================  ==========================  ================================================

PCA-sign and ITQ give at most ``min(n_features, n_samples)`` bits; kernel LSH and the trained hash
give any number up to :data:`~medhash.hashing.base.MAX_BITS`.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import ModelMismatchError
from .base import Hasher, read_payload
from .itq import ITQ
from .kernel_lsh import KernelLSH
from .pca import PCASign
from .trained import TrainedKernelHash

__all__ = ["HASHERS", "describe_hasher", "load_hasher", "make_hasher"]

HASHERS: dict[str, type[Hasher]] = {"kernel-lsh": KernelLSH, "itq": ITQ, "pca-sign": PCASign,
                                    "trained": TrainedKernelHash}
"""The hashers by name, for :func:`make_hasher` and the command line."""

_BY_FORMAT = {cls._FORMAT: cls for cls in HASHERS.values()}

def make_hasher(name: str, n_bits: int, seed: int = 0, **params) -> Hasher:
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
    >>> from medhash.hashing import make_hasher
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


def load_hasher(path) -> Hasher:
    """Read any hasher saved by its ``save`` method, chosen by the file's ``"format"``.

    Load only files you trust: pickle can run code while reading.

    Raises
    ------
    ModelMismatchError
        The file is not a saved hasher, is a hasher this medhash does not know, or has a format
        version it cannot read.
    """
    path = Path(path)
    payload = read_payload(path, "hasher")
    fmt = payload["format"]
    cls = _BY_FORMAT.get(fmt)
    if cls is None:
        raise ModelMismatchError(f"{path}: not a hasher this medhash can read (format {fmt!r}; known: "
                                 f"{', '.join(sorted(_BY_FORMAT))})")
    return cls.from_payload(path, payload)


def describe_hasher(hasher) -> dict:
    """A JSON-able summary of any hasher (:meth:`Hasher.describe`).

    Returns
    -------
    dict
        ``name`` (registry key), ``class``, ``params``, ``fitted`` and key fitted scalars
        (``gamma_``, ``n_features_in_``, ...).

    Raises
    ------
    TypeError
        ``hasher`` is not a :class:`~medhash.hashing.base.Hasher`.
    """
    if not isinstance(hasher, Hasher):
        raise TypeError(f"not a medhash hasher: {type(hasher).__name__}")
    return hasher.describe()
