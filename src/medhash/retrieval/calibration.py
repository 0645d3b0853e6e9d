"""How similar is similar: an index's distribution of random-pair Hamming distances, and the verdict.

A Hamming distance alone says little (31 of 256 bits: near or not?). Each index has a *reference*:
the Hamming distances of ``REFERENCE_PAIRS`` random pairs of items of different archive patients
(seeded, so the same index gives the same reference on any machine), and the *nearest-neighbour
null*: for a seeded sample of up to ``NN_SAMPLE`` items, the distance to the nearest item of
another patient. A result's ``percentile`` is the percentage of reference distances ``<=`` its
Hamming distance (0: closer than every random pair; 50: a typical random pair).

The verdict (``"no similar slice"``) is given when the best result's percentile is at least
:data:`VERDICT_PERCENTILE` (10): it is then no closer than the closest tenth of random pairs of
different patients. The threshold was chosen on data (docs/search.md, "How similar is similar"):
the nearest other-patient slice of an archive slice lies below it for 97.5-99.6 % of slices (real
neighbours do not get the verdict), an unrelated image (a uniform water image, a chest phantom in
a head-and-neck archive) lies above (21-59). A patient search applies the same threshold to the
median percentile of the matched slices of its best patient (:func:`patient_verdict_text`).

The reference is computed when an index is built or extended (:func:`write_calibration`, file
``calibration.json`` in the index folder, written before the manifest); for an index without it (or
one extended by an older version) :func:`calibration_of` computes it on first use, deterministically,
and keeps it for the process.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np

from ..store.durable import write_json_atomic
from .engines import FlatEngine

CALIBRATION_FILE = "calibration.json"
REFERENCE_PAIRS = 20_000
"""Random pairs of items of different patients in the reference."""
NN_SAMPLE = 2_000
"""Items whose nearest other-patient distance forms the nearest-neighbour null."""
SEED = 0
VERDICT_PERCENTILE = 10.0
"""The best result's percentile from which the verdict is "no similar slice" (see the module docstring)."""
FORMAT = 1

_cache: dict[tuple, "Calibration"] = {}
_lock = threading.Lock()


class Calibration:
    """The reference distances of an index, as histograms over Hamming distance.

    Parameters
    ----------
    data : the dict of ``calibration.json``: ``items``, ``n_bits``, ``seed``, ``random`` and ``nn``
        (each ``{"distances": [...], "counts": [...]}``, distances increasing).
    """

    def __init__(self, data: dict) -> None:
        self.data = data
        self.n_bits = int(data["n_bits"])
        self.items = int(data["items"])
        self._random = _cumulative(data["random"], self.n_bits)
        self._nn = _cumulative(data["nn"], self.n_bits)
        self.reference_pairs = int(self._random[-1])
        self._quantiles = {"reference_pairs": self.reference_pairs, "random_median": self.random_quantile(50),
                           "random_p05": self.random_quantile(5), "random_p01": self.random_quantile(1),
                           "nn_p99": self.nn_quantile(99)}

    def percentile(self, hamming) -> np.ndarray:
        """Percentage (float64, the shape of ``hamming``) of reference distances <= each distance;
        NaN when the index has no reference (fewer than two items)."""
        h = np.clip(np.asarray(hamming, dtype=np.int64), 0, self.n_bits)
        if not self.reference_pairs:
            return np.full(h.shape, np.nan)
        return 100.0 * self._random[h] / self.reference_pairs

    def rounded_percentile(self, hamming) -> np.ndarray:
        """:meth:`percentile` rounded half up to 2 decimals in integer arithmetic (the same value on
        every machine: ``(20000 * count + N) // (2 N) / 100``); NaN without a reference."""
        h = np.clip(np.asarray(hamming, dtype=np.int64), 0, self.n_bits)
        n = self.reference_pairs
        if not n:
            return np.full(h.shape, np.nan)
        return ((20000 * self._random[h] + n) // (2 * n)) / 100.0

    def random_quantile(self, p: float) -> float | None:
        """The p-th percentile (0..100) of the random-pair distances (the smallest distance whose
        percentile reaches p), or None without a reference."""
        return _quantile(self._random, p)

    def nn_quantile(self, p: float) -> float | None:
        """The p-th percentile of the nearest other-patient distances, or None without them."""
        return _quantile(self._nn, p)

    def summary(self, best_hamming: int | None, what: str = "slice") -> dict:
        """The top-level ``calibration`` dict of a search result whose best result has distance
        ``best_hamming`` (None: no result); ``what`` names the item ("slice") in the verdict."""
        best = None if best_hamming is None else float(self.percentile(best_hamming))
        verdict = "similar"
        if best is not None and np.isfinite(best) and best >= VERDICT_PERCENTILE:
            verdict = f"no similar {what}"
        return {**self._quantiles, "verdict": verdict,
                "verdict_text": verdict_text(verdict, best, best_hamming, self.n_bits, what)}


def verdict_text(verdict: str, best_pct: float | None, best_hamming, n_bits: int, what: str = "slice") -> str:
    """The plain sentence beside a verdict."""
    if best_pct is None or not np.isfinite(best_pct):
        return "no reference distances (the index holds fewer than two slices): similarity not calibrated"
    where = (f"Hamming {best_hamming} of {n_bits} bits; {best_pct:.1f}% of random pairs of different patients are "
             f"as close or closer")
    if verdict == "similar":
        return f"the best match is closer than random pairs of different patients ({where})"
    return (f"no similar {what} in this archive: the best match is no closer than random pairs of different "
            f"patients ({where}; for a similar {what}, under {VERDICT_PERCENTILE:g}%)")


def patient_verdict_text(best: dict | None) -> dict:
    """``verdict`` and ``verdict_text`` of a patient search, from its best result by absolute score
    (a result dict with ``patient_id``, ``absolute_score`` and ``pairs`` carrying ``percentile``; None
    without a reference). "no similar patient" when the median percentile of that patient's matched
    slice pairs is at least :data:`VERDICT_PERCENTILE` (or it has none): most of its slices are then no
    closer than random pairs of different patients."""
    if best is None:
        return {"verdict": "similar", "verdict_text": "no reference distances: similarity not calibrated"}
    pct = [p["percentile"] for p in best["pairs"] if p.get("percentile") is not None]
    med = float(np.median(pct)) if pct else 100.0
    what = (f"{best['patient_id']}, absolute score {best['absolute_score']:.3f}: its matched slices' median "
            f"percentile among random pairs of different patients is {med:.1f}")
    if med < VERDICT_PERCENTILE:
        return {"verdict": "similar", "verdict_text": f"the best patient is closer than random pairs ({what})"}
    return {"verdict": "no similar patient",
            "verdict_text": f"no similar patient in this archive: the best patient's slices are no closer than random "
                            f"pairs ({what}; a similar patient's is below {VERDICT_PERCENTILE:g})"}


def _cumulative(hist: dict, n_bits: int) -> np.ndarray:
    """(n_bits + 1,) int64: number of distances <= d, for d = 0..n_bits."""
    counts = np.zeros(n_bits + 1, dtype=np.int64)
    d = np.asarray(hist["distances"], dtype=np.int64)
    if len(d):
        np.add.at(counts, np.clip(d, 0, n_bits), np.asarray(hist["counts"], dtype=np.int64))
    return np.cumsum(counts)


def _quantile(cum: np.ndarray, p: float) -> float | None:
    if not cum[-1]:
        return None
    return float(np.searchsorted(cum, p / 100.0 * cum[-1], side="left"))


def _histogram(distances: np.ndarray) -> dict:
    d, c = np.unique(np.asarray(distances, dtype=np.int64), return_counts=True)
    return {"distances": d.tolist(), "counts": c.tolist()}


def _popcount_rows(x: np.ndarray) -> np.ndarray:
    """(n,) int64 number of set bits of each row of an (n, b) uint8 array."""
    return np.bitwise_count(x).sum(axis=1, dtype=np.int64)


def random_pairs(patients: np.ndarray, n_pairs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random pairs (i, j) of positions of different patients (of distinct positions when
    every item is one patient's); (0,) arrays when there are fewer than two items."""
    n = len(patients)
    if n < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    rng = np.random.default_rng([seed, 16])
    several = len(np.unique(patients)) > 1
    got_i, got_j, have = [], [], 0
    while have < n_pairs:
        i = rng.integers(0, n, 2 * n_pairs)
        j = (i + rng.integers(1, n, 2 * n_pairs)) % n           # j != i
        keep = patients[i] != patients[j] if several else np.ones(len(i), bool)
        got_i.append(i[keep])
        got_j.append(j[keep])
        have += int(keep.sum())
    return np.concatenate(got_i)[:n_pairs], np.concatenate(got_j)[:n_pairs]


def nearest_other(codes: np.ndarray, patients: np.ndarray, sample: np.ndarray) -> np.ndarray:
    """(len(sample),) int64 Hamming distance of each sampled item to its nearest item of another
    patient (exact, faiss flat scan); empty when every item is one patient's."""
    _, inv, counts = np.unique(patients, return_inverse=True, return_counts=True)
    if len(counts) < 2 or not len(sample):
        return np.zeros(0, np.int64)
    engine = FlatEngine(codes)
    m = min(len(codes), int(counts.max()) + 1)       # one more than any patient has: another patient is in
    out = np.empty(len(sample), np.int64)
    for s in range(0, len(sample), 256):
        part = sample[s:s + 256]
        D, I = engine.search(np.ascontiguousarray(codes[part]), m)
        other = (I >= 0) & (inv[np.maximum(I, 0)] != inv[part][:, None])
        out[s:s + 256] = D[np.arange(len(part)), other.argmax(axis=1)]
    return out


def compute_calibration(codes: np.ndarray, patients: np.ndarray, n_bits: int, seed: int = SEED,
                        n_pairs: int = REFERENCE_PAIRS, nn_sample: int = NN_SAMPLE) -> dict:
    """The calibration dict (what ``calibration.json`` holds) of an index's codes.

    Parameters
    ----------
    codes : (n, code_bytes) uint8 packed codes of the items.
    patients : (n,) patient id (any comparable values) of each item.
    n_bits : code length; seed : seed of the pairs and of the sample.
    """
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    patients = np.asarray(patients)
    i, j = random_pairs(patients, n_pairs, seed)
    ham = np.concatenate([_popcount_rows(codes[i[s:s + 8192]] ^ codes[j[s:s + 8192]])
                          for s in range(0, len(i), 8192)] or [np.zeros(0, np.int64)])
    n = len(codes)
    sample = np.sort(np.random.default_rng([seed, 17]).choice(n, min(n, nn_sample), replace=False)) if n else \
        np.zeros(0, np.int64)
    nn = nearest_other(codes, patients, sample)
    return {"format": FORMAT, "items": int(n), "n_bits": int(n_bits), "seed": int(seed),
            "reference_pairs": int(len(ham)), "nn_sampled": int(len(nn)),
            "random": _histogram(ham), "nn": _histogram(nn)}


def write_calibration(path: Path, codes: np.ndarray, patients: np.ndarray, n_bits: int) -> dict:
    """Compute the calibration of an index's items and write ``path/calibration.json`` atomically."""
    data = compute_calibration(codes, patients, n_bits)
    write_json_atomic(Path(path) / CALIBRATION_FILE, data)
    return data


def calibration_of(idx) -> Calibration:
    """The :class:`Calibration` of an open :class:`~medhash.retrieval.index.Index`: its
    ``calibration.json`` when it matches the index's items, else computed (deterministic, never
    written: a search does not write into the archive) and kept for the process (and on the Index)."""
    mine = getattr(idx, "_calibration", None)
    if mine is not None:
        return mine
    key = (str(idx.path), len(idx), idx.n_bits, idx.manifest.get("updated"))
    with _lock:
        if key in _cache:
            idx._calibration = _cache[key]
            return _cache[key]
        data = _read(Path(idx.path) / CALIBRATION_FILE)
        if data is None or data.get("items") != len(idx) or data.get("n_bits") != idx.n_bits \
                or data.get("format") != FORMAT:
            pids = idx.archive.table()["patient_id"][idx.rows].astype(str)
            data = compute_calibration(np.asarray(idx.codes), pids, idx.n_bits)
        _cache[key] = idx._calibration = Calibration(data)
        return _cache[key]


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def expected_hamming(idx, euclidean) -> np.ndarray | None:
    """``n_bits * expected_hamming_fraction(euclidean, gamma_)`` for a kernel-LSH index (float64,
    the shape of ``euclidean``), else None (see :func:`expected_fraction`)."""
    if not idx.kernel_lsh:
        return None
    return idx.n_bits * expected_fraction(euclidean, float(idx.hasher.gamma_))


_N = np.arange(16, dtype=np.float64)
_DAWSON_COEF = np.cumprod(np.concatenate([[1.0], -2.0 / (2.0 * _N[1:] + 1.0)]))
"""Taylor coefficients of Dawson's integral: F(x) = x sum_n c_n x^(2n), c_n = (-2)^n / (2n+1)!!."""
_M = np.arange(1, 41, dtype=np.float64)
_SERIES_COEF = 1.0 / (4.0 * _M * _M - 1.0)


def expected_fraction(r, gamma: float) -> np.ndarray:
    """:func:`medhash.hashing.expected_hamming_fraction` (Raginsky & Lazebnik, Lemma 2.3) in numpy alone.

    The same closed form, but Dawson's integral ``F(x)`` (``x = sqrt(gamma) r / (2 sqrt 2) < 0.354``
    below ``sqrt(gamma) r = 1``) is summed from its Taylor series ``sum_n (-2)^n x^(2n+1) / (2n+1)!!``
    (16 terms: each term is at most 1/12 of the one before) instead of being imported from
    scipy.special, which an archive-slice search must not load (start-up). Agrees with the hashing
    function to 1e-12 (tests/retrieval/test_calibration.py).

    Parameters
    ----------
    r : array-like of Euclidean distances >= 0 of combined features; gamma : the hasher's ``gamma_``.
    """
    s = np.sqrt(gamma) * np.asarray(r, dtype=np.float64)
    out = np.empty_like(s)
    small = s < 1.0
    x = s[small] / (2.0 * np.sqrt(2.0))
    out[small] = 4.0 / np.pi ** 1.5 * x * (np.power.outer(x * x, _N) @ _DAWSON_COEF)
    sb = s[~small]
    with np.errstate(under="ignore"):                # s >= 1: term 40 is below exp(-800)
        series = np.exp(-0.5 * np.multiply.outer(sb * sb, _M * _M)) @ _SERIES_COEF
    out[~small] = 4.0 / np.pi ** 2 - 8.0 / np.pi ** 2 * series
    return out
