"""Hamming index over packed kernel-LSH codes, stored in the archive under a name.

Layout of ``ARCHIVE/indexes/NAME/``::

    manifest.json   what made the index: channel(s), models (name + sha256), block scales and weights,
                    hasher parameters and gamma_, bits, seed, item count, library versions
    hasher.pkl      the fitted hasher (its random draws: w, b, t)
    codes.u8        (items, ceil(bits / 8)) uint8, np.packbits order
    rows.i64        (items,) int64: the archive row of each item, increasing

The item count in the manifest is the truth: codes and rows are appended first, the manifest is
replaced last (atomically), so a crash leaves the previous index readable.

Searching is exact: faiss ``IndexBinaryFlat`` gives the Hamming k nearest neighbours; codes are
padded with zero bits to whole bytes, which never changes a distance. Ties are broken by archive
row (the smaller first), also across the k-th distance (all items tied there are considered).
``rerank=N`` re-orders the Hamming top-N by the exact Euclidean distance of the (combined) features.
"""
from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import IndexConfigError, MedhashError, ModelMismatchError, NotFoundError
from ..store.durable import append_rows, write_json_atomic

INDEX_DIR = "indexes"
CHANNELS = ("ct", "dose", "ct+dose")


IndexError_ = IndexConfigError  # the name this error had before; kept until every user says IndexConfigError


def channel_blocks(channel: str) -> list[str]:
    """The model channels an index channel combines: ``"ct+dose"`` -> ``["ct", "dose"]``."""
    if channel not in CHANNELS:
        raise IndexError_(f"channel must be one of {', '.join(CHANNELS)}, not {channel!r}")
    return channel.split("+")


def _versions() -> dict:
    import faiss
    import torch

    from .. import __version__
    return {"medhash": __version__, "numpy": np.__version__, "faiss": faiss.__version__,
            "torch": torch.__version__, "python": platform.python_version()}


# -------------------------------------------------------------------------------------------
# features of an index: blocks per channel, each normalised, weighted, concatenated


def block_scale(features: np.ndarray) -> float:
    """RMS of the row norms of a feature block (finite rows only): dividing by it gives mean
    squared norm 1, so blocks of different models weigh the same before the user's weights."""
    ok = np.isfinite(features).all(axis=1)
    if not ok.any():
        raise IndexError_("no finite feature rows to scale")
    f = features[ok].astype(np.float64)
    scale = float(np.sqrt(np.mean(np.sum(f * f, axis=1))))
    return scale if scale > 0 else 1.0


def combine(blocks: dict[str, np.ndarray], scales: dict[str, float], weights: dict[str, float]) -> np.ndarray:
    """Concatenate feature blocks, each divided by its scale and multiplied by its weight.

    Parameters
    ----------
    blocks : channel -> (n, d_c) float32 features (NaN rows where the channel is missing).
    scales, weights : channel -> float.

    Returns
    -------
    (n, sum d_c) float32; a row is NaN where any block is.
    """
    parts = [blocks[c].astype(np.float32) * np.float32(weights[c] / scales[c]) for c in sorted(blocks, key=_order)]
    return np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]


def _order(channel: str) -> int:
    return ["ct", "dose"].index(channel)


# -------------------------------------------------------------------------------------------
# exact, deterministic kNN


def _faiss_binary(codes: np.ndarray):
    import faiss
    index = faiss.IndexBinaryFlat(codes.shape[1] * 8)
    if len(codes):
        index.add(np.ascontiguousarray(codes))
    return index


def hamming_topk(index, codes_q: np.ndarray, k: int, keys: np.ndarray,
                 excluded: list[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Hamming top-k with ties broken by ``keys`` (smaller first), per query.

    Exact for an exact engine (a faiss ``IndexBinaryFlat`` or a :class:`~medhash.retrieval.engines.faiss_engines.FlatEngine`);
    for an approximate one (``ivf``, ``hnsw``) the best k of the candidates it returns, with their
    exact distances.

    Parameters
    ----------
    index : faiss IndexBinary or medhash engine holding the items.
    codes_q : (nq, n_bytes) uint8 packed query codes.
    k : neighbours wanted per query (fewer when fewer items are allowed).
    keys : (ntotal,) int64 tie-breaking key of each item (the archive row).
    excluded : per query, a bool mask (ntotal,) of items not to return, or None.

    Returns
    -------
    D : (nq, k) int32 Hamming distances, -1 where there is no result.
    I : (nq, k) int64 item positions, -1 where there is no result.
    """
    nq, n = len(codes_q), index.ntotal
    exact = getattr(index, "exact", True)
    if nq == 1 and excluded is None and 0 < k and k + 5 <= n:
        return _hamming_topk_one(index, codes_q, k, keys, exact)
    D_out = np.full((nq, k), -1, dtype=np.int32)
    I_out = np.full((nq, k), -1, dtype=np.int64)
    if n == 0 or k <= 0:
        return D_out, I_out
    n_ex = [0 if excluded is None or excluded[q] is None else int(excluded[q].sum()) for q in range(nq)]
    want = min(n, 2 * (k + max(n_ex)) + 1)
    D, I = index.search(np.ascontiguousarray(codes_q), want)
    for q in range(nq):
        ex = None if excluded is None else excluded[q]
        d, i = D[q], I[q]
        valid = i >= 0
        d, i = d[valid], i[valid]
        if ex is not None:
            keep = ~ex[i]
            d, i = d[keep], i[keep]
        kk = min(k, n - n_ex[q], len(i) if not exact else n)
        if kk <= 0:
            continue
        # want >= kk + n_ex, so at least kk items are left; all items tied with the kk-th are among
        # the returned ones when the farthest returned item is farther than the kk-th
        dk = int(np.sort(d)[kk - 1])
        if exact and want < n and int(D[q][valid].max()) <= dk:
            # ties at the kk-th distance may have been cut by faiss: take every item within it
            _, rd, ri = index.range_search(np.ascontiguousarray(codes_q[q:q + 1]), dk + 1)
            d, i = rd.astype(np.int32), ri.astype(np.int64)
            if ex is not None:
                keep = ~ex[i]
                d, i = d[keep], i[keep]
        order = np.lexsort((keys[i], d))[:kk]
        D_out[q, :kk], I_out[q, :kk] = d[order], i[order]
    return D_out, I_out


def _fast_extra(k: int, n: int) -> int:
    """Extra neighbours the single-query path asks for, so that items tied with the k-th are rarely
    cut (then one range search completes them). Small indexes: few, the heap is a visible part of
    a 20 µs scan; large ones: 4k, ties are many and a second scan costs far more (benchmarks/search.py)."""
    return 4 if n < 50_000 else 4 * k


def _search_one(index, q: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """(D, I) of shape (1, m) for one query, without faiss's Python wrapper where the index allows."""
    import faiss
    parts = getattr(index, "parts", None)
    raw = parts[0] if parts is not None and len(parts) == 1 else (index if parts is None and
                                                                  hasattr(index, "search_c") else None)
    if raw is None:
        return index.search(q, m)
    if parts is not None:
        faiss.omp_set_num_threads(1)
    D = np.empty((1, m), dtype=np.int32)
    I = np.empty((1, m), dtype=np.int64)
    raw.search_c(1, faiss.swig_ptr(q), m, faiss.swig_ptr(D), faiss.swig_ptr(I))  # no wrapper checks
    return D, I


def _hamming_topk_one(index, codes_q: np.ndarray, k: int, keys: np.ndarray,
                      exact: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """:func:`hamming_topk` for one query and no exclusion: the interactive case, kept lean."""
    m = min(index.ntotal, k + 1 + _fast_extra(k, index.ntotal))
    q = np.ascontiguousarray(codes_q, dtype=np.uint8)
    D, I = _search_one(index, q, m)
    d, i = D[0], I[0]
    if not exact:
        ok = i >= 0
        d, i = d[ok], i[ok]
        o = np.lexsort((keys[i], d))[:k]
        return d[o][None], i[o][None]
    dk = d[k - 1]
    if d[-1] > dk or m == index.ntotal:  # every item tied with the k-th was returned
        keep = d <= dk
        d, i = d[keep], i[keep]
    else:  # ties at the k-th distance may have been cut: take every item within it
        _, d, i = index.range_search(q, int(dk) + 1)
        d, i = d.astype(np.int32), i.astype(np.int64)
    o = np.lexsort((keys[i], d))[:k]
    return d[o][None], i[o][None]


def euclidean_topk(features: np.ndarray, queries: np.ndarray, k: int, keys: np.ndarray,
                   excluded: list[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact Euclidean top-k over float features, ties broken by ``keys``.

    Parameters
    ----------
    features : (n, d) float32 items; queries : (nq, d) float32.

    Returns
    -------
    D : (nq, k) float32 Euclidean distances (NaN where no result); I : (nq, k) int64 (-1 likewise).
    """
    import faiss
    n, nq = len(features), len(queries)
    D_out = np.full((nq, k), np.nan, dtype=np.float32)
    I_out = np.full((nq, k), -1, dtype=np.int64)
    if n == 0 or k <= 0:
        return D_out, I_out
    index = faiss.IndexFlatL2(features.shape[1])
    index.add(np.ascontiguousarray(features, dtype=np.float32))
    n_ex = [0 if excluded is None or excluded[q] is None else int(excluded[q].sum()) for q in range(nq)]
    want = min(n, k + max(n_ex) + 8)
    D, I = index.search(np.ascontiguousarray(queries, dtype=np.float32), want)
    for q in range(nq):
        d, i = D[q], I[q]
        ok = i >= 0
        d, i = d[ok], i[ok]
        if excluded is not None and excluded[q] is not None:
            keep = ~excluded[q][i]
            d, i = d[keep], i[keep]
        kk = min(k, len(i))
        order = np.lexsort((keys[i], d))[:kk]
        D_out[q, :kk] = np.sqrt(np.maximum(d[order], 0))
        I_out[q, :kk] = i[order]
    return D_out, I_out


# -------------------------------------------------------------------------------------------
# the index


@dataclass
class Hit:
    """One search result: an index item with its distances."""

    item: int
    row: int
    hamming: int
    euclidean: float | None = None


class Index:
    """A named Hamming index of an archive (see the module docstring for the files).

    Use :func:`build_index` to create or extend one; ``Index(archive, name)`` opens it, checks that
    the archive's models are still the ones it was built with, and loads the codes into faiss once.
    """

    def __init__(self, archive, name: str) -> None:
        self.archive = archive
        self.name = name
        self.path = index_path(archive, name)
        mpath = self.path / "manifest.json"
        if not mpath.is_file():
            names = list_indexes(archive)
            hint = f"indexes in this archive: {', '.join(names)}" if names else \
                "this archive has no index yet; build one with 'medhash index'"
            raise NotFoundError(f"no index named {name!r} in {archive.path}; {hint}")
        self.manifest = json.loads(mpath.read_text())
        self._check_models()
        from ..hashing.hashers import describe_hasher, load_hasher
        self.hasher = load_hasher(self.path / "hasher.pkl")
        want = (self.manifest.get("hasher") or {}).get("class", "KernelLSH")
        if type(self.hasher).__name__ != want:
            raise ModelMismatchError(f"index {name!r}: hasher.pkl holds a {type(self.hasher).__name__} but the manifest "
                                     f"says {want}; rebuild the index (--rebuild)")
        self.hasher_info = describe_hasher(self.hasher)
        from .engines.faiss_engines import open_engine
        n, nbytes = int(self.manifest["items"]), int(self.manifest["code_bytes"])
        # memory-mapped: the engine holds its own copy, the file pages can be dropped by the OS
        self.codes = np.memmap(self.path / "codes.u8", dtype=np.uint8, mode="r", shape=(n, nbytes)) if n * nbytes \
            else np.zeros((n, nbytes), dtype=np.uint8)
        self.rows = np.fromfile(self.path / "rows.i64", dtype=np.int64, count=n)
        self.index_type = self.manifest.get("index_type", "flat")
        backend = self.manifest.get("backend") or {"type": "local"}
        if backend["type"] == "milvus":
            from .engines.milvus import MilvusEngine
            self.engine = MilvusEngine(backend, self.rows)
        else:
            self.engine = open_engine(self.path, self.index_type, self.manifest.get("index_params") or {},
                                      self.codes)
        self._features = None
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
        from ..features import list_models
        current = {m["name"]: m.get("sha256") for m in list_models(self.archive)}
        for ch, m in self.manifest["models"].items():
            if m["name"] not in current:
                raise ModelMismatchError(f"index {self.name!r} was built with the {ch} model {m['name']!r}, which is "
                                         f"no longer in the archive; rebuild the index")
            if current[m["name"]] != m["sha256"]:
                raise ModelMismatchError(
                    f"index {self.name!r} was built with {ch} model {m['name']!r} sha256 {m['sha256'][:12]}…, but "
                    f"the archive's model now has sha256 {str(current[m['name']])[:12]}… (trained again?); rebuild "
                    f"it: medhash index --archive {self.archive.path} --name {self.name} --channel {self.channel} "
                    f"--bits {self.n_bits} --rebuild")

    def features(self) -> np.ndarray:
        """(items, D) float32 combined features of the items (for re-ranking), loaded once."""
        if self._features is None:
            self._features = archive_combined_features(self.archive, self.manifest, self.rows)
        return self._features

    def features_of_rows(self, rows) -> np.ndarray:
        """(len(rows), D) combined features of archive rows (any rows, also ones not in the index).

        Read from the feature caches as they are: the models were checked when the index was opened.
        """
        from ..features import cached_features
        rows = np.atleast_1d(np.asarray(rows, dtype=np.int64))
        blocks = {}
        for ch, m in self.manifest["models"].items():
            f = cached_features(self.archive, m["name"])
            if len(f) <= (rows.max() if len(rows) else -1):
                return archive_combined_features(self.archive, self.manifest, rows)  # cache behind: encode
            blocks[ch] = np.asarray(f[rows])
        return combine(blocks, self.manifest["scales"], self.manifest["weights"])

    def model(self, channel: str) -> tuple:
        """(torch module, config) of the index's model for ``channel``, loaded once per Index."""
        if channel not in self._models:
            from ..features import load_model
            self._models[channel] = load_model(self.archive, self.manifest["models"][channel]["name"])
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

    def encode(self, features: np.ndarray) -> np.ndarray:
        """Packed codes (nq, code_bytes) of combined query features (nq, D)."""
        return self.hasher.transform(features)

    def search(self, features: np.ndarray, k: int = 10, *, rerank: int = 0,
               exclude: list[np.ndarray] | None = None) -> list[list[Hit]]:
        """k nearest items of each query by Hamming distance (optionally re-ranked).

        Parameters
        ----------
        features : (nq, D) combined query features (see :func:`combine`).
        k : results per query (>= 1).
        rerank : 0 for pure Hamming; N >= k re-orders the Hamming top-N by Euclidean distance.
        exclude : per query, a bool mask over the items not to return (e.g. the query's patient).
        """
        if k < 1:
            raise IndexError_(f"k must be at least 1, not {k}")
        if rerank and rerank < k:
            raise IndexError_(f"--rerank {rerank} must be at least k = {k} (or 0 for none)")
        features = np.atleast_2d(np.asarray(features, dtype=np.float32))
        codes = self.encode(features)
        set_search_threads(len(features))
        depth = max(k, rerank)
        D, I = hamming_topk(self.engine, codes, depth, self.rows, exclude)
        out = []
        for q in range(len(features)):
            ok = I[q] >= 0
            items, ham = I[q][ok], D[q][ok]
            if rerank:
                diff = self.features()[items] - features[q]
                euc = np.sqrt(np.sum(diff.astype(np.float64) ** 2, axis=1))
                order = np.lexsort((self.rows[items], euc))[:k]
                out.append([Hit(int(items[j]), int(self.rows[items[j]]), int(ham[j]), float(euc[j])) for j in order])
            else:
                out.append([Hit(int(i), int(self.rows[i]), int(h)) for i, h in zip(items[:k], ham[:k])])
        return out


def set_search_threads(n_queries: int) -> None:
    """faiss threads for the call pattern: 1 for a single query, every core for a batch.

    faiss parallelises a flat scan over queries, not over the items, so a single query gains
    nothing from more threads and pays their start-up (measured: benchmarks/search.py).
    """
    import faiss
    faiss.omp_set_num_threads(1 if n_queries <= 1 else max(1, os.cpu_count() or 1))


def index_path(archive, name: str) -> Path:
    if not name or "/" in name or name.startswith(".") or name != name.strip():
        raise IndexError_(f"index name {name!r} is not usable: use letters, digits, '-', '_' or '+'")
    return Path(archive.path) / INDEX_DIR / name


def list_indexes(archive) -> list[str]:
    """Names of the indexes in an archive, sorted."""
    root = Path(archive.path) / INDEX_DIR
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "manifest.json").is_file())


def archive_combined_features(archive, manifest: dict, rows: np.ndarray | None = None,
                              progress: bool = False) -> np.ndarray:
    """(len(rows), D) combined features of archive rows (all rows by default) for an index."""
    from ..features import archive_features
    blocks = {}
    for ch, m in manifest["models"].items():
        f = archive_features(archive, m["name"], progress=progress)
        blocks[ch] = np.asarray(f if rows is None else f[rows])
    return combine(blocks, manifest["scales"], manifest["weights"])


def pick_model(archive, channel: str, name: str | None = None) -> dict:
    """The model config for a channel: the one named, else the newest trained for that channel."""
    from ..features import list_models
    models = [m for m in list_models(archive) if m["channel"] == channel]
    if name is not None:
        for m in list_models(archive):
            if m["name"] == name:
                if m["channel"] != channel:
                    raise IndexError_(f"model {name!r} is a {m['channel']} model, not a {channel} model")
                return m
        raise NotFoundError(f"no model named {name!r} in {archive.path}; models: "
                            f"{', '.join(m['name'] for m in list_models(archive)) or 'none'}")
    if not models:
        raise NotFoundError(f"no {channel} model in {archive.path}; train one first: "
                            f"medhash train --archive {archive.path} --channel {channel}")
    return sorted(models, key=lambda m: (m.get("created", 0), m["name"]))[-1]


def build_index(archive, name: str, channel: str = "ct", n_bits: int = 256, gamma: float | str = "auto",
                seed: int = 0, *, models: dict[str, str] | None = None, weights: dict[str, float] | None = None,
                rebuild: bool = False, progress: bool = False, index_type: str = "flat",
                index_params: dict | None = None, backend: dict | None = None, hasher: str = "kernel-lsh",
                hasher_params: dict | None = None) -> dict:
    """Create the index ``name`` or add the archive's new slices to it.

    Parameters
    ----------
    archive : an open :class:`~medhash.store.archive.Archive`.
    name : index name (a folder under ``ARCHIVE/indexes``).
    channel : ``"ct"``, ``"dose"`` or ``"ct+dose"`` (joint: each block divided by its RMS norm, then
        weighted, then concatenated and hashed as one vector).
    n_bits : code length, 1 to 16384.
    gamma : kernel parameter or ``"auto"`` (see :class:`~medhash.hashing.kernel_lsh.KernelLSH`); fixed when the
        index is first built, so that later additions get comparable codes.
    seed : seed of the hash draws.
    models : channel -> model name (default: the newest model of each channel).
    weights : channel -> weight of its block (default 1 each).
    rebuild : start again from scratch (needed after a model was trained again, or to change
        parameters).
    index_type : search engine, ``"flat"`` (exact), ``"ivf"`` or ``"hnsw"`` (approximate); see
        :mod:`medhash.retrieval.engines.faiss_engines` for what each is for.
    index_params : engine parameters (``nlist``, ``nprobe``, ``train_size`` for ivf; ``M``,
        ``ef_construction``, ``ef_search`` for hnsw); defaults in :data:`medhash.retrieval.engines.faiss_engines.DEFAULT_PARAMS`.
    hasher : ``"kernel-lsh"`` (default: Raginsky & Lazebnik), ``"itq"``, ``"pca-sign"`` or ``"trained"``
        (see :mod:`medhash.hashing.hashers`); ``gamma`` applies to kernel-lsh and trained; hasher_params are
        further constructor arguments (e.g. ``{"epochs": 10}``).
    backend : None (local faiss engine) or ``{"type": "milvus", "uri": URI, "collection": NAME}`` to
        push the codes to Milvus and search there (see :mod:`medhash.retrieval.engines.milvus`); the collection
        defaults to ``medhash_<name>``.

    Returns
    -------
    dict : the manifest, with ``added`` (items added by this call).
    """
    from .engines.faiss_engines import ENGINE_FILE, resolve_params, update_engine

    blocks = channel_blocks(channel)
    path = index_path(archive, name)
    if len(archive) == 0:
        raise IndexError_(f"archive {archive.path} is empty; ingest data first")
    chosen = {ch: pick_model(archive, ch, (models or {}).get(ch)) for ch in blocks}
    w = {ch: float((weights or {}).get(ch, 1.0)) for ch in blocks}
    for ch, val in w.items():
        if not np.isfinite(val) or val <= 0:
            raise IndexError_(f"weight of {ch} must be a positive number, not {val}")
    mpath = path / "manifest.json"
    from ..hashing.hashers import HASHERS
    if hasher not in HASHERS:
        raise IndexError_(f"hasher must be one of {', '.join(sorted(HASHERS))}, not {hasher!r}")
    request = {"channel": channel, "n_bits": int(n_bits), "gamma": gamma, "seed": int(seed),
               "models": {ch: {"name": m["name"], "sha256": m["sha256"]} for ch, m in chosen.items()},
               "weights": w, "index_type": index_type, "index_params": resolve_params(index_type, index_params)}
    backend_req = _backend_request(name, backend, index_type)
    existing = json.loads(mpath.read_text()) if mpath.is_file() and not rebuild else None
    if existing is not None:
        existing.setdefault("index_type", "flat")
        if (existing.get("hasher") or {}).get("name", "kernel-lsh") != hasher:
            raise ModelMismatchError(f"index {name!r} exists with hasher {existing['hasher'].get('name', 'kernel-lsh')!r}, "
                                     f"asked {hasher!r}; use --rebuild to replace it or another --name")
        existing.setdefault("index_params", {})
        diffs = [k for k in ("channel", "n_bits", "gamma", "seed", "models", "weights", "index_type", "index_params")
                 if existing[k] != request[k]]
        had = existing.get("backend") or {"type": "local"}
        if {k: had.get(k) for k in backend_req} != backend_req:
            diffs.append("backend")
            existing["backend"], request["backend"] = {k: had.get(k) for k in backend_req}, backend_req
        if diffs:
            what = "; ".join(f"{k}: index has {existing[k]!r}, asked {request[k]!r}" for k in diffs)
            raise ModelMismatchError(f"index {name!r} exists with other parameters ({what}); use --rebuild to "
                                     f"replace it or another --name")
    feats_blocks = {ch: _features_of(archive, m["name"], progress) for ch, m in chosen.items()}
    n_rows = len(archive)
    if existing is None:
        scales = {ch: block_scale(f) for ch, f in feats_blocks.items()}
        start_row = 0
        items = 0
    else:
        scales = existing["scales"]
        items = int(existing["items"])
        start_row = int(existing["rows_seen"])
    X_all = combine(feats_blocks, scales, w)
    new_rows = np.arange(start_row, n_rows, dtype=np.int64)
    new_rows = new_rows[np.isfinite(X_all[new_rows]).all(axis=1)] if len(new_rows) else new_rows
    if existing is None:
        if len(new_rows) == 0:
            raise IndexError_(f"no slice of {archive.path} has {channel} features (no dose?)")
        from ..hashing.hashers import make_hasher
        params = dict(hasher_params or {})
        if hasher in ("kernel-lsh", "trained"):
            params["gamma"] = gamma
        elif gamma != "auto":
            raise IndexError_(f"--gamma applies to the kernel-lsh and trained hashers, not {hasher}")
        try:
            hasher_name, hasher = hasher, make_hasher(hasher, int(n_bits), int(seed), **params)
            hasher.fit(X_all[new_rows])
        except ValueError as exc:
            raise IndexError_(str(exc)) from None
        if rebuild and path.exists():
            for f in ("codes.u8", "rows.i64", "hasher.pkl", "manifest.json", ENGINE_FILE):
                (path / f).unlink(missing_ok=True)
        path.mkdir(parents=True, exist_ok=True)
        hasher.save(path / "hasher.pkl")
    else:
        from ..hashing.hashers import load_hasher
        hasher_name, hasher = hasher, load_hasher(path / "hasher.pkl")
    code_bytes = (int(n_bits) + 7) // 8
    if len(new_rows):
        codes = hasher.transform(X_all[new_rows])
        append_rows(path / "codes.u8", items * code_bytes, codes)
        append_rows(path / "rows.i64", items * 8, new_rows)
    engine_info = existing.get("engine", {}) if existing else {}
    if index_type != "flat" and (len(new_rows) or existing is None):
        total = items + len(new_rows)
        all_codes = np.fromfile(path / "codes.u8", dtype=np.uint8, count=total * code_bytes).reshape(total, code_bytes)
        engine_info = update_engine(path, index_type, request["index_params"], all_codes, items, seed, engine_info)
    backend_info = existing.get("backend", {"type": "local"}) if existing else {"type": "local"}
    if backend_req["type"] == "milvus" and (len(new_rows) or existing is None):
        from .engines.milvus import push
        backend_info = push(backend_req["uri"], backend_req["collection"], codes, new_rows, archive.table(),
                            create=existing is None, nprobe=int(request["index_params"].get("nprobe", 32)))
    manifest = dict(request)
    manifest["engine"] = engine_info
    manifest["backend"] = backend_info
    manifest.update({
        "name": name, "scales": scales, "gamma_": float(hasher.gamma_) if hasattr(hasher, "gamma_") else None,
        "code_bytes": code_bytes,
        "hasher": {"name": hasher_name, "class": type(hasher).__name__, "params": hasher.get_params()},
        "feature_dim": int(X_all.shape[1]), "items": items + len(new_rows), "rows_seen": n_rows,
        "versions": _versions(), "created": existing["created"] if existing else time.time(),
        "updated": time.time()})
    write_json_atomic(mpath, manifest)
    manifest["added"] = int(len(new_rows))
    return manifest


def _backend_request(name: str, backend: dict | None, index_type: str) -> dict:
    """What identifies an index's backend: ``{"type": "local"}`` or milvus with its URI and collection."""
    if not backend or backend.get("type", "local") == "local":
        return {"type": "local"}
    if backend.get("type") != "milvus":
        raise IndexError_(f"backend must be local or milvus, not {backend.get('type')!r}")
    if not backend.get("uri"):
        raise IndexError_("the milvus backend needs --uri (a Milvus Lite file such as ./milvus.db, or "
                          "http://HOST:19530)")
    if index_type != "flat":
        raise IndexError_("--index-type applies to local indexes; with --backend milvus the engine is Milvus's "
                          "(BIN_FLAT in Milvus Lite, BIN_IVF_FLAT on a server)")
    from .engines.milvus import default_collection, normalise_uri
    return {"type": "milvus", "uri": normalise_uri(str(backend["uri"])),
            "collection": backend.get("collection") or default_collection(name)}


def _features_of(archive, model_name: str, progress: bool) -> np.ndarray:
    from ..features import archive_features
    return archive_features(archive, model_name, progress=progress)


def export_index(archive, name: str, out: str | Path) -> dict[str, Path]:
    """Write an index's items for use elsewhere.

    Files: ``features.npy`` (items, D) float32 combined features; ``codes.npy`` (items, code_bytes)
    uint8 packed codes; ``slices.csv`` with columns ``patient_id,slice_index,z_mm``, rows in index
    order (row i of the CSV is row i of both arrays).
    """
    import csv
    idx = Index(archive, name)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "features.npy", idx.features().astype(np.float32))
    np.save(out / "codes.npy", idx.codes)
    table = archive.table()
    with open(out / "slices.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["patient_id", "slice_index", "z_mm"])
        for r in idx.rows:
            w.writerow([table["patient_id"][r], int(table["slice_index"][r]), f"{table['z_mm'][r]:.3f}"])
    return {"features": out / "features.npy", "codes": out / "codes.npy", "slices": out / "slices.csv"}
