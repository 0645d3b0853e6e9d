"""Checking what retrieval rests on: the models' checkpoints, the feature caches and the indexes
(the part of ``medhash check`` after :mod:`medhash.store.check`, whose :class:`Finding` it returns).

Per index (``ARCHIVE/indexes/NAME/``, see :mod:`.index`): the manifest is there and readable;
``codes.u8`` and ``rows.i64`` hold at least the manifest's ``items`` (bytes past them are a leftover of an
interrupted extension, cut by repair); when the manifest records ``files`` (``{"codes.u8": {"bytes": n,
"sha256": ...}}``, written at build), the first ``bytes`` of each file match their sha256 (older
manifests: sizes only); the rows are archive rows, strictly increasing; ``hasher.pkl`` loads and is of
the manifest's class; an ``ivf`` / ``hnsw`` engine file is there, loads and holds ``items`` codes; the
models it names are in the archive with the sha256 it recorded. What is damaged is repaired by building
the index again from scratch with the manifest's own parameters (:func:`rebuild_fix`).

Per model (``ARCHIVE/models/NAME/``): ``model.pt`` matches the sha256 of its ``config.json``. Per feature
cache (``ARCHIVE/features/NAME.f32`` and its ``.json``): the model exists, the cache's ``dim`` is the
model's ``latent_dim``, its ``rows`` are at most the archive's, the file holds them (a shorter file or a
wrong ``dim`` is dropped by repair, to be encoded again on next use; bytes past them are cut).

faiss is loaded only to open an approximate engine; the hashers' modules load torch only for a trained
hasher.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from .. import features  # torch-free to import: its torch names load on first use
from ..features import catalog as feature_catalog
from ..errors import MedhashError
from ..hashing import load_hasher
from ..store import Archive, layout
from ..store import check as store_check
from .build import build_index
from .engines import ENGINE_FILE, engine_kind
from .index import CODES_FILE, HASHER_FILE, ROWS_FILE

DAMAGE, LEFTOVER, NOTE, Finding = store_check.DAMAGE, store_check.LEFTOVER, store_check.NOTE, store_check.Finding
relative = store_check.relative

SUMMED_FILES = (CODES_FILE, ROWS_FILE, HASHER_FILE, ENGINE_FILE)
"""Index files whose size and sha256 the manifest records under ``files`` (when built by a medhash that does)."""


def sha256_prefix(path: Path, n_bytes: int | None = None) -> str:
    """Hex SHA-256 of the first ``n_bytes`` of a file (all of it for None)."""
    h = hashlib.sha256()
    left = n_bytes
    with open(path, "rb") as f:
        while left is None or left > 0:
            block = f.read(1 << 20 if left is None else min(1 << 20, left))
            if not block:
                break
            h.update(block)
            if left is not None:
                left -= len(block)
    return h.hexdigest()


def file_record(path: Path) -> dict:
    """``{"bytes": size, "sha256": hex}`` of a file: what a manifest's ``files`` holds for it."""
    return {"bytes": path.stat().st_size, "sha256": sha256_prefix(path)}


# ---------------------------------------------------------------------- models and feature caches
def check_models(archive) -> list[Finding]:
    """Each model's ``model.pt`` against the sha256 its ``config.json`` records."""
    root = layout.models_dir(archive)
    out = []
    for d in sorted(root.iterdir()) if root.is_dir() else []:
        if not d.is_dir() or d.name.startswith("."):
            continue
        config, why = store_check.read_json(d / feature_catalog.CONFIG)
        where = relative(archive, d)
        if config is None:
            out.append(Finding(DAMAGE, where, f"{feature_catalog.CONFIG} {why}; train the model again"))
            continue
        weights = d / feature_catalog.WEIGHTS
        if not weights.is_file():
            out.append(Finding(DAMAGE, where, f"{feature_catalog.WEIGHTS} is missing; train the model again"))
        elif feature_catalog.sha256_file(weights) != config.get("sha256"):
            out.append(Finding(DAMAGE, relative(archive, weights), "does not match the sha256 recorded in "
                                                                   f"{feature_catalog.CONFIG}; train the model again"))
    return out


def _drop_cache(data: Path, meta: Path):
    def fix() -> None:
        meta.unlink(missing_ok=True)
        data.unlink(missing_ok=True)
    return fix


def check_feature_caches(archive) -> list[Finding]:
    """Each ``features/NAME.f32`` against its JSON sidecar, the model's ``latent_dim`` and the archive's rows."""
    root = layout.features_dir(archive)
    if not root.is_dir():
        return []
    n_rows = store_check.catalog_rows(archive)
    models = {m.get("name"): m for m in features.list_models(archive)}
    out = []
    for data in sorted(root.glob("*.f32")):
        try:
            out += _cache_findings(archive, data, models, n_rows)
        except (TypeError, ValueError, AttributeError) as exc:  # a sidecar of unexpected content
            meta_path = data.with_suffix(".json")
            out.append(Finding(LEFTOVER, relative(archive, data),
                               f"its {meta_path.name} does not hold what medhash writes ({exc})",
                               "remove the cache (encoded again on next use)", _drop_cache(data, meta_path)))
    return out


def _cache_findings(archive, data: Path, models: dict, n_rows: int) -> list[Finding]:
    """The finding (none or one) of one feature cache (:func:`check_feature_caches`)."""
    name = data.name[:-len(".f32")]
    meta_path = data.with_suffix(".json")
    where, drop = relative(archive, data), _drop_cache(data, meta_path)
    again = "remove the cache (encoded again on next use)"
    meta, why = store_check.read_json(meta_path)
    model = models.get(name)
    if model is None:
        return [Finding(LEFTOVER, where, f"features of model {name!r}, which is not in the archive",
                        "remove the cache", drop)]
    if meta is None:
        return [Finding(LEFTOVER, where, f"its {meta_path.name} {why}: the cache cannot be used", again, drop)]
    rows, dim = int(meta.get("rows", -1)), int(meta.get("dim", -1))
    if dim != int(model.get("latent_dim", -2)) or not 0 <= rows <= n_rows:
        return [Finding(DAMAGE, where, f"{rows} rows of {dim} features, but model {name!r} gives "
                                       f"{model.get('latent_dim')} and the archive has {n_rows} rows", again, drop)]
    if meta.get("model_sha256") != model.get("sha256"):
        return [Finding(NOTE, where, f"made by an earlier checkpoint of model {name!r}: encoded again on next use")]
    f = store_check.tail_finding(archive, data, rows * dim * 4, f"{rows} cached rows")
    if f is not None and f.kind == DAMAGE:
        f.repair, f.fix = again, drop
    return [] if f is None else [f]


# ---------------------------------------------------------------------- indexes
def rebuild_fix(archive, name: str, manifest: dict):
    """The repair of a damaged index: :func:`~medhash.retrieval.build.build_index` from scratch with the
    manifest's own channel, bits, gamma, seed, models, weights, engine and hasher."""
    def fix() -> None:
        arch = archive if hasattr(archive, "table") else Archive(archive)
        hasher = manifest.get("hasher") or {}
        extra = {k: v for k, v in (hasher.get("params") or {}).items() if k not in ("n_bits", "seed", "gamma")}
        build_index(arch, name, manifest["channel"], int(manifest["n_bits"]), manifest.get("gamma", "auto"),
                    int(manifest.get("seed", 0)), models={ch: m["name"] for ch, m in manifest["models"].items()},
                    weights=manifest.get("weights"), rebuild=True, index_type=manifest.get("index_type", "flat"),
                    index_params=manifest.get("index_params") or None, hasher=hasher.get("name", "kernel-lsh"),
                    hasher_params=extra or None)
    return fix


def _rebuild_text(name: str, manifest: dict) -> str:
    return (f"build index {name} again from scratch ({manifest.get('channel')}, {manifest.get('n_bits')} bits, "
            f"seed {manifest.get('seed', 0)}, {manifest.get('index_type', 'flat')})")


def check_index(archive, name: str) -> list[Finding]:
    """The checks of the module docstring on ``indexes/NAME``."""
    folder = layout.index_dir(archive, name)
    where = relative(archive, folder)
    mpath = folder / layout.MANIFEST
    if not mpath.is_file():
        return [Finding(LEFTOVER, where, "an index folder without manifest.json: a first build that never finished "
                                         "(searches do not see it)", "remove the folder",
                        store_check.remove_fix(folder))]
    manifest, why = store_check.read_json(mpath)
    try:
        items, code_bytes = int(manifest["items"]), int(manifest["code_bytes"])
        manifest["channel"], manifest["n_bits"], manifest["models"]
    except (TypeError, KeyError, ValueError):
        why = why or "lacks items, code_bytes, channel, n_bits or models"
        return [Finding(DAMAGE, relative(archive, mpath), f"{why}; rebuild the index (medhash index)")]
    fix, text = rebuild_fix(archive, name, manifest), _rebuild_text(name, manifest)
    damaged = _model_findings(archive, name, manifest)
    if damaged:
        return damaged
    out = _file_findings(archive, folder, manifest, items, code_bytes)
    if not any(f.kind == DAMAGE for f in out):
        out += _rows_findings(archive, folder, manifest, items)
        out += _hasher_findings(archive, folder, manifest)
        out += _engine_findings(archive, folder, manifest, items)
    for f in out:
        if f.kind == DAMAGE:
            f.repair, f.fix = text, fix
    seen, n_rows = int(manifest.get("rows_seen", 0)), store_check.catalog_rows(archive)
    if not any(f.kind == DAMAGE for f in out) and seen < n_rows:
        out.append(Finding(NOTE, where, f"indexes the archive's first {seen} rows of {n_rows}: updating the index "
                                        f"{name!r} (medhash index) adds the others"))
    dead = store_check.catalog_superseded(archive)
    if not any(f.kind == DAMAGE for f in out) and len(dead) and items:
        held = int(np.isin(np.fromfile(folder / ROWS_FILE, dtype=np.int64, count=items), dead).sum())
        if held:
            out.append(Finding(NOTE, where, f"holds {held} slice(s) superseded by completed series: they are left out "
                                            f"of its answers; updating the index {name!r} (medhash index) drops them"))
    return out


def _model_findings(archive, name: str, manifest: dict) -> list[Finding]:
    """The models an index was built with: still there, with the sha256 it recorded (else damage that only
    training, then a rebuild, mends)."""
    current = {m.get("name"): m.get("sha256") for m in features.list_models(archive)}
    out = []
    where = relative(archive, layout.index_dir(archive, name) / layout.MANIFEST)
    for ch, m in manifest["models"].items():
        if m.get("name") not in current:
            out.append(Finding(DAMAGE, where, f"built with the {ch} model {m.get('name')!r}, which is not in the "
                                              "archive; train a model and rebuild the index (medhash index)"))
        elif current[m["name"]] != m.get("sha256"):
            model = m["name"]
            out.append(Finding(DAMAGE, where, f"built with {ch} model {model!r} sha256 {str(m.get('sha256'))[:12]}…, "
                                              f"the archive's model now has {str(current[model])[:12]}…",
                               _rebuild_text(name, manifest), rebuild_fix(archive, name, manifest)))
    return out


def _file_findings(archive, folder: Path, manifest: dict, items: int, code_bytes: int) -> list[Finding]:
    """Sizes of codes and rows against ``items``; recorded sha256 of every summed file."""
    out = []
    for fname, size in ((CODES_FILE, items * code_bytes), (ROWS_FILE, items * 8)):
        path = folder / fname
        if not path.is_file() and items:
            out.append(Finding(DAMAGE, relative(archive, path), "is missing"))
            continue
        f = store_check.tail_finding(archive, path, size, f"manifest's {items} items") if path.is_file() else None
        if f is not None:
            out.append(f)
    files = manifest.get("files") or {}
    for fname, rec in files.items():
        path = folder / fname
        where = relative(archive, path)
        if fname not in SUMMED_FILES or not isinstance(rec, dict) or any(f.where == where for f in out):
            continue   # a file the size check above already reported is not reported twice
        if not path.is_file():
            out.append(Finding(DAMAGE, where, "is missing (the manifest records it)"))
        elif path.stat().st_size < int(rec.get("bytes", 0)):
            out.append(Finding(DAMAGE, where, f"{path.stat().st_size} bytes, the manifest records {rec.get('bytes')}"))
        elif sha256_prefix(path, int(rec.get("bytes", 0))) != rec.get("sha256"):
            out.append(Finding(DAMAGE, where, "does not match the sha256 its manifest records"))
    return out


def _rows_findings(archive, folder: Path, manifest: dict, items: int) -> list[Finding]:
    """The index's rows: archive rows below ``rows_seen`` and the archive's row count, strictly increasing."""
    rows = np.fromfile(folder / ROWS_FILE, dtype=np.int64, count=items) if items else np.zeros(0, np.int64)
    limit = min(int(manifest.get("rows_seen", 0)), store_check.catalog_rows(archive))
    bad = []
    if len(rows) and (rows.min() < 0 or rows.max() >= limit):
        bad.append(f"rows {int(rows.min())} to {int(rows.max())} are not all archive rows below {limit}")
    if len(rows) > 1 and not (np.diff(rows) > 0).all():
        bad.append(f"rows are not strictly increasing ({int((np.diff(rows) <= 0).sum())} steps down or repeated)")
    return [Finding(DAMAGE, relative(archive, folder / ROWS_FILE), "; ".join(bad))] if bad else []


def _hasher_findings(archive, folder: Path, manifest: dict) -> list[Finding]:
    """``hasher.pkl`` loads and is of the class the manifest names."""
    path = folder / HASHER_FILE
    where = relative(archive, path)
    if not path.is_file():
        return [Finding(DAMAGE, where, "is missing")]
    try:
        hasher = load_hasher(path)
    except (MedhashError, OSError, ValueError) as exc:
        return [Finding(DAMAGE, where, f"cannot be loaded ({str(exc).replace(str(path) + ': ', '')})")]
    want = (manifest.get("hasher") or {}).get("class", "KernelLSH")
    if type(hasher).__name__ != want:
        return [Finding(DAMAGE, where, f"holds a {type(hasher).__name__}, the manifest says {want}")]
    return []


def _engine_findings(archive, folder: Path, manifest: dict, items: int) -> list[Finding]:
    """An approximate index's engine file: there, readable, of the manifest's type, holding ``items`` codes."""
    kind = engine_kind(manifest)
    if kind == "milvus":
        return [Finding(NOTE, relative(archive, folder), "its codes live in Milvus; the collection was not checked")]
    if kind == "flat":
        return []
    from .engines.faiss_engines import FaissApproxEngine  # start-up: faiss only to open an approximate engine

    path = folder / ENGINE_FILE
    try:
        engine = FaissApproxEngine.load(path, kind, manifest.get("index_params") or {})
    except MedhashError as exc:
        return [Finding(DAMAGE, relative(archive, path), str(exc).replace(f"{path} ", "").split(";")[0])]
    except Exception as exc:  # noqa: BLE001  faiss reports an unreadable file as a bare RuntimeError
        why = str(exc).strip().splitlines()[-1].rsplit("Error: ", 1)[-1].replace(f" in {path}", "")
        return [Finding(DAMAGE, relative(archive, path), f"cannot be read by faiss ({why})")]
    if engine.ntotal != items:
        return [Finding(DAMAGE, relative(archive, path), f"holds {engine.ntotal} codes, the manifest {items} (an "
                                                         "update interrupted between the engine and the manifest)")]
    return []


def check_indexes(archive) -> list[Finding]:
    """:func:`check_index` of every folder under ``ARCHIVE/indexes`` (hidden ones are the writers' own)."""
    root = layout.indexes_dir(archive)
    if not root.is_dir():
        return []
    out = []
    for d in sorted(root.iterdir()):
        if d.is_dir() and not d.name.startswith("."):
            try:
                out += check_index(archive, d.name)
            except (TypeError, ValueError, KeyError, AttributeError) as exc:  # a manifest of unexpected content
                out.append(Finding(DAMAGE, relative(archive, d / layout.MANIFEST),
                                   f"does not hold what medhash writes ({type(exc).__name__}: {exc}); rebuild the "
                                   "index (medhash index)"))
    return out


def check_retrieval(archive) -> list[Finding]:
    """Models, feature caches and indexes of an archive (a path or an open :class:`~medhash.store.Archive`)."""
    return check_models(archive) + check_feature_caches(archive) + check_indexes(archive)
