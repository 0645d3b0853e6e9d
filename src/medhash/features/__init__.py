"""Features without labels: convolutional auto-encoders on CT and dose slices (method step 1).

The encoder's bottleneck (``latent_dim`` float32, default 128) is the feature vector of a slice.

Public API::

    from medhash import Archive
    from medhash.features import train_model, list_models, load_model, encode_arrays, archive_features

    arch = Archive("archive")
    info = train_model(arch, "ct", "shallow")           # saves ARCHIVE/models/ct-shallow/
    feats = archive_features(arch, "ct-shallow")         # (len(arch), 128) float32, cached
    model, config = load_model(arch, "ct-shallow")
    q = encode_arrays(model, config, hu_slices)          # (n, 128) float32

Modules: :mod:`.preprocess` (channels and their fixed scaling), :mod:`.models` (architectures),
:mod:`.train` (training loop), :mod:`.checkpoints` (``models/<name>/`` on disk),
:mod:`.encode` (batched encoding and the ``features/<name>.f32`` cache).
"""
from .checkpoints import list_models, load_model, read_metrics
from .encode import archive_features, cached_features, encode_arrays, reconstruct_arrays
from .models import ARCHITECTURES, AutoEncoder, build_model, count_parameters
from .preprocess import (CHANNEL_RANGE, CHANNELS, CT_MAX_HU, CT_MIN_HU, CT_SCALE_HU, DOSE_MAX_GY, postprocess,
                         preprocess, psnr)
from .train import TrainingDataError, split_patients, train_model

__all__ = ["ARCHITECTURES", "AutoEncoder", "CHANNELS", "CHANNEL_RANGE", "CT_MAX_HU", "CT_MIN_HU", "CT_SCALE_HU",
           "DOSE_MAX_GY", "TrainingDataError", "archive_features", "build_model", "cached_features",
           "count_parameters", "encode_arrays", "list_models", "load_model", "postprocess", "preprocess", "psnr",
           "read_metrics", "reconstruct_arrays", "split_patients", "train_model"]
