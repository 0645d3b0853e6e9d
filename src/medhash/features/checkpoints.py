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

from typing import Any

import torch

from ..errors import ModelMismatchError
from ..store.durable import fsync_file, replace_dir_atomically, write_json_atomic
from ..store.layout import model_dir
from .catalog import CONFIG, METRICS, WEIGHTS, check_config, read_config, sha256_file
from .models import AutoEncoder, build_model


def save_checkpoint(archive: Any, name: str, model: AutoEncoder, config: dict, metrics: dict) -> dict:
    """Write ``models/<name>/`` atomically; returns ``config`` with ``sha256`` filled in.

    The three files are written and flushed in a hidden folder ``models/.<name>.tmp-PID``, which
    then replaces ``models/<name>`` (the old folder is renamed aside first and removed after).
    """
    with replace_dir_atomically(model_dir(archive, name)) as tmp:
        weights = tmp / WEIGHTS
        with open(weights, "wb") as f:
            torch.save({k: v.detach().contiguous() for k, v in model.state_dict().items()}, f)
        fsync_file(weights)
        config = {**config, "sha256": sha256_file(weights)}
        write_json_atomic(tmp / METRICS, metrics)
        write_json_atomic(tmp / CONFIG, config)
    return config


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


