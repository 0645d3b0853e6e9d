"""Model checkpoints in the archive: ``ARCHIVE/models/<name>/``.

Layout of one model folder::

    models/<name>/model.pt       the state_dict (torch.save)
    models/<name>/config.json    what made it (see :func:`medhash.features.train_model`), with the
                                 ``sha256`` of model.pt
    models/<name>/metrics.json   per-epoch losses, final held-out MSE / PSNR

A model folder is written whole into a hidden temporary folder and then renamed into place, so a
killed training never leaves a half checkpoint: readers see the previous model or the new one.
Folders whose names start with ``.`` are temporary and ignored.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelMismatchError, NotFoundError
from ..store.durable import fsync_dir, fsync_file, write_json_atomic
from ..store.layout import archive_dir, check_name, model_dir, models_dir
from .models import ARCH_REVISION, ARCHITECTURES, AutoEncoder, build_model
from .preprocess import CHANNELS, preprocessing_constants

WEIGHTS = "model.pt"
CONFIG = "config.json"
METRICS = "metrics.json"


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_checkpoint(archive: Any, name: str, model: AutoEncoder, config: dict, metrics: dict) -> dict:
    """Write ``models/<name>/`` atomically; returns ``config`` with ``sha256`` filled in.

    The three files are written and flushed in a hidden folder ``models/.<name>.tmp-PID``, which
    then replaces ``models/<name>`` (the old folder is renamed aside first and removed after).
    """
    root = models_dir(archive)
    root.mkdir(parents=True, exist_ok=True)
    target = root / check_name(name, "model name")
    for stale in root.glob(f".{name}.tmp-*"):          # left by a killed run
        shutil.rmtree(stale, ignore_errors=True)
    tmp = root / f".{name}.tmp-{os.getpid()}-{time.time_ns()}"
    tmp.mkdir()
    try:
        weights = tmp / WEIGHTS
        with open(weights, "wb") as f:
            torch.save({k: v.detach().contiguous() for k, v in model.state_dict().items()}, f)
        fsync_file(weights)
        config = {**config, "sha256": sha256_file(weights)}
        write_json_atomic(tmp / METRICS, metrics)
        write_json_atomic(tmp / CONFIG, config)
        fsync_dir(tmp)
        if target.exists():
            old = root / f".{name}.old-{os.getpid()}-{time.time_ns()}"
            os.rename(target, old)
            os.rename(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, target)
        fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return config


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


def load_model(archive: Any, name: str) -> tuple[AutoEncoder, dict]:
    """Load model ``name`` of the archive, in eval mode, with its config.

    Raises
    ------
    NotFoundError : no such model (the message lists the available ones).
    ModelMismatchError : model.pt does not match the ``sha256`` recorded in config.json (it was
        changed or replaced after training), or its weights do not fit the recorded architecture,
        or its preprocessing differs from this medhash's.
    """
    config = read_config(archive, name)
    d = model_dir(archive, name)
    sha = sha256_file(d / WEIGHTS)
    if sha != config.get("sha256"):
        raise ModelMismatchError(
            f"{d / WEIGHTS}: sha256 {sha[:16]}… does not match the {config.get('sha256', '')[:16]}… recorded in "
            f"{d / CONFIG}; the checkpoint was modified after training: train model {name!r} again")
    check_config(config, where=str(d / CONFIG))
    model = build_model(config["arch"], int(config["latent_dim"]))
    try:
        state = torch.load(d / WEIGHTS, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError) as exc:
        raise ModelMismatchError(f"{d / WEIGHTS}: weights do not fit architecture {config['arch']!r} with "
                                 f"latent_dim {config['latent_dim']}: {exc}") from None
    model.to(memory_format=torch.channels_last).eval()
    return model, config


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
