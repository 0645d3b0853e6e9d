"""Binary codes of feature vectors: one :class:`Hasher` contract and four hash families.

:mod:`.base` (the :class:`Hasher` base class: parameters, fit/transform, save/load, describe),
:mod:`.codes` (packed codes, Hamming distances), :mod:`.kernel_lsh` (:class:`KernelLSH`, Raginsky &
Lazebnik), :mod:`.pca` (:class:`PCASign`), :mod:`.itq` (:class:`ITQ`), :mod:`.trained`
(:class:`TrainedKernelHash`, torch imported only when training) and :mod:`.registry` (the hashers by
name). Importing this package does not import torch.
"""
from .base import FORMAT_VERSION, MAX_BITS, Hasher
from .codes import hamming_distances, unpack
from .itq import ITQ
from .kernel_lsh import KernelLSH, expected_hamming_fraction
from .pca import PCASign
from .registry import HASHERS, describe_hasher, load_hasher, make_hasher
from .trained import TrainedKernelHash

__all__ = ["FORMAT_VERSION", "HASHERS", "ITQ", "MAX_BITS", "Hasher", "KernelLSH", "PCASign", "TrainedKernelHash",
           "describe_hasher", "expected_hamming_fraction", "hamming_distances", "load_hasher", "make_hasher",
           "unpack"]
