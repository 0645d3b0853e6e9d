"""Every path inside an archive folder, and the one rule for the names of its objects.

::

    ARCHIVE/
      catalog.sqlite         patients, series, slices, structures (:mod:`medhash.store.archive`)
      .lock                  held by the one writer of the catalog and arrays
      arrays/                CT (HU), dose (Gy), masks on the model grid, append-only
      models/<name>/         auto-encoder checkpoint, config, metrics (:mod:`medhash.features`)
      features/<name>.f32    cached float32 features of every slice, per model
      indexes/<name>/        codes, hasher, engine, manifest.json (:mod:`medhash.retrieval`)
      dose-models/<name>/    LightGBM dose model, geometry atlas, manifest.json (:mod:`medhash.dose`)
      spool/                 files received by ``medhash listen``, not yet ingested (:mod:`medhash.net`)

No other module joins these names to an archive path: they call the functions here.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..errors import InputError

CATALOG = "catalog.sqlite"
LOCK = ".lock"
ARRAYS_DIR = "arrays"
MODELS_DIR = "models"
FEATURES_DIR = "features"
INDEXES_DIR = "indexes"
DOSE_MODELS_DIR = "dose-models"
SPOOL_DIR = "spool"
MANIFEST = "manifest.json"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$")


def check_name(name: str, what: str = "name") -> str:
    """Return ``name`` if it can name a model or an index: 1-100 letters, digits, ``.``, ``_``, ``+`` or
    ``-``, starting with a letter or digit (a plain folder name, never a path); else raise
    :class:`~medhash.errors.InputError` naming ``what`` (``"model name"``, ``"index name"``)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise InputError(f"invalid {what} {name!r}: use 1-100 letters, digits, '.', '_', '+' or '-', "
                         "starting with a letter or digit")
    return name


def archive_dir(archive: Any) -> Path:
    """The folder of an :class:`~medhash.Archive` (or of a path given directly)."""
    return Path(getattr(archive, "path", archive))


def catalog_path(archive: Any) -> Path:
    """``ARCHIVE/catalog.sqlite``."""
    return archive_dir(archive) / CATALOG


def lock_path(archive: Any) -> Path:
    """``ARCHIVE/.lock``, the writer lock of the catalog and arrays."""
    return archive_dir(archive) / LOCK


def arrays_dir(archive: Any) -> Path:
    """``ARCHIVE/arrays``."""
    return archive_dir(archive) / ARRAYS_DIR


def models_dir(archive: Any) -> Path:
    """``ARCHIVE/models``."""
    return archive_dir(archive) / MODELS_DIR


def model_dir(archive: Any, name: str) -> Path:
    """``ARCHIVE/models/<name>``."""
    return models_dir(archive) / check_name(name, "model name")


def features_dir(archive: Any) -> Path:
    """``ARCHIVE/features``."""
    return archive_dir(archive) / FEATURES_DIR


def indexes_dir(archive: Any) -> Path:
    """``ARCHIVE/indexes``."""
    return archive_dir(archive) / INDEXES_DIR


def dose_models_dir(archive: Any) -> Path:
    """``ARCHIVE/dose-models``."""
    return archive_dir(archive) / DOSE_MODELS_DIR


def dose_model_dir(archive: Any, name: str) -> Path:
    """``ARCHIVE/dose-models/<name>``."""
    return dose_models_dir(archive) / check_name(name, "dose model name")


def index_dir(archive: Any, name: str) -> Path:
    """``ARCHIVE/indexes/<name>``."""
    return indexes_dir(archive) / check_name(name, "index name")


def spool_dir(archive: Any) -> Path:
    """``ARCHIVE/spool``."""
    return archive_dir(archive) / SPOOL_DIR
