"""Building indexes: choosing the models (:func:`pick_model`), creating or extending an index
(:func:`build_index`), and exporting one (:func:`export_index`)."""
from __future__ import annotations

import csv
import json
import platform
import time
from pathlib import Path

import numpy as np

from .. import features  # torch-free to import: its torch names load on first use
from ..features.catalog import sha256_file
from ..errors import IndexConfigError, ModelMismatchError, NotFoundError
from ..hashing import HASHERS, load_hasher, make_hasher
from ..store import layout
from ..store.durable import append_rows, replace_atomically, write_json_atomic
from .blocks import block_scale, channel_blocks, combine
from .calibration import CALIBRATION_FILE, write_calibration
from .engines import ENGINE_FILE, resolve_params, update_engine
from .engines.milvus import default_collection, normalise_uri, push
from ..version import __version__
from .index import CODES_FILE, HASHER_FILE, ROWS_FILE, Index, index_path

_COMPARED = ("channel", "n_bits", "gamma", "seed", "models", "weights", "index_type", "index_params")
"""Manifest entries that must match when an existing index is extended."""


def _versions() -> dict:
    import faiss  # start-up: faiss and torch only when an index is built
    import torch  # (as above: only when an index is built)

    return {"medhash": __version__, "numpy": np.__version__, "faiss": faiss.__version__,
            "torch": torch.__version__, "python": platform.python_version()}


def pick_model(archive, channel: str, name: str | None = None) -> dict:
    """The model config for a channel: the one named, else the newest trained for that channel."""
    every = features.list_models(archive)
    if name is not None:
        for m in every:
            if m["name"] == name:
                if m["channel"] != channel:
                    raise IndexConfigError(f"model {name!r} is a {m['channel']} model, not a {channel} model",
                                           param="models")
                return m
        raise NotFoundError(f"no model named {name!r} in {archive.path}; models: "
                            f"{', '.join(m['name'] for m in every) or 'none'}", param="models")
    models = [m for m in every if m["channel"] == channel]
    if not models:
        raise NotFoundError(f"no {channel} model in {archive.path}; train one first (medhash train, channel "
                            f"{channel})")
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
    channel : ``"ct"``, ``"dose"``, ``"geometry"`` (geometry images: targets, organs, distance to the
        targets; :mod:`medhash.geometry.slices`), or ``"ct+dose"`` / ``"ct+geometry"`` (joint: each
        block divided by its RMS norm, then weighted, then concatenated and hashed as one vector).
    n_bits : code length, 1 to 16384.
    gamma : kernel parameter or ``"auto"`` (see :class:`~medhash.hashing.KernelLSH`); fixed when the
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
        (see :mod:`medhash.hashing`); ``gamma`` applies to kernel-lsh and trained; hasher_params are
        further constructor arguments (e.g. ``{"epochs": 10}``).
    backend : None (local faiss engine) or ``{"type": "milvus", "uri": URI, "collection": NAME}`` to
        push the codes to Milvus and search there (see :mod:`medhash.retrieval.engines.milvus`); the collection
        defaults to ``medhash_<name>``.

    Returns
    -------
    dict : the manifest, with ``added`` (items added by this call).
    """
    blocks = channel_blocks(channel)
    path = index_path(archive, name)
    if len(archive) == 0:
        raise IndexConfigError(f"archive {archive.path} is empty; ingest data first")
    chosen = {ch: pick_model(archive, ch, (models or {}).get(ch)) for ch in blocks}
    w = _weights(blocks, weights)
    if hasher not in HASHERS:
        raise IndexConfigError(f"hasher must be one of {', '.join(sorted(HASHERS))}, not {hasher!r}", param="hasher")
    request = {"channel": channel, "n_bits": int(n_bits), "gamma": gamma, "seed": int(seed),
               "models": {ch: {"name": m["name"], "sha256": m["sha256"]} for ch, m in chosen.items()},
               "weights": w, "index_type": index_type, "index_params": resolve_params(index_type, index_params)}
    backend_req = _backend_request(name, backend, index_type)
    mpath = path / layout.MANIFEST
    existing = json.loads(mpath.read_text()) if mpath.is_file() and not rebuild else None
    _check_existing(name, existing, request, hasher, backend_req)
    feats_blocks = {ch: _features_of(archive, m["name"], progress) for ch, m in chosen.items()}
    scales = {ch: block_scale(f) for ch, f in feats_blocks.items()} if existing is None else existing["scales"]
    compacted = existing is not None and _drop_superseded(archive, path, existing)
    items, start_row = (0, 0) if existing is None else (int(existing["items"]), int(existing["rows_seen"]))
    X_all = combine(feats_blocks, scales, w)
    new_rows = np.arange(start_row, len(archive), dtype=np.int64)   # with features; not superseded (live)
    new_rows = new_rows[archive.table()["live"][new_rows] & np.isfinite(X_all[new_rows]).all(axis=1)]
    if existing is None:
        if len(new_rows) == 0:
            raise IndexConfigError(f"no slice of {archive.path} has {channel} features (no dose?)", param="channel")
        fitted = _fit_hasher(hasher, int(n_bits), int(seed), gamma, hasher_params, X_all[new_rows])
        _start_folder(path, rebuild)
        fitted.save(path / HASHER_FILE)
    else:
        fitted = load_hasher(path / HASHER_FILE)
    code_bytes = (int(n_bits) + 7) // 8
    codes = _append_codes(path, fitted, X_all[new_rows], new_rows, items, code_bytes)
    engine_info, backend_info = _update_engines(archive, path, request, backend_req, existing, codes, new_rows,
                                                items, code_bytes, compacted)
    manifest = {**request, "engine": engine_info, "backend": backend_info, "name": name, "scales": scales,
                "gamma_": float(fitted.gamma_) if hasattr(fitted, "gamma_") else None, "code_bytes": code_bytes,
                "hasher": {"name": hasher, "class": type(fitted).__name__, "params": fitted.get_params()},
                "feature_dim": int(X_all.shape[1]), "items": items + len(new_rows), "rows_seen": len(archive),
                "versions": _versions(), "created": existing["created"] if existing else time.time(),
                "updated": time.time(), "files": _file_records(path)}
    write_json_atomic(mpath, manifest)
    manifest["added"] = int(len(new_rows))
    return manifest


def _drop_superseded(archive, path: Path, existing: dict) -> bool:
    """Remove from an index the items whose archive rows completed series superseded
    (:mod:`medhash.store.series`): codes and rows rewritten without them (each file replaced
    atomically), then the manifest committing the smaller count; ``existing`` is updated in place. The
    approximate engine file then holds other items than the manifest, so the update rebuilds it
    (:func:`~medhash.retrieval.engines.update_engine`)."""
    dead = archive.superseded_rows()
    items, code_bytes = int(existing["items"]), int(existing["code_bytes"])
    if not len(dead) or not items:
        return False
    rows = np.fromfile(path / ROWS_FILE, dtype=np.int64, count=items)
    keep = ~np.isin(rows, dead)
    if keep.all():
        return False
    if (existing.get("backend") or {}).get("type", "local") != "local":
        raise IndexConfigError(f"index {existing['name']!r} keeps its codes in Milvus and holds {int((~keep).sum())} "
                               "slices superseded by completed series; rebuild it", param="rebuild")
    codes = np.fromfile(path / CODES_FILE, dtype=np.uint8, count=items * code_bytes).reshape(items, code_bytes)
    for name, data in ((CODES_FILE, codes[keep]), (ROWS_FILE, rows[keep])):
        with replace_atomically(path / name) as tmp:
            data.tofile(tmp)
    existing.update(items=int(keep.sum()), updated=time.time(), files=_file_records(path))
    write_json_atomic(path / layout.MANIFEST, existing)
    return True


def _file_records(path: Path) -> dict:
    """``{file: {"bytes": size, "sha256": hex}}`` of the index's files as the manifest commits them
    (``medhash check`` verifies the first ``bytes`` of each against its sha256)."""
    return {f: {"bytes": (path / f).stat().st_size, "sha256": sha256_file(path / f)}
            for f in (CODES_FILE, ROWS_FILE, HASHER_FILE, ENGINE_FILE) if (path / f).is_file()}


def _weights(blocks: list[str], weights: dict[str, float] | None) -> dict[str, float]:
    """channel -> weight of its block (default 1), each a positive number."""
    w = {ch: float((weights or {}).get(ch, 1.0)) for ch in blocks}
    for ch, val in w.items():
        if not np.isfinite(val) or val <= 0:
            raise IndexConfigError(f"weight of {ch} must be a positive number, not {val}", param="weights")
    return w


def _check_existing(name: str, existing: dict | None, request: dict, hasher: str, backend_req: dict) -> None:
    """Refuse to extend an index built with other parameters than the ones asked (None: a new index)."""
    if existing is None:
        return
    existing.setdefault("index_type", "flat")
    if (existing.get("hasher") or {}).get("name", "kernel-lsh") != hasher:
        raise ModelMismatchError(f"index {name!r} exists with hasher {existing['hasher'].get('name', 'kernel-lsh')!r}, "
                                 f"asked {hasher!r}; rebuild it to replace it, or choose another name", param="rebuild")
    existing.setdefault("index_params", {})
    diffs = [k for k in _COMPARED if existing[k] != request[k]]
    had = existing.get("backend") or {"type": "local"}
    if {k: had.get(k) for k in backend_req} != backend_req:
        diffs.append("backend")
        existing, request = {**existing, "backend": {k: had.get(k) for k in backend_req}}, \
            {**request, "backend": backend_req}
    if diffs:
        what = "; ".join(f"{k}: index has {existing[k]!r}, asked {request[k]!r}" for k in diffs)
        raise ModelMismatchError(f"index {name!r} exists with other parameters ({what}); rebuild it to replace it, "
                                 "or choose another name", param="rebuild")


def _fit_hasher(hasher: str, n_bits: int, seed: int, gamma, hasher_params: dict | None, X: np.ndarray):
    """A new hasher of kind ``hasher`` fitted on the (n, D) features X."""
    params = dict(hasher_params or {})
    if hasher in ("kernel-lsh", "trained"):
        params["gamma"] = gamma
    elif gamma != "auto":
        raise IndexConfigError(f"gamma applies to the kernel-lsh and trained hashers, not {hasher}", param="gamma")
    try:
        fitted = make_hasher(hasher, n_bits, seed, **params)
        fitted.fit(X)
    except ValueError as exc:
        raise IndexConfigError(str(exc)) from None
    return fitted


def _start_folder(path: Path, rebuild: bool) -> None:
    """Create the index folder; on a rebuild, remove the files of the old index first."""
    if rebuild and path.exists():
        for f in (CODES_FILE, ROWS_FILE, HASHER_FILE, layout.MANIFEST, ENGINE_FILE, CALIBRATION_FILE):
            (path / f).unlink(missing_ok=True)
    path.mkdir(parents=True, exist_ok=True)


def _append_codes(path: Path, fitted, X: np.ndarray, new_rows: np.ndarray, items: int, code_bytes: int) -> np.ndarray:
    """Hash the new rows' features and append codes and rows after the ``items`` committed ones."""
    if not len(new_rows):
        return np.zeros((0, code_bytes), dtype=np.uint8)
    codes = fitted.transform(X)
    append_rows(path / CODES_FILE, items * code_bytes, codes)
    append_rows(path / ROWS_FILE, items * 8, new_rows)
    return codes


def _update_engines(archive, path: Path, request: dict, backend_req: dict, existing: dict | None, codes: np.ndarray,
                    new_rows: np.ndarray, items: int, code_bytes: int, compacted: bool = False) -> tuple[dict, dict]:
    """Bring the approximate engine file, the Milvus collection and the calibration up to date (``compacted``:
    items were dropped, :func:`_drop_superseded`); returns what the manifest records under ``engine`` and
    ``backend``."""
    index_type = request["index_type"]
    changed = bool(len(new_rows)) or existing is None or compacted
    engine_info = existing.get("engine", {}) if existing else {}
    if index_type != "flat" and changed:
        total = items + len(new_rows)
        all_codes = np.fromfile(path / CODES_FILE, dtype=np.uint8, count=total * code_bytes).reshape(total, code_bytes)
        engine_info = update_engine(path, index_type, request["index_params"], all_codes, items, request["seed"],
                                    engine_info)
    backend_info = existing.get("backend", {"type": "local"}) if existing else {"type": "local"}
    if backend_req["type"] == "milvus" and changed:
        backend_info = push(backend_req["uri"], backend_req["collection"], codes, new_rows, archive.table(),
                            create=existing is None, nprobe=int(request["index_params"].get("nprobe", 32)))
    _calibrate(archive, path, items + len(new_rows), code_bytes, request["n_bits"], changed)
    return engine_info, backend_info


def _calibrate(archive, path: Path, total: int, code_bytes: int, n_bits: int, changed: bool) -> None:
    """Write the index's random-pair reference (:mod:`.calibration`) for its ``total`` items, before
    the manifest that commits them; kept when nothing was added and it matches."""
    have = path / CALIBRATION_FILE
    if not changed and have.is_file():
        return
    codes = np.fromfile(path / CODES_FILE, dtype=np.uint8, count=total * code_bytes).reshape(total, code_bytes)
    rows = np.fromfile(path / ROWS_FILE, dtype=np.int64, count=total)
    write_calibration(path, codes, archive.table()["patient_id"][rows].astype(str), n_bits)


def _backend_request(name: str, backend: dict | None, index_type: str) -> dict:
    """What identifies an index's backend: ``{"type": "local"}`` or milvus with its URI and collection."""
    if not backend or backend.get("type", "local") == "local":
        return {"type": "local"}
    if backend.get("type") != "milvus":
        raise IndexConfigError(f"backend must be local or milvus, not {backend.get('type')!r}", param="backend")
    if not backend.get("uri"):
        raise IndexConfigError("the milvus backend needs a URI (a Milvus Lite file such as ./milvus.db, or "
                               "http://HOST:19530)", param="uri")
    if index_type != "flat":
        raise IndexConfigError("the index type applies to local indexes; with the milvus backend the engine is "
                               "Milvus's (BIN_FLAT in Milvus Lite, BIN_IVF_FLAT on a server)", param="index_type")
    return {"type": "milvus", "uri": normalise_uri(str(backend["uri"])),
            "collection": backend.get("collection") or default_collection(name)}


def _features_of(archive, model_name: str, progress: bool) -> np.ndarray:
    return features.archive_features(archive, model_name, progress=progress)


def export_index(archive, name: str, out: str | Path) -> dict[str, Path]:
    """Write an index's items for use elsewhere.

    Files: ``features.npy`` (items, D) float32 combined features; ``codes.npy`` (items, code_bytes)
    uint8 packed codes; ``slices.csv`` with columns ``patient_id,slice_index,z_mm``, rows in index
    order (row i of the CSV is row i of both arrays).
    """
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
