"""Features without labels: convolutional auto-encoders on CT, dose and geometry slices (method step 1).

The encoder's bottleneck (``latent_dim`` float32, default 128) is the feature vector of a slice.

Public API::

    from medhash import Archive
    from medhash.features import train_model, list_models, load_model, encode_arrays, archive_features

    arch = Archive("archive")
    info = train_model(arch, "ct", "shallow")           # saves ARCHIVE/models/ct-shallow/
    feats = archive_features(arch, "ct-shallow")         # (len(arch), 128) float32, cached
    model, config = load_model(arch, "ct-shallow")
    q = encode_arrays(model, config, hu_slices)          # (n, 128) float32

Modules: :mod:`.preprocess` (channels and their fixed scaling), :mod:`.catalog` (model configs and
feature caches, read without torch), :mod:`.models` (architectures), :mod:`.train` (training loop),
:mod:`.checkpoints` (``models/<name>/`` written and loaded), :mod:`.encode` (batched encoding and
the ``features/<name>.f32`` cache).

Start-up: importing this package does not import torch. The names that need it (:data:`TORCH_NAMES`)
load their module, and torch with it, on first use — so ``medhash info`` and a search of an archive
slice, which only read configs and cached features, never pay torch's two seconds.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ..errors import TrainingDataError
from .catalog import ARCH_REVISION, ARCHITECTURES, cached_features, list_models, read_config, read_metrics
from .preprocess import (CHANNEL_RANGE, CHANNELS, CT_MAX_HU, CT_MIN_HU, CT_SCALE_HU, DOSE_MAX_GY, postprocess,
                         preprocess, psnr)

if TYPE_CHECKING:  # what the lazy names below are, for readers and type checkers
    from .checkpoints import load_model
    from .encode import archive_features, encode_arrays, reconstruct_arrays
    from .models import AutoEncoder, build_model, count_parameters
    from .train import split_patients, train_model

TORCH_NAMES = {"load_model": "checkpoints", "archive_features": "encode", "encode_arrays": "encode",
               "reconstruct_arrays": "encode", "AutoEncoder": "models", "build_model": "models",
               "count_parameters": "models", "split_patients": "train", "train_model": "train"}
"""Public names whose module imports torch: name -> submodule, imported on first access."""


def __getattr__(name: str):
    """Load a torch-backed name's module on first use (PEP 562)."""
    if name in TORCH_NAMES:
        value = getattr(importlib.import_module(f".{TORCH_NAMES[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ARCHITECTURES", "ARCH_REVISION", "AutoEncoder", "CHANNELS", "CHANNEL_RANGE", "CT_MAX_HU", "CT_MIN_HU",
           "CT_SCALE_HU", "DOSE_MAX_GY", "TrainingDataError", "archive_features", "build_model", "cached_features",
           "count_parameters", "encode_arrays", "list_models", "load_model", "postprocess", "preprocess", "psnr",
           "read_config", "read_metrics", "reconstruct_arrays", "split_patients", "train_model"]
