"""A named Hamming index of an archive: :class:`Index` opens one and searches it; :class:`Hit` is one result.

Layout of ``ARCHIVE/indexes/NAME/`` (paths from :mod:`medhash.store.layout`)::

    manifest.json   what made the index: channel(s), models (name + sha256), block scales and weights,
                    hasher parameters and gamma_, bits, seed, item count, engine, library versions
    hasher.pkl      the fitted hasher (its random draws)
    codes.u8        (items, ceil(bits / 8)) uint8, np.packbits order
    rows.i64        (items,) int64: the archive row of each item, increasing
    engine.faissbin the ivf / hnsw engine (approximate indexes only)

The item count in the manifest is the truth: codes and rows are appended first, the manifest is
replaced last (atomically), so a crash leaves the previous index readable. Indexes are created and
extended by :func:`medhash.retrieval.build.build_index`.

Searching ranks by Hamming distance through the index's engine (:mod:`.engines`): exact with the
``flat`` engine (codes padded with zero bits to whole bytes, which never changes a distance),
approximate with ``ivf`` / ``hnsw``. Equal Hamming distances are ordered by the Euclidean
distance of the (combined) features, then by archive row, the smaller first
(:func:`medhash.retrieval.topk.hamming_topk`; only the tied candidates' features are read), so an
exact copy of the query comes first. ``rerank=N`` re-orders the Hamming top-N by the exact
Euclidean distance of the (combined) features. For kernel-LSH indexes every hit carries its
Euclidean distance (for the closed-form expected Hamming distance, :mod:`.calibration`).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import numpy as np

from .. import features  # torch-free to import: its torch names load on first use
from ..errors import IndexConfigError, ModelMismatchError, NotFoundError
from ..hashing import describe_hasher, load_hasher
from ..store import layout
from .blocks import archive_combined_features, combine
from .engines import open_engine
from .topk import hamming_topk

log = logging.getLogger(__name__)

HASHER_FILE = "hasher.pkl"
CODES_FILE = "codes.u8"
ROWS_FILE = "rows.i64"


@dataclass
class Hit:
    """One search result: an index item with its distances (``euclidean``: of the combined features,
    set when re-ranked and for kernel-LSH indexes, else None)."""

    item: int
    row: int
    hamming: int
    euclidean: float | None = None


def list_indexes(archive) -> list[str]:
    """Names of the indexes in an archive, sorted."""
    root = layout.indexes_dir(archive)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / layout.MANIFEST).is_file())


def index_path(archive, name: str):
    """``ARCHIVE/indexes/NAME`` (the name checked by :func:`medhash.store.layout.check_name`)."""
    return layout.index_dir(archive, name)


class Index:
    """A named Hamming index of an archive (see the module docstring for the files).

    ``Index(archive, name)`` opens it, checks that the archive's models are still the ones it was
    built with, and opens its engine (for ``flat``: the codes loaded into faiss) once.
    """

    def __init__(self, archive, name: str) -> None:
        self.archive = archive
        self.name = name
        self.path = index_path(archive, name)
        mpath = self.path / layout.MANIFEST
        if not mpath.is_file():
            names = list_indexes(archive)
            hint = f"indexes in this archive: {', '.join(names)}" if names else \
                "this archive has no index yet; build one first"
            raise NotFoundError(f"no index named {name!r} in {archive.path}; {hint}", param="index")
        self.manifest = json.loads(mpath.read_text())
        self._check_models()
        self.hasher = load_hasher(self.path / HASHER_FILE)
        want = (self.manifest.get("hasher") or {}).get("class", "KernelLSH")
        if type(self.hasher).__name__ != want:
            raise ModelMismatchError(f"index {name!r}: {HASHER_FILE} holds a {type(self.hasher).__name__} but the "
                                     f"manifest says {want}; rebuild the index", param="rebuild")
        self.hasher_info = describe_hasher(self.hasher)
        n, nbytes = int(self.manifest["items"]), int(self.manifest["code_bytes"])
        # memory-mapped: the engine holds its own copy, the file pages can be dropped by the OS
        self.codes = np.memmap(self.path / CODES_FILE, dtype=np.uint8, mode="r", shape=(n, nbytes)) if n * nbytes \
            else np.zeros((n, nbytes), dtype=np.uint8)
        self.rows = np.fromfile(self.path / ROWS_FILE, dtype=np.int64, count=n)
        self.index_type = self.manifest.get("index_type", "flat")
        self.engine = open_engine(self.path, self.manifest, self.codes, self.rows)
        dead = archive.superseded_rows()
        # (items,) bool: items whose rows a completed series superseded since the index was built
        # (medhash.store.series): never returned; the next index update drops them
        self.superseded = np.isin(self.rows, dead) if len(dead) else np.zeros(n, dtype=bool)
        if self.superseded.any():
            log.warning("index %r holds %d slice(s) superseded by completed series since it was built: they are "
                        "left out of its answers; update the index to drop them", name, int(self.superseded.sum()))
        self._features = None
        self._item_caches: dict[str, np.ndarray] | None = None
        self._calibration = None   # set by medhash.retrieval.calibration.calibration_of on first use
        self._models: dict[str, tuple] = {}
        self._patient_codes: tuple[np.ndarray, dict[str, int]] | None = None

    @property
    def channel(self) -> str:
        return self.manifest["channel"]

    @property
    def n_bits(self) -> int:
        return int(self.manifest["n_bits"])

    def __len__(self) -> int:
        return len(self.rows)

    def _check_models(self) -> None:
        current = {m["name"]: m.get("sha256") for m in features.list_models(self.archive)}
        for ch, m in self.manifest["models"].items():
            if m["name"] not in current:
                raise ModelMismatchError(f"index {self.name!r} was built with the {ch} model {m['name']!r}, which is "
                                         f"no longer in the archive; rebuild the index", param="rebuild")
            if current[m["name"]] != m["sha256"]:
                raise ModelMismatchError(
                    f"index {self.name!r} was built with {ch} model {m['name']!r} sha256 {m['sha256'][:12]}…, but "
                    f"the archive's model now has sha256 {str(current[m['name']])[:12]}… (trained again?); rebuild "
                    f"the index {self.name!r} ({self.channel}, {self.n_bits} bits)", param="rebuild")

    def features(self) -> np.ndarray:
        """(items, D) float32 combined features of the items (for re-ranking), loaded once."""
        if self._features is None:
            self._features = archive_combined_features(self.archive, self.manifest, self.rows)
        return self._features

    def features_of_rows(self, rows) -> np.ndarray:
        """(len(rows), D) combined features of archive rows (any rows, also ones not in the index).

        Read from the feature caches as they are: the models were checked when the index was opened.
        """
        rows = np.atleast_1d(np.asarray(rows, dtype=np.int64))
        blocks = {}
        for ch, m in self.manifest["models"].items():
            f = features.cached_features(self.archive, m["name"])
            if len(f) <= (rows.max() if len(rows) else -1):
                return archive_combined_features(self.archive, self.manifest, rows)  # cache behind: encode
            blocks[ch] = np.asarray(f[rows])
        return combine(blocks, self.manifest["scales"], self.manifest["weights"])

    def model(self, channel: str) -> tuple:
        """(torch module, config) of the index's model for ``channel``, loaded once per Index."""
        if channel not in self._models:
            self._models[channel] = features.load_model(self.archive, self.manifest["models"][channel]["name"])
        return self._models[channel]

    def patient_mask(self, patient_id: str) -> np.ndarray:
        """(items,) bool: the items of one patient (integer codes cached per Index)."""
        if self._patient_codes is None:
            pids = self.archive.table()["patient_id"][self.rows]
            names, codes = np.unique(pids.astype(str), return_inverse=True)
            self._patient_codes = (codes, {name: j for j, name in enumerate(names)})
        codes, lookup = self._patient_codes
        j = lookup.get(patient_id)
        return np.zeros(len(codes), dtype=bool) if j is None else codes == j

    def hash(self, features: np.ndarray) -> np.ndarray:
        """Packed codes (nq, code_bytes) uint8 of combined query features (nq, D), by the index's hasher."""
        return self.hasher.transform(features)

    def search(self, features: np.ndarray, k: int = 10, *, rerank: int = 0,
               exclude: list[np.ndarray] | None = None) -> list[list[Hit]]:
        """k nearest items of each query by Hamming distance (optionally re-ranked).

        Parameters
        ----------
        features : (nq, D) combined query features (see :func:`~medhash.retrieval.blocks.combine`).
        k : results per query (>= 1).
        rerank : 0 for pure Hamming; N >= k re-orders the Hamming top-N by Euclidean distance.
        exclude : per query, a bool mask over the items not to return (e.g. the query's patient).

        Returns
        -------
        list (per query) of lists of :class:`Hit`, nearest first.
        """
        if k < 1:
            raise IndexConfigError(f"k must be at least 1, not {k}", param="k")
        if rerank and rerank < k:
            raise IndexConfigError(f"the re-ranking depth {rerank} must be at least k = {k} (or 0 for none)",
                                   param="rerank")
        features = np.atleast_2d(np.asarray(features, dtype=np.float32))
        if self.superseded.any():
            exclude = [self.superseded | e for e in exclude] if exclude is not None else \
                [self.superseded] * len(features)
        codes = self.hash(features)
        D, I = hamming_topk(self.engine, codes, max(k, rerank), self.rows, exclude,
                            tiebreak=lambda q, items: self.euclidean(features[q], items))
        return [self._hits(features[q], I[q], D[q], k, rerank) for q in range(len(features))]

    def euclidean(self, feature: np.ndarray, items: np.ndarray) -> np.ndarray:
        """(len(items),) float64 Euclidean distances between one (D,) combined feature vector and
        the combined features of index items (positions), read from the feature caches."""
        rows = self.rows[np.asarray(items, dtype=np.int64)]
        if self._item_caches is None:     # the feature caches opened once per Index (1 ms a time)
            self._item_caches = {ch: np.asarray(features.cached_features(self.archive, m["name"]))
                                 for ch, m in self.manifest["models"].items()}   # plain views of the memmaps
        if len(rows) and all(len(c) > rows.max() for c in self._item_caches.values()):
            f = combine({ch: c[rows] for ch, c in self._item_caches.items()}, self.manifest["scales"],
                        self.manifest["weights"])
        else:
            f = self.features_of_rows(rows)
        return np.sqrt(np.sum((f.astype(np.float64) - feature) ** 2, axis=1))

    @property
    def kernel_lsh(self) -> bool:
        """Whether the hasher is :class:`~medhash.hashing.KernelLSH` (closed-form expected distances)."""
        return type(self.hasher).__name__ == "KernelLSH"

    def _hits(self, feature: np.ndarray, items: np.ndarray, ham: np.ndarray, k: int, rerank: int) -> list[Hit]:
        """The k hits of one query from its Hamming top list (re-ranked by Euclidean distance if asked)."""
        ok = items >= 0
        items, ham = items[ok], ham[ok]
        if not rerank:
            items, ham = items[:k], ham[:k]
            euc = self.euclidean(feature, items) if self.kernel_lsh and len(items) else [None] * len(items)
            return [Hit(int(i), int(self.rows[i]), int(h), None if e is None else float(e))
                    for i, h, e in zip(items, ham, euc)]
        diff = self.features()[items] - feature
        euc = np.sqrt(np.sum(diff.astype(np.float64) ** 2, axis=1))
        order = np.lexsort((self.rows[items], euc))[:k]
        return [Hit(int(items[j]), int(self.rows[items[j]]), int(ham[j]), float(euc[j])) for j in order]
