"""Search engines over packed binary codes: what finds the Hamming neighbours inside an index.

=========  ========================================  =====================================================
type       faiss structure                           when
=========  ========================================  =====================================================
``flat``   ``IndexBinaryFlat`` (1 thread for one     exact; up to a few 10^6 codes (about 2 ms a query
           query, every core for a batch)            over 10^6 256-bit codes here)
``ivf``    ``IndexBinaryIVF`` (inverted lists around  approximate; 10^7 codes and more: scans ``nprobe`` of
           ``nlist`` binary k-means centroids)       ``nlist`` lists; trained once, new codes join the
                                                     lists of their nearest centroid
``hnsw``   ``IndexBinaryHNSW`` (graph)               approximate; fast queries, slow build, more memory
=========  ========================================  =====================================================

Every engine returns exact Hamming distances for the codes it returns; an approximate engine may
miss some true neighbours (measured as recall@10 against ``flat`` by ``benchmarks/search.py``).

Thread counts follow :mod:`medhash.threads` (a single query on one OpenMP thread, a batch or a build
on every core; measured by ``benchmarks/scale.py``). :class:`FlatEngine` can also split the codes into shards scanned in
parallel threads (faiss releases the GIL), each with one OpenMP thread: set ``MEDHASH_FLAT_SHARDS``
to the number of shards (applied from :data:`SHARD_MIN_CODES` codes). It is off by default because
on the 2-vCPU machine medhash is developed on two shards were no faster than one thread (the scan
does not scale there); on a server with several real cores it may pay. Batches of queries go to
faiss with every core instead.

Parameters and their defaults (recorded in the index manifest):

* ``ivf``: ``nlist`` (default ``"auto"``: the power of two nearest to √n / 4, at least 16, at
  most n / 39 so that k-means has 39 training codes a centroid; 1,024 lists at 10^7 codes: adding a
  code compares it with every centroid, so more lists cost build time), ``nprobe``
  (default 32: lists scanned per query; more is slower and more exact), ``train_size`` (codes drawn,
  seeded, to train the centroids; default 40 per centroid: binary k-means runs in float space and
  costs n_train x nlist x bits per iteration). When the archive drifts far from the codes the centroids
  were trained on (a new site, a new model), lists become unbalanced and recall falls: rebuild the
  index (``rebuild=True``).
* ``hnsw``: ``M`` (default 32: links per node), ``ef_construction`` (default 80), ``ef_search``
  (default 128: candidates kept while searching; raised to the number of results asked when
  larger).

Every engine here implements :class:`~medhash.retrieval.engines.base.Engine`; the engine file of an
approximate engine is written through :func:`medhash.store.durable.replace_atomically` (fsynced).
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ...errors import EngineError, ModelMismatchError
from ...store.durable import replace_atomically
from ...threads import search_threads, use_faiss_threads

INDEX_TYPES = ("flat", "ivf", "hnsw")
DEFAULT_PARAMS = {"flat": {},
                  "ivf": {"nlist": "auto", "nprobe": 32, "train_size": 40},
                  "hnsw": {"M": 32, "ef_construction": 80, "ef_search": 128}}
ENGINE_FILE = "engine.faissbin"
SHARD_MIN_CODES = 200_000
"""With ``MEDHASH_FLAT_SHARDS`` set, a flat index of at least this many codes is split into shards."""


def default_shards(n: int) -> int:
    """Shards of a flat engine over n codes: ``MEDHASH_FLAT_SHARDS`` (default 1) from SHARD_MIN_CODES codes."""
    try:
        want = int(os.environ.get("MEDHASH_FLAT_SHARDS", "1"))
    except ValueError:
        raise EngineError(f"MEDHASH_FLAT_SHARDS must be a whole number, not {os.environ['MEDHASH_FLAT_SHARDS']!r}")
    return max(1, want) if n >= SHARD_MIN_CODES else 1


def resolve_params(index_type: str, params: dict | None) -> dict:
    """The engine's parameters: defaults overridden by ``params`` (unknown names are an error)."""
    if index_type not in INDEX_TYPES:
        raise EngineError(f"index type must be one of {', '.join(INDEX_TYPES)}, not {index_type!r}")
    out = dict(DEFAULT_PARAMS[index_type])
    for k, v in (params or {}).items():
        if v is None:
            continue
        if k not in out:
            allowed = ", ".join(out) or "none"
            raise EngineError(f"parameter {k!r} does not apply to a {index_type} index (its parameters: {allowed})")
        if not (k == "nlist" and v == "auto"):
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise EngineError(f"{k} must be a whole number >= 1, not {v!r}")
            v = int(v)
        out[k] = v
    return out


def auto_nlist(n: int) -> int:
    """Lists of an IVF over n codes: the power of two nearest √n / 4, within [16, n / 39]."""
    target = np.sqrt(max(n, 1)) / 4.0
    nlist = int(2 ** round(np.log2(target)))
    return int(max(1, min(max(16, nlist), n // 39)))


class FlatEngine:
    """Exact Hamming scan; one faiss ``IndexBinaryFlat`` per shard (see the module docstring).

    Parameters
    ----------
    codes : (n, n_bytes) uint8 packed codes (copied into faiss).
    shards : number of shards; default :func:`default_shards`.
    """

    exact = True
    index_type = "flat"

    def __init__(self, codes: np.ndarray, shards: int | None = None) -> None:
        import faiss  # start-up: faiss only when an index is opened (medhash info does not need it)
        codes = np.ascontiguousarray(codes, dtype=np.uint8)
        n, nb = codes.shape
        if shards is None:
            shards = default_shards(n)
        shards = max(1, min(int(shards), max(1, n)))
        bounds = np.linspace(0, n, shards + 1).astype(np.int64)
        self.offsets = bounds[:-1]
        self.parts = []
        for s in range(shards):
            part = faiss.IndexBinaryFlat(nb * 8)
            if bounds[s + 1] > bounds[s]:
                part.add(codes[bounds[s]:bounds[s + 1]])
            self.parts.append(part)
        self.ntotal = int(n)
        self.code_bytes = int(nb)
        self._pool = ThreadPoolExecutor(len(self.parts)) if len(self.parts) > 1 else None

    def add(self, codes: np.ndarray) -> None:
        """Append codes (to the last shard)."""
        if len(codes):
            self.parts[-1].add(np.ascontiguousarray(codes, dtype=np.uint8))
            self.ntotal += len(codes)

    def _merge(self, results: list[tuple[np.ndarray, np.ndarray]], m: int) -> tuple[np.ndarray, np.ndarray]:
        D = np.concatenate([r[0] for r in results], axis=1)
        I = np.concatenate([np.where(r[1] >= 0, r[1] + off, -1) for r, off in zip(results, self.offsets)], axis=1)
        D = np.where(I >= 0, D, np.iinfo(np.int32).max)
        order = np.argsort(D, axis=1, kind="stable")[:, :m]
        D, I = np.take_along_axis(D, order, 1), np.take_along_axis(I, order, 1)
        return np.where(I >= 0, D, -1).astype(np.int32), I

    def search(self, codes_q: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
        """The m nearest codes of each query: D (nq, m) int32 Hamming distances, I (nq, m) int64 positions
        (-1 where fewer exist). A single query scans the shards in parallel, a batch uses every core."""
        codes_q = np.ascontiguousarray(codes_q, dtype=np.uint8)
        search_threads(len(codes_q))
        if len(self.parts) == 1:
            if len(codes_q) == 1:
                return self._search_one(codes_q, m)
            return self.parts[0].search(codes_q, m)
        if len(codes_q) <= 1:
            results = list(self._pool.map(lambda p: p.search(codes_q, m), self.parts))
        else:
            results = [p.search(codes_q, m) for p in self.parts]
        return self._merge(results, m)

    def _search_one(self, code_q: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
        """One query on one shard without faiss's Python wrapper (its checks cost a visible part of a
        20 µs scan; benchmarks/search.py)."""
        import faiss  # start-up: see __init__
        D = np.empty((1, m), dtype=np.int32)
        I = np.empty((1, m), dtype=np.int64)
        self.parts[0].search_c(1, faiss.swig_ptr(code_q), m, faiss.swig_ptr(D), faiss.swig_ptr(I))
        return D, I

    def range_search(self, code_q: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
        """Every code at Hamming distance < ``radius`` from one query: (D, I), faiss's order."""
        code_q = np.ascontiguousarray(code_q, dtype=np.uint8)
        if self._pool is not None:
            search_threads(1)
            parts = list(self._pool.map(lambda p: p.range_search(code_q, int(radius)), self.parts))
        else:
            parts = [p.range_search(code_q, int(radius)) for p in self.parts]
        ds = [r[1] for r in parts]
        is_ = [r[2] + off for r, off in zip(parts, self.offsets)]
        return np.concatenate(ds).astype(np.int32), np.concatenate(is_).astype(np.int64)

    def save(self, path: Path) -> None:
        """Nothing to write: a flat engine is rebuilt from ``codes.u8``."""

    def describe(self) -> dict:
        """Type, shards and item count."""
        return {"index_type": "flat", "shards": len(self.parts), "ntotal": self.ntotal}


class FaissApproxEngine:
    """An approximate faiss binary index (``ivf`` or ``hnsw``), stored in ``engine.faissbin``."""

    exact = False

    def __init__(self, index, index_type: str, params: dict) -> None:
        self.index = index
        self.index_type = index_type
        self.params = params
        self.code_bytes = index.code_size

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @classmethod
    def create(cls, index_type: str, params: dict, codes: np.ndarray, seed: int = 0) -> "FaissApproxEngine":
        """Build an engine on codes: IVF trains its centroids on a seeded sample; HNSW links every code."""
        import faiss  # start-up: faiss only when an engine is built
        codes = np.ascontiguousarray(codes, dtype=np.uint8)
        n, nb = codes.shape
        use_faiss_threads("build")
        if index_type == "ivf":
            nlist = auto_nlist(n) if params["nlist"] == "auto" else int(params["nlist"])
            if n < nlist:
                raise EngineError(f"an IVF index with nlist = {nlist} needs at least {nlist} codes to train on, "
                                  f"got {n}; use fewer lists or a flat index", param="nlist")
            index = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(nb * 8), nb * 8, nlist)
            index.cp.seed = int(seed)
            index.cp.niter = 10
            n_train = min(n, max(nlist, int(params["train_size"]) * nlist))
            train = codes if n_train == n else codes[np.sort(np.random.default_rng(seed).choice(n, n_train, False))]
            index.train(train)
            index.nprobe = min(int(params["nprobe"]), nlist)
            params = {**params, "nlist_resolved": nlist}
        elif index_type == "hnsw":
            index = faiss.IndexBinaryHNSW(nb * 8, int(params["M"]))
            index.hnsw.efConstruction = int(params["ef_construction"])
            index.hnsw.efSearch = int(params["ef_search"])
        else:
            raise EngineError(f"{index_type!r} is not an approximate index type")
        engine = cls(index, index_type, params)
        engine.add(codes)
        return engine

    @classmethod
    def load(cls, path: Path, index_type: str, params: dict) -> "FaissApproxEngine":
        """Read an engine file, checking that it holds the manifest's index type."""
        import faiss  # start-up: faiss only when an index is opened
        if not path.is_file():
            raise ModelMismatchError(f"{path} is missing: the manifest says this is a {index_type} index, whose "
                                     "engine lives in that file; rebuild the index", param="rebuild")
        index = faiss.read_index_binary(str(path))
        kind = "ivf" if isinstance(index, faiss.IndexBinaryIVF) else \
            "hnsw" if isinstance(index, faiss.IndexBinaryHNSW) else type(index).__name__
        if kind != index_type:
            raise ModelMismatchError(f"{path} holds a {kind} engine but the manifest says {index_type}; rebuild the "
                                     "index", param="rebuild")
        if index_type == "ivf":
            index.nprobe = min(int(params["nprobe"]), index.nlist)
        else:
            index.hnsw.efSearch = int(params["ef_search"])
        return cls(index, index_type, params)

    def add(self, codes: np.ndarray) -> None:
        """Add codes (IVF: each to the list of its nearest centroid; HNSW: linked into the graph)."""
        if len(codes):
            use_faiss_threads("build")
            self.index.add(np.ascontiguousarray(codes, dtype=np.uint8))

    def search(self, codes_q: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
        """Up to m approximate nearest codes per query, with their exact distances (-1 where fewer)."""
        codes_q = np.ascontiguousarray(codes_q, dtype=np.uint8)
        search_threads(len(codes_q))
        if self.index_type == "hnsw":
            self.index.hnsw.efSearch = max(int(self.params["ef_search"]), int(m))
        return self.index.search(codes_q, int(m))

    def range_search(self, code_q, radius):  # pragma: no cover - never called for approximate engines
        raise EngineError(f"a {self.index_type} index has no exact range search")

    def save(self, path: Path) -> None:
        """Replace the engine file, durably (:func:`~medhash.store.durable.replace_atomically`)."""
        import faiss  # start-up: see load
        with replace_atomically(Path(path)) as tmp:
            faiss.write_index_binary(self.index, str(tmp))

    def describe(self) -> dict:
        """What the manifest records: type, item count and the engine's parameters."""
        d = {"index_type": self.index_type, "ntotal": self.ntotal}
        if self.index_type == "ivf":
            d.update(nlist=int(self.index.nlist), nprobe=int(self.index.nprobe))
        else:
            d.update(M=int(self.params["M"]), ef_search=int(self.params["ef_search"]))
        return d


def open_flat(index_dir: Path, manifest: dict, codes: np.ndarray, rows: np.ndarray) -> FlatEngine:
    """The flat engine of an index folder: built from the codes."""
    return FlatEngine(codes)


def open_approx(index_dir: Path, manifest: dict, codes: np.ndarray, rows: np.ndarray) -> FaissApproxEngine:
    """The ivf / hnsw engine of an index folder, from its file (checked against the manifest's item count)."""
    index_type = manifest.get("index_type", "flat")
    path = Path(index_dir) / ENGINE_FILE
    engine = FaissApproxEngine.load(path, index_type, manifest.get("index_params") or {})
    if engine.ntotal != len(codes):
        raise ModelMismatchError(f"{path} holds {engine.ntotal} codes but the manifest {len(codes)} (an interrupted "
                                 "update?); build the index again, rebuilding it", param="rebuild")
    return engine


def update_engine(index_dir: Path, index_type: str, params: dict, all_codes: np.ndarray, previous: int,
                  seed: int = 0, info: dict | None = None) -> dict:
    """Bring an approximate engine file up to ``all_codes`` (the first ``previous`` already in it).

    A new index trains/builds from scratch; a file that does not hold exactly ``previous`` codes
    (an interrupted update) is rebuilt from the codes. Returns what the manifest records under
    ``engine``: :meth:`describe` plus ``built_on`` (codes the engine was trained / first built on;
    kept across incremental adds, ``info`` is the previous record).
    """
    path = Path(index_dir) / ENGINE_FILE
    if index_type == "flat":
        path.unlink(missing_ok=True)
        return {"index_type": "flat"}
    engine = None
    if previous > 0 and path.is_file():
        engine = FaissApproxEngine.load(path, index_type, params)
        if engine.ntotal != previous:
            engine = None
    if engine is None:
        engine = FaissApproxEngine.create(index_type, params, all_codes, seed)
        built_on = int(len(all_codes))
    else:
        engine.add(all_codes[previous:])
        built_on = int((info or {}).get("built_on", previous))
    engine.save(path)
    out = engine.describe()
    out.pop("ntotal", None)
    out["built_on"] = built_on
    return out
