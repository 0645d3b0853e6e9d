"""What the web app's routes share, and its single owner: :class:`ServerState` holds the read-only
archive, the token, the upload limit, the locks and every cache (opened indexes, drawn PNGs).

Concurrency: requests are served on a thread pool. Indexes are opened once (at start-up, by
:meth:`ServerState.load_indexes`) and shared. Upload parsing runs in parallel; the search step
itself (process-wide torch and faiss settings during a query) and the matplotlib drawing (not
thread-safe) each run under a lock; each takes milliseconds. A planning-time dose (seconds) holds
the archive lock, and the search lock too when its neighbours are chosen by CT; its answer is cached.
"""
from __future__ import annotations

import base64
import contextlib
import logging
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ..core.grid import GRID_SIZE
from ..features import encode_arrays
from ..errors import MedhashError, NotFoundError
from ..render import render_png
from ..retrieval import IndexCache, archive_query, list_indexes, open_index, patient_search, search, search_many
from ..store import Archive
from .models import ArchiveSlice, BatchSearch, SearchParams
from .planned import PlannedDose, PlannedDoseCache, answer, draw
from .uploads import search_upload

log = logging.getLogger(__name__)

PNG_CACHE_SIZE = 512
"""Slice PNGs kept (least recently drawn dropped first)."""


class ServerState:
    """The server's state for one archive, opened read-only.

    Parameters
    ----------
    archive_dir : str or Path
        A medhash archive (a bad path fails here, with ArchiveError).
    token : str or None
        When set, the API needs ``Authorization: Bearer TOKEN``.
    max_upload : int
        Largest request body accepted, bytes.
    """

    def __init__(self, archive_dir: str | Path, token: str | None, max_upload: int) -> None:
        self.archive = Archive(archive_dir, read_only=True)
        self.token = token or None
        self.max_upload = int(max_upload)
        self.search_lock = threading.Lock()   # one search (encode + Hamming scan) at a time
        self.render_lock = threading.Lock()   # matplotlib is not thread-safe
        self.archive_lock = threading.RLock()  # catalog reads (one SQLite connection)
        self._png: OrderedDict[tuple, bytes] = OrderedDict()
        self.index_cache = IndexCache()        # the indexes this server has opened, shared by every request
        self.planned = PlannedDoseCache()      # the last planned doses (JSON and DVH figure of one request)

    # ------------------------------------------------------------------ archive and indexes
    def indexes(self) -> list[str]:
        """The archive's index names."""
        return list_indexes(self.archive)

    def open_index(self, name: str | None):
        """The opened index ``name`` (loaded once, then shared by every request)."""
        return open_index(self.archive, name, self.index_cache)

    def load_indexes(self) -> None:
        """Open every index (codes into faiss) and load its models, once, before the first request."""
        for name in self.indexes():
            try:
                idx = self.open_index(name)
                for ch in idx.manifest["models"]:
                    model, config = idx.model(ch)
                    with self.search_lock:  # the first forward pass pays torch's start-up, not a user
                        encode_arrays(model, config, np.zeros((1, GRID_SIZE, GRID_SIZE), np.float32))
            except MedhashError as exc:  # e.g. a model trained again: searching it reports the same error
                log.warning("index %s not loaded: %s", name, exc)

    def check_index(self, name: str | None) -> str | None:
        """``name`` if the archive has that index (None stays None); NotFoundError otherwise."""
        if name is None:
            return None
        names = self.indexes()
        if name not in names:
            raise NotFoundError(f"no index named {name!r} in this archive; indexes: {', '.join(names) or 'none'}",
                                param="index")
        return name

    def public(self, message: str) -> str:
        """An error message without the server's path to the archive: its folder name instead (as
        ``GET /api/archive`` gives it), so that the page shows a readable message."""
        path = self.archive.path
        name = path.name or "archive"
        for p in sorted({str(path), str(path.resolve())}, key=len, reverse=True):
            if p != name and "/" in p:
                message = message.replace(p, name)
        return message

    def get_slice(self, patient_id: str, slice_index: int):
        """The archive's :class:`~medhash.core.records.Slice`."""
        with self.archive_lock:
            return self.archive.get(patient_id, slice_index)

    def table(self) -> dict:
        """The archive's slice table (patient_id, slice_index, z_mm, has_dose ... per slice)."""
        with self.archive_lock:
            return self.archive.table()

    # ------------------------------------------------------------------ pictures
    def png(self, key: tuple | None, ct: np.ndarray, dose: np.ndarray | None, **kw) -> bytes:
        """PNG bytes of one slice (see :func:`medhash.render.render_png`), cached by ``key`` when given."""
        data = self.cached_png(key)
        if data is not None:
            return data
        with self.render_lock:
            data = self.cached_png(key)  # drawn by another thread meanwhile?
            if data is None:
                data = render_png(ct, dose, **kw)
                if key is not None:
                    self._png[key] = data
                    while len(self._png) > PNG_CACHE_SIZE:
                        self._png.popitem(last=False)
        return data

    def cached_png(self, key: tuple | None) -> bytes | None:
        """The cached PNG of ``key``, or None."""
        return None if key is None else self._png.get(key)

    # ------------------------------------------------------------------ search
    def search(self, query, params: SearchParams) -> dict:
        """:func:`medhash.search` of one query, plus ``query_image`` when asked."""
        index = self.check_index(params.index)
        with self.search_lock:
            res = search(self.archive, query, index=index, k=params.k, rerank=params.rerank,
                         same_patient=params.same_patient, cache=self.index_cache)
        if params.query_image:
            png = self.png(None, query.ct, query.dose)
            res["query_image"] = "data:image/png;base64," + base64.b64encode(png).decode()
        return res

    def search_archive(self, body: ArchiveSlice) -> dict:
        """Search with an archive slice."""
        with self.archive_lock:
            query = archive_query(self.archive, body.patient_id, body.slice_index)
        return self.search(query, body)

    def search_batch(self, body: BatchSearch) -> dict:
        """``{"results": [...]}``: one batched search of many archive slices."""
        index = self.check_index(body.index)
        with self.archive_lock:
            queries = [archive_query(self.archive, r.patient_id, r.slice_index) for r in body.slices]
        with self.search_lock:
            res = search_many(self.archive, queries, index=index, k=body.k, rerank=body.rerank,
                              same_patient=body.same_patient, cache=self.index_cache)
        return {"results": res}

    def search_upload(self, data: bytes, name: str, dose: bytes | None, dose_name: str | None,
                      params: SearchParams) -> dict:
        """Search with an uploaded file (see :func:`medhash.web.uploads.search_upload`)."""
        return search_upload(self.archive, lambda query: self.search(query, params), data, name, dose, dose_name)

    def patient_search(self, patient_id: str, index: str | None, **kw) -> dict:
        """:func:`medhash.retrieval.patient_search` of an archive patient."""
        name = self.check_index(index)
        with self.search_lock, self.archive_lock:
            return patient_search(self.archive, patient=patient_id, index=name, cache=self.index_cache, **kw)

    # ------------------------------------------------------------------ planning-time dose
    def planned_dose(self, patient_id: str, method: str | None, k: int, neighbours_by: str,
                     index: str | None) -> PlannedDose:
        """:func:`medhash.dose.planning.predict_dose_planned` of an archive patient as the JSON of
        ``GET /api/patients/{id}/planned-dose`` (:mod:`.planned`), cached by every parameter, the
        archive's size and its dose models."""
        from ..dose.model import list_dose_models  # start-up: the dose package only when predicting
        from ..dose.planning import predict_dose_planned  # start-up: LightGBM and scipy only when predicting

        name = self.check_index(index)
        with self.archive_lock:
            key = (patient_id, method, k, neighbours_by, name, len(self.archive.table()["patient_id"]),
                   tuple(list_dose_models(self.archive)))
        item = self.planned.get(key)
        if item is not None:
            return item
        search_lock = self.search_lock if neighbours_by != "geometry" else contextlib.nullcontext()
        with search_lock, self.archive_lock:
            item = self.planned.get(key)       # predicted by another request meanwhile?
            if item is None:
                pred = predict_dose_planned(self.archive, patient=patient_id, method=method, k=k,
                                            neighbours_by=neighbours_by, index=name, cache=self.index_cache)
                item = self.planned.put(key, PlannedDose(answer(pred, patient_id, k, name), pred.dvh))
        return item

    def planned_dose_png(self, patient_id: str, method: str | None, k: int, neighbours_by: str,
                         index: str | None) -> bytes:
        """The DVH figure of :meth:`planned_dose` as PNG bytes (drawn once per cached answer)."""
        item = self.planned_dose(patient_id, method, k, neighbours_by, index)
        if item.png is None:
            with self.render_lock:
                if item.png is None:
                    item.png = draw(item)
        return item.png
