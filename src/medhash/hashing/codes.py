"""Packed binary codes: packing bits, unpacking them, and exact Hamming distances in numpy.

Codes are packed ``uint8`` arrays of shape ``(n, ceil(n_bits / 8))`` in :func:`numpy.packbits` order
(bit k of a code is the most-significant-bit-first bit k of the row); padding bits are 0, so they
never change a Hamming distance. faiss ``IndexBinaryFlat`` (dimension ``8 * n_bytes``) reads such
codes as they are.
"""
from __future__ import annotations

import numpy as np

from .base import MAX_BITS, check_int

__all__ = ["hamming_distances", "packed", "unpack"]


def packed(bits: np.ndarray) -> np.ndarray:
    """Pack bits: (n, n_bits) bool -> (n, ceil(n_bits / 8)) uint8, MSB-first, padding bits 0."""
    return np.packbits(bits, axis=1)


def _check_codes(name: str, codes) -> np.ndarray:
    codes = np.asarray(codes)
    if codes.dtype != np.uint8 or codes.ndim != 2:
        raise ValueError(f"{name} must be packed codes, a 2-D uint8 array (n, n_bytes); "
                         f"got dtype {codes.dtype}, shape {codes.shape}")
    return codes


def _popcount():
    """Bit count of every element of a uint64 array: ``np.bitwise_count`` (numpy >= 2), else a table."""
    popcount = getattr(np, "bitwise_count", None)
    if popcount is not None:
        return popcount
    table = np.array([bin(v).count("1") for v in range(256)], dtype=np.uint8)

    def by_table(x):
        return table[x.view(np.uint8)].reshape(*x.shape, 8).sum(axis=-1, dtype=np.uint8)
    return by_table


def hamming_distances(A, B) -> np.ndarray:
    """Hamming distances between every code of ``A`` and every code of ``B``.

    Parameters
    ----------
    A : ndarray of shape (n_a, n_bytes), uint8
    B : ndarray of shape (n_b, n_bytes), uint8
        Packed codes (e.g. from a hasher's ``transform``) of the same length.

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
    popcount = _popcount()
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
    n_bits = check_int("n_bits", n_bits, 1, MAX_BITS)
    if codes.shape[1] != (n_bits + 7) // 8:
        raise ValueError(f"codes of {n_bits} bits take {(n_bits + 7) // 8} bytes a row, got {codes.shape[1]}")
    return np.unpackbits(codes, axis=1, count=n_bits)
