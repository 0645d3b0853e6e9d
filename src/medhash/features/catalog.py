"""What the archive holds of the models, read without torch: model configs and metrics
(``ARCHIVE/models/<name>/``, written by :mod:`.checkpoints`), the architectures' names and revisions,
and the feature caches (``ARCHIVE/features/<name>.f32``, written by :mod:`.encode`) as they are.

Commands that only read (``medhash info``, a search of an archive slice) need nothing else from
:mod:`medhash.features`, so they never import torch.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelMismatchError, NotFoundError
from ..store.layout import archive_dir, check_name, features_dir, model_dir, models_dir
from .preprocess import CHANNELS, preprocessing_constants

WEIGHTS = "model.pt"
CONFIG = "config.json"
METRICS = "metrics.json"

ARCHITECTURES = ("shallow", "deep")
"""The architectures :func:`build_model` knows."""
ARCH_REVISION = {"shallow": 2, "deep": 1}
"""Bumped whenever an architecture's layers change (shallow 2: ELU instead of ReLU), so a checkpoint
trained with other layers is refused instead of loaded into the wrong network."""


def check_arch(arch: str) -> str:
    """Return ``arch`` if known, else raise ValueError naming the known architectures."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}: choose one of {', '.join(map(repr, ARCHITECTURES))}")
    return arch


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def list_models(archive: Any) -> list[dict]:
    """The configs (``config.json``) of the archive's models, sorted by name; [] when none.

    Folders without a readable config are skipped.
    """
    root = models_dir(archive)
    if not root.is_dir():
        return []
    out = []
    for d in sorted(root.iterdir()):
        if d.name.startswith(".") or not (d / CONFIG).is_file():
            continue
        try:
            out.append(json.loads((d / CONFIG).read_text()))
        except (OSError, ValueError):
            continue
    return out


def read_config(archive: Any, name: str) -> dict:
    """``config.json`` of model ``name``; NotFoundError naming the available models if missing."""
    d = model_dir(archive, name)
    if not (d / CONFIG).is_file() or not (d / WEIGHTS).is_file():
        names = [c.get("name") for c in list_models(archive)]
        avail = ", ".join(names) if names else "none (train one with medhash.features.train_model)"
        raise NotFoundError(f"model {name!r} is not in the archive {archive_dir(archive)}: available models: {avail}")
    return json.loads((d / CONFIG).read_text())


def read_metrics(archive: Any, name: str) -> dict:
    """``metrics.json`` of model ``name``."""
    read_config(archive, name)
    return json.loads((model_dir(archive, name) / METRICS).read_text())


def check_config(config: dict, where: str = "config") -> None:
    """ModelMismatchError if a config names an unknown channel/arch or other preprocessing constants."""
    channel, arch = config.get("channel"), config.get("arch")
    if channel not in CHANNELS or arch not in ARCHITECTURES:
        raise ModelMismatchError(f"{where}: channel {channel!r} / arch {arch!r} unknown to this medhash")
    if int(config.get("arch_revision", 1)) != ARCH_REVISION[arch]:
        raise ModelMismatchError(
            f"{where}: trained with revision {config.get('arch_revision', 1)} of the {arch} architecture, this "
            f"medhash builds revision {ARCH_REVISION[arch]}; train the model again")
    if config.get("preprocessing") != preprocessing_constants(channel):
        raise ModelMismatchError(
            f"{where}: preprocessing {config.get('preprocessing')} differs from this medhash's "
            f"{preprocessing_constants(channel)}; train the model again")


# ---------------------------------------------------------------- archive feature cache
def feature_paths(archive: Any, name: str) -> tuple[Path, Path]:
    """(``features/<name>.f32``, ``features/<name>.json``) of the archive."""
    d = features_dir(archive)
    return d / f"{check_name(name, 'model name')}.f32", d / f"{name}.json"


def read_cache_meta(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def open_cache(data: Path, rows: int, dim: int) -> np.ndarray:
    if rows == 0:
        return np.empty((0, dim), dtype=np.float32)
    return np.memmap(data, dtype=np.float32, mode="r", shape=(rows, dim))


def cached_features(archive: Any, name: str) -> np.ndarray:
    """The cached features of model ``name`` as they are (no encoding, no model check): (rows, dim)."""
    data, meta_path = feature_paths(archive, name)
    meta = read_cache_meta(meta_path)
    if meta is None:
        return np.empty((0, 0), dtype=np.float32)
    return open_cache(data, int(meta["rows"]), int(meta["dim"]))
