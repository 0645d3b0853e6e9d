"""Checking the archive's dose models (the part of ``medhash check`` for ``ARCHIVE/dose-models/``).

Per dose model (``dose-models/NAME/``, written whole by :func:`medhash.dose.model.save_dose_model`):
``manifest.json`` is there, readable and of this medhash's format and features, and ``model.txt`` and
``atlas.npz`` match the sha256 it records. Nothing here repairs a dose model: fit it again
(``medhash fit-dose-model``). LightGBM is not loaded.
"""
from __future__ import annotations

from pathlib import Path

from ..store import check as store_check
from ..store import layout
from .model import ATLAS_FILE, FEATURES, FORMAT, MODEL_FILE


def check_dose_model(archive, name: str) -> list:
    """The checks of the module docstring on ``dose-models/NAME``: a list of
    :class:`~medhash.store.check.Finding` (kind ``damage``)."""
    from ..features.catalog import sha256_file  # as medhash.dose.model: one sha256 helper for every stored model

    folder = layout.dose_model_dir(archive, name)
    again = f"fit it again (medhash fit-dose-model, name {name!r})"
    manifest, why = store_check.read_json(folder / layout.MANIFEST)
    where = store_check.relative(archive, folder / layout.MANIFEST)
    if manifest is None:
        return [store_check.Finding(store_check.DAMAGE, where, f"{why}; {again}")]
    if manifest.get("format") != FORMAT or manifest.get("features") != list(FEATURES):
        return [store_check.Finding(store_check.DAMAGE, where, f"made by another version of medhash "
                                                               f"({manifest.get('format')}); {again}")]
    out = []
    recorded = manifest.get("sha256") or {}
    for fname in (MODEL_FILE, ATLAS_FILE):
        path = folder / fname
        rel = store_check.relative(archive, path)
        if not path.is_file():
            out.append(store_check.Finding(store_check.DAMAGE, rel, f"is missing; {again}"))
        elif fname not in recorded:
            out.append(store_check.Finding(store_check.DAMAGE, where, f"records no sha256 of {fname}; {again}"))
        elif sha256_file(path) != recorded[fname]:
            out.append(store_check.Finding(store_check.DAMAGE, rel, f"does not match the sha256 its manifest "
                                                                    f"records; {again}"))
    return out


def check_dose_models(archive) -> list:
    """:func:`check_dose_model` of every folder under ``ARCHIVE/dose-models`` (hidden ones are the writer's own)."""
    root = layout.dose_models_dir(archive)
    if not root.is_dir():
        return []
    out = []
    for d in sorted(root.iterdir()):
        if d.is_dir() and not d.name.startswith("."):
            out += check_dose_model(archive, d.name)
    return out
