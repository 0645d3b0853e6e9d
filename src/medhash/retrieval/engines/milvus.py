"""Milvus as the search engine of an index, for archives that outgrow one machine.

Building an index with the backend ``{"type": "milvus", "uri": URI, "collection": NAME}`` (the CLI's
``medhash index`` with the milvus backend) builds the index as usual (the
codes, hasher and manifest stay in ``ARCHIVE/indexes/NAME``: they are the truth and what a rebuild
starts from) and upserts every code into a Milvus collection with its archive row as primary key and
``patient_id``, ``slice_index``, ``z_mm`` beside it. ``medhash search`` / ``serve`` / the Python API
then ask Milvus for the Hamming neighbours through the same :class:`medhash.retrieval.index.Index`:
:class:`MilvusEngine` implements :class:`~medhash.retrieval.engines.base.Engine`.

* **Milvus Lite** (``pip install milvus-lite``; a URI that is a file path ending in ``.db``): one
  process, for tests and small sites; index ``BIN_FLAT`` (exact), metric ``HAMMING``.
* **A Milvus server or cluster** (a URI such as ``http://HOST:19530``): index ``BIN_IVF_FLAT`` (approximate,
  ``nlist`` as medhash's ivf default, ``nprobe`` from the index parameters), spread over the
  cluster's query nodes. Collections are created with ``Strong`` consistency so that a search
  right after ``medhash index`` sees the new codes; a site that ingests continuously may choose
  ``Bounded`` in Milvus for throughput.

Milvus returns at most 16,384 results a query; medhash asks for k plus a margin, breaks ties at
the k-th distance by archive row like the local engines, and widens the request when ties at the
k-th distance may have been cut.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import EngineError, MilvusError, ModelMismatchError
from .faiss_engines import auto_nlist

MAX_LIMIT = 16384
"""Largest number of results Milvus returns for one query (its ``topk`` limit)."""


def _client(uri: str):
    # optional dependency: pymilvus only for indexes with the milvus backend
    try:
        from pymilvus import MilvusClient  # optional dependency: the milvus extra
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise MilvusError("the Milvus backend needs pymilvus (and milvus-lite for a local .db file): "
                          "pip install 'pymilvus>=2.5,<2.6' 'milvus-lite==2.5.1' 'setuptools<81'") from exc
    try:
        return MilvusClient(uri)
    except Exception as exc:  # pymilvus raises its own exception types
        raise MilvusError(f"cannot open Milvus at {uri!r}: {exc}") from exc


def is_lite(uri: str) -> bool:
    """True for a Milvus Lite file URI (a path ending in ``.db``)."""
    return uri.endswith(".db") and "://" not in uri


def normalise_uri(uri: str) -> str:
    """Absolute path for a Milvus Lite file (so the index works from any directory), else as given."""
    return str(Path(uri).expanduser().resolve()) if is_lite(uri) else uri


def default_collection(index_name: str) -> str:
    """``medhash_<index name>`` with characters Milvus does not allow replaced by ``_``."""
    return "medhash_" + "".join(c if c.isalnum() or c == "_" else "_" for c in index_name)


def push(uri: str, collection: str, codes: np.ndarray, rows: np.ndarray, table: dict, *, create: bool,
         nprobe: int = 32) -> dict:
    """Create (``create=True``: dropping an old one) or extend a collection with codes.

    Parameters
    ----------
    codes : (n, n_bytes) uint8 packed codes; rows : (n,) int64 archive rows (primary keys).
    table : the archive's :meth:`~medhash.store.archive.Archive.table`.

    Returns
    -------
    dict recorded in the manifest under ``backend``.
    """
    from pymilvus import DataType, MilvusClient  # optional dependency (see _client)

    client = _client(uri)
    n_bits = int(codes.shape[1] * 8)
    lite = is_lite(uri)
    index_type = "BIN_FLAT" if lite else "BIN_IVF_FLAT"
    if create:
        if client.has_collection(collection):
            client.drop_collection(collection)
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("row", DataType.INT64, is_primary=True)
        schema.add_field("code", DataType.BINARY_VECTOR, dim=n_bits)
        schema.add_field("patient_id", DataType.VARCHAR, max_length=512)
        schema.add_field("slice_index", DataType.INT64)
        schema.add_field("z_mm", DataType.FLOAT)
        ip = client.prepare_index_params()
        if lite:
            ip.add_index(field_name="code", index_type=index_type, metric_type="HAMMING")
        else:
            ip.add_index(field_name="code", index_type=index_type, metric_type="HAMMING",
                         params={"nlist": auto_nlist(max(len(codes), 1000))})
        client.create_collection(collection, schema=schema, index_params=ip, consistency_level="Strong")
    elif not client.has_collection(collection):
        raise MilvusError(f"Milvus at {uri} has no collection {collection!r}; rebuild the index", param="rebuild")
    step = 5000
    for s in range(0, len(rows), step):
        r = rows[s:s + step]
        client.upsert(collection, [{"row": int(row), "code": codes[s + j].tobytes(),
                                    "patient_id": str(table["patient_id"][row]),
                                    "slice_index": int(table["slice_index"][row]),
                                    "z_mm": float(table["z_mm"][row])} for j, row in enumerate(r)])
    return {"type": "milvus", "uri": uri, "collection": collection, "index": index_type, "metric": "HAMMING",
            "nprobe": int(nprobe), "exact": lite}


class MilvusEngine:
    """Search engine that asks a Milvus collection; positions are those of the local index's rows.

    Parameters
    ----------
    info : the manifest's ``backend`` record; rows : (items,) int64 increasing archive rows of the index.
    """

    index_type = "milvus"

    def __init__(self, info: dict, rows: np.ndarray) -> None:
        self.info = info
        self.client = _client(info["uri"])
        self.collection = info["collection"]
        self.rows = np.asarray(rows, dtype=np.int64)
        self.exact = bool(info.get("exact", True))
        if not self.client.has_collection(self.collection):
            raise ModelMismatchError(f"Milvus at {info['uri']} has no collection {self.collection!r}; rebuild the "
                                     "index", param="rebuild")
        self.client.load_collection(self.collection)
        count = int(self.client.get_collection_stats(self.collection)["row_count"])
        if count != len(self.rows):
            raise ModelMismatchError(f"Milvus collection {self.collection!r} holds {count} codes but the index "
                                     f"{len(self.rows)}; build the index again (or rebuild it)", param="rebuild")
        self.ntotal = len(self.rows)
        self._params = {"metric_type": "HAMMING"} if self.exact else \
            {"metric_type": "HAMMING", "params": {"nprobe": int(info.get("nprobe", 32))}}

    def _query(self, codes_q: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
        limit = int(min(limit, MAX_LIMIT, self.ntotal))
        res = self.client.search(self.collection, data=[q.tobytes() for q in np.asarray(codes_q, np.uint8)],
                                 anns_field="code", limit=limit, search_params=self._params)
        D = np.full((len(codes_q), limit), -1, dtype=np.int32)
        I = np.full((len(codes_q), limit), -1, dtype=np.int64)
        for q, hits in enumerate(res):
            if not hits:
                continue
            ids = np.array([h["id"] for h in hits], dtype=np.int64)
            pos = np.searchsorted(self.rows, ids)
            D[q, :len(hits)] = np.array([h["distance"] for h in hits], dtype=np.float64).round().astype(np.int32)
            I[q, :len(hits)] = pos
        order = np.argsort(np.where(I >= 0, D, np.iinfo(np.int32).max), axis=1, kind="stable")
        return np.take_along_axis(D, order, 1), np.take_along_axis(I, order, 1)

    def search(self, codes_q: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
        """The m nearest codes per query (distances ascending; -1 where fewer)."""
        D, I = self._query(codes_q, m)
        if D.shape[1] < m:
            pad = m - D.shape[1]
            D = np.pad(D, ((0, 0), (0, pad)), constant_values=-1)
            I = np.pad(I, ((0, 0), (0, pad)), constant_values=-1)
        return D, I

    def range_search(self, code_q: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
        """Every code at distance < radius of one query, by asking for more until the farthest returned
        is at or beyond the radius (or all codes were returned)."""
        limit = 256
        while True:
            D, I = self._query(code_q, limit)
            ok = I[0] >= 0
            d, i = D[0][ok], I[0][ok]
            if len(d) == 0 or d.max() >= radius or len(d) >= self.ntotal:
                keep = d < radius
                return d[keep], i[keep]
            if limit >= min(MAX_LIMIT, self.ntotal):
                raise MilvusError(f"more than {MAX_LIMIT} codes tie within Hamming distance {radius - 1}; "
                                  "use longer codes")
            limit *= 4

    def add(self, codes: np.ndarray) -> None:
        """Not supported: codes reach Milvus with their archive rows and slice fields, through :func:`push`
        (called by :func:`~medhash.retrieval.build.build_index`)."""
        raise EngineError("codes are added to a Milvus collection by building the index, which pushes them with "
                          "their archive rows")

    def save(self, path: Path) -> None:
        """Nothing to write: the codes live in the Milvus collection (and in ``codes.u8``)."""

    def describe(self) -> dict:
        """Type, collection and item count."""
        return {"index_type": "milvus", "collection": self.collection, "ntotal": self.ntotal}


def open_milvus(index_dir: Path, manifest: dict, codes: np.ndarray, rows: np.ndarray) -> MilvusEngine:
    """The engine of an index whose manifest names the milvus backend."""
    return MilvusEngine(manifest["backend"], rows)
