"""A query (archive slice, DICOM slice or series, PNG/NPY image) → ranked archive slices.

:func:`search` is the one code path behind ``medhash search``, :func:`medhash.retrieval.search` and (later)
``POST /api/search``; it returns the JSON-ready dict that ``medhash search --json`` prints::

    {"query": {"type": "archive", "patient_id": "pt_1", "slice_index": 60, "z_mm": 150.0, ...},
     "index": "ct256", "channel": "ct", "k": 10, "rerank": 0, "same_patient": false,
     "results": [{"rank": 1, "patient_id": "pt_7", "slice_index": 58, "z_mm": 145.0,
                  "hamming": 31, "euclidean": 2.41}, ...]}

``euclidean`` appears only when the Hamming short-list was re-ranked (``rerank > 0``).
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError, NotFoundError
from .index import Index, IndexError_, combine, list_indexes

_ARCHIVE_QUERY = re.compile(r"^(?P<pid>[^:]+):(?P<idx>-?\d+)$")


@dataclass
class Query:
    """A prepared query: where it came from and its images on the model grid.

    Attributes
    ----------
    kind : ``"archive"``, ``"dicom"`` or ``"image"``.
    info : JSON-ready description (patient/slice for archive queries, the file otherwise).
    ct : (128, 128) float32 HU, or None.
    dose : (128, 128) float32 Gy, or None.
    row : archive row for archive queries (their features are read from the archive, not recomputed).
    patient_id : the query's patient in the archive (archive queries), else None.
    """

    kind: str
    info: dict
    ct: np.ndarray | None = None
    dose: np.ndarray | None = None
    row: int | None = None
    patient_id: str | None = None
    extra: dict = field(default_factory=dict)


def parse_query(archive, query: str | Path, *, dose: str | Path | None = None,
                slice_index: int | None = None) -> Query:
    """Turn the QUERY argument into a :class:`Query`.

    ``PATIENT:SLICE`` names an archive slice; a ``.png`` / ``.npy`` file is an image (see
    :mod:`medhash.io.images`); anything else is DICOM: a CT slice file, or a series folder with
    ``slice_index``. ``dose`` is an RTDOSE (DICOM queries) or a dose image in Gy (image queries).
    """
    from ..io.images import is_image, read_image

    text = str(query)
    m = _ARCHIVE_QUERY.match(text)
    if m and not Path(text).exists():
        if dose is not None:
            raise InputError("--dose is for file queries; an archive slice brings its own dose")
        return archive_query(archive, m.group("pid"), int(m.group("idx")))
    path = Path(text)
    if not path.exists():
        raise InputError(f"query {text!r} is neither PATIENT:SLICE nor an existing file or folder")
    if is_image(path):
        d = read_image(dose, kind="dose") if dose is not None else None
        return Query(kind="image", info={"type": "image", "file": str(path)}, ct=read_image(path, kind="ct"), dose=d)
    from ..io.dicom import read_query
    vol, k = read_query(path, slice_index=slice_index, dose_path=dose)
    info = {"type": "dicom", "file": str(path), "slice_index": int(vol.slice_index[k]), "z_mm": round(float(vol.z_mm[k]), 3),
            "has_dose": vol.dose is not None}
    return Query(kind="dicom", info=info, ct=vol.ct[k], dose=None if vol.dose is None else vol.dose[k])


def archive_query(archive, patient_id: str, slice_index: int) -> Query:
    """The :class:`Query` of the archive slice (patient_id, slice_index) (its stored features are used)."""
    s = archive.get(patient_id, int(slice_index))
    return Query(kind="archive", info={"type": "archive", **s.to_dict()}, ct=s.ct, dose=s.dose, row=s.row,
                 patient_id=s.patient_id)


def query_features(index: Index, query: Query) -> np.ndarray:
    """(1, D) combined features of a query for ``index`` (archive queries: the stored features)."""
    if query.row is not None:
        f = index.features_of_rows([query.row])
        if not np.isfinite(f).all():
            raise InputError(f"slice ({query.patient_id}, {query.info.get('slice_index')}) has no dose, but index "
                             f"{index.name!r} is a {index.channel} index")
        return f
    from ..features import encode_arrays
    blocks = {}
    for ch in index.manifest["models"]:
        image = query.ct if ch == "ct" else query.dose
        if image is None:
            raise InputError(f"index {index.name!r} searches {index.channel}: the query needs a dose too "
                             "(--dose FILE)")
        model, config = index.model(ch)
        blocks[ch] = encode_arrays(model, config, image[None])
    return combine(blocks, index.manifest["scales"], index.manifest["weights"])


_INDEX_CACHE: dict[tuple[str, str], tuple[tuple, Index]] = {}


def open_index(archive, name: str | None = None) -> Index:
    """Open an index of the archive (the only one when ``name`` is None), cached per process."""
    if name is None:
        names = list_indexes(archive)
        if not names:
            raise NotFoundError(f"archive {archive.path} has no index; build one with 'medhash index --archive "
                                f"{archive.path} --name ct256 --channel ct --bits 256'")
        if len(names) > 1:
            raise IndexError_(f"archive {archive.path} has several indexes ({', '.join(names)}); choose one with "
                              "--index NAME")
        name = names[0]
    key = (str(Path(archive.path).resolve()), name)
    mpath = Path(archive.path) / "indexes" / name / "manifest.json"
    # re-open when the index or any model changed (a model trained again must be refused, not served)
    models = sorted((Path(archive.path) / "models").glob("*/config.json"))
    stamp = (mpath.stat().st_mtime_ns if mpath.is_file() else -1,
             tuple((str(p), p.stat().st_mtime_ns) for p in models))
    cached = _INDEX_CACHE.get(key)
    # an Index reads through the Archive it was opened with: another Archive object (the first one
    # may be closed by now, e.g. a web app that stopped) gets its own
    if cached is None or cached[0] != stamp or cached[1].archive is not archive:
        cached = (stamp, Index(archive, name))
        _INDEX_CACHE[key] = cached
    return cached[1]


def _check_request(idx: Index, q: Query, k: int, rerank: int, same_patient: bool | None):
    """Validate one request; returns (same_patient, excluded mask or None, rerank cut to what exists)."""
    if same_patient is None:
        same_patient = q.kind != "archive"
    exclude_patient = q.patient_id if (q.patient_id and not same_patient) else None
    excluded = idx.patient_mask(exclude_patient) if exclude_patient is not None else None
    available = len(idx) - (0 if excluded is None else int(excluded.sum()))
    if k < 1:
        raise IndexError_(f"k must be at least 1, not {k}")
    if k > available:
        raise IndexError_(f"k = {k} is larger than the {available} slices the index {idx.name!r} can return"
                          + (f" (patient {exclude_patient} excluded)" if exclude_patient else ""))
    if rerank < 0:
        raise IndexError_(f"--rerank must be 0 or a number >= k, not {rerank}")
    return bool(same_patient), excluded, (min(rerank, available) if rerank else 0)


def _result(archive, idx: Index, q: Query, hits, k: int, rerank: int, same_patient: bool, timing: dict) -> dict:
    table = archive.table()
    results = []
    for rank, h in enumerate(hits, 1):
        r = {"rank": rank, "patient_id": str(table["patient_id"][h.row]), "slice_index": int(table["slice_index"][h.row]),
             "z_mm": round(float(table["z_mm"][h.row]), 3), "hamming": h.hamming}
        if h.euclidean is not None:
            r["euclidean"] = round(h.euclidean, 6)
        results.append(r)
    return {"query": q.info, "index": idx.name, "channel": idx.channel, "n_bits": idx.n_bits, "k": k,
            "rerank": rerank, "same_patient": same_patient, "results": results,
            "timing_ms": {key: round(v * 1e3, 3) for key, v in timing.items()}}


def search(archive, query: str | Path | Query, *, index: str | None = None, k: int = 10, rerank: int = 0,
           same_patient: bool | None = None, dose: str | Path | None = None,
           slice_index: int | None = None) -> dict:
    """Search the archive for the slices most similar to ``query``.

    Parameters
    ----------
    archive : an open :class:`~medhash.store.archive.Archive`.
    query : ``"PATIENT:SLICE"``, a DICOM CT file or series folder, a PNG/NPY image, or a :class:`Query`.
    index : index name (default: the archive's only index).
    k : number of results.
    rerank : re-rank the Hamming top-``rerank`` by exact Euclidean distance (0: no re-ranking).
    same_patient : include slices of the query's own patient (default: excluded for archive queries).
    dose, slice_index : see :func:`parse_query`.

    Returns
    -------
    dict : JSON-ready result (see the module docstring); ``timing_ms`` holds encode / search times.
    """
    t0 = time.perf_counter()
    idx = open_index(archive, index)
    q = query if isinstance(query, Query) else parse_query(archive, query, dose=dose, slice_index=slice_index)
    same_patient, excluded, rerank = _check_request(idx, q, k, rerank, same_patient)
    t1 = time.perf_counter()
    feats = query_features(idx, q)
    t2 = time.perf_counter()
    hits = idx.search(feats, k, rerank=rerank, exclude=None if excluded is None else [excluded])[0]
    t3 = time.perf_counter()
    return _result(archive, idx, q, hits, k, rerank, same_patient,
                   {"prepare": t1 - t0, "encode": t2 - t1, "search": t3 - t2})


def search_many(archive, queries: list, *, index: str | None = None, k: int = 10, rerank: int = 0,
                same_patient: bool | None = None) -> list[dict]:
    """:func:`search` for many queries at once: one batched Hamming search on every core.

    Parameters
    ----------
    queries : list of what :func:`search` takes (``"PATIENT:SLICE"``, files, :class:`Query`).
    index, k, rerank, same_patient : as in :func:`search`, the same for every query.

    Returns
    -------
    list of dict, one :func:`search` result per query, in order; ``timing_ms`` holds the whole
    batch's times divided by the number of queries.
    """
    if not len(queries):
        return []
    t0 = time.perf_counter()
    idx = open_index(archive, index)
    qs = [q if isinstance(q, Query) else parse_query(archive, q) for q in queries]
    checked = [_check_request(idx, q, k, rerank, same_patient) for q in qs]
    depth = max(c[2] for c in checked)
    t1 = time.perf_counter()
    feats = np.concatenate([query_features(idx, q) for q in qs], axis=0)
    t2 = time.perf_counter()
    exclude = [c[1] for c in checked]
    hits = idx.search(feats, k, rerank=depth, exclude=None if all(e is None for e in exclude) else exclude)
    t3 = time.perf_counter()
    n = len(qs)
    timing = {"prepare": (t1 - t0) / n, "encode": (t2 - t1) / n, "search": (t3 - t2) / n}
    return [_result(archive, idx, q, h, k, depth, c[0], timing) for q, h, c in zip(qs, hits, checked)]
