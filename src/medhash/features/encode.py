"""Batched encoding: query arrays → features, and the per-model feature cache of an archive.

Feature cache of model ``<name>``::

    ARCHIVE/features/<name>.f32    (rows, dim) float32, raw, C order, row r = archive row r
    ARCHIVE/features/<name>.json   {"model_sha256": ..., "rows": ..., "dim": ..., "channel": ...}

The ``.f32`` file is append-only: :func:`archive_features` encodes only the archive rows beyond the
cached ``rows`` and appends them; the JSON (replaced atomically) is written after the data, so its
``rows`` is the truth and bytes past it (left by a killed run) are cut off by the next run. A cache
made by another checkpoint (``model_sha256`` differs from the model's ``sha256``) is rebuilt from
scratch. For a ``dose`` model, rows without dose get NaN features, so rows stay aligned with the
archive; later stages skip them. A ``geometry`` model encodes each row's geometry image, computed
from the archive's CT and contours batch by batch (:mod:`medhash.geometry.slices`).

Determinism: encoding runs in eval mode with deterministic algorithms, the model and the inputs
in ``channels_last`` memory format as in training (about twice as fast on CPU for ``deep``), so
the same model, input and batch size give bit-identical features. Features of one slice may
differ in the last bits (float32 rounding) between batch sizes, because the CPU kernels block the
computation by batch. The cache is encoded in batches aligned to multiples of ``batch_size`` in
row numbers, so an incremental run shares every batch but its first with a full encoding: it
equals a fresh full encoding to float32 rounding, and bit for bit when the cached row count was a
multiple of ``batch_size``.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import ModelMismatchError
from ..store import Archive
from ..store.durable import file_lock, write_json_atomic
from ..threads import torch_settings
from .catalog import check_config, feature_paths, open_cache, read_cache_meta
from .checkpoints import load_model
from .models import AutoEncoder
from .preprocess import check_shape, postprocess, preprocess
from .train import slice_reader

ENCODE_BATCH = 256


def _check_model(model: AutoEncoder, config: dict) -> None:
    check_config(config)
    arch, dim = getattr(model, "arch", None), getattr(model, "latent_dim", None)
    if int(config["latent_dim"]) != dim or config["arch"] != arch:
        raise ModelMismatchError(f"model ({arch}, latent_dim {dim}) does not match its config "
                                 f"({config['arch']}, latent_dim {config['latent_dim']})")


def _batches(model: AutoEncoder, config: dict, arrays: np.ndarray, fn, width: int | tuple, batch_size: int,
             progress: bool, desc: str) -> np.ndarray:
    _check_model(model, config)
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    channel = config["channel"]
    arr = arrays if getattr(arrays, "ndim", None) == 3 else np.asarray(arrays)
    if arr.ndim == 2:
        arr = arr[None]
    check_shape(arr)
    n = len(arr)
    out = np.empty((n,) + ((width,) if isinstance(width, int) else width), dtype=np.float32)
    was_training = model.training
    model.to(memory_format=torch.channels_last).eval()
    try:
        with torch_settings(), torch.inference_mode():
            for i in tqdm(range(0, n, batch_size), desc=desc, unit="batch", disable=not progress, leave=False):
                x = torch.from_numpy(preprocess(channel, arr[i:i + batch_size])).contiguous(
                    memory_format=torch.channels_last)
                out[i:i + batch_size] = fn(x).numpy()
    finally:
        model.train(was_training)
    return out


def encode_arrays(model: AutoEncoder, config: dict, arrays: np.ndarray, batch_size: int = ENCODE_BATCH,
                  progress: bool = False) -> np.ndarray:
    """Features of query slices.

    Parameters
    ----------
    model, config : as returned by :func:`load_model`.
    arrays : (n, 128, 128) (or one (128, 128)) slices on the model grid, HU for a ``ct`` model,
        Gy for a ``dose`` model, geometry images (:func:`medhash.geometry.slices.geometry_images`)
        for a ``geometry`` model.
    batch_size : slices per forward pass.

    Returns
    -------
    (n, latent_dim) float32. Deterministic for the same model, input and batch size (see the
    module docstring).
    """
    return _batches(model, config, arrays, model.encode, int(config["latent_dim"]), batch_size, progress,
                    f"encode {config.get('name', '')}")


def reconstruct_arrays(model: AutoEncoder, config: dict, arrays: np.ndarray, batch_size: int = ENCODE_BATCH,
                       progress: bool = False) -> np.ndarray:
    """Auto-encoder reconstructions of slices, back in HU or Gy: (n, 128, 128) float32.

    Values are clipped to the channel's window (``ct`` [-1000, 1000] HU, ``dose`` [0, 80] Gy).
    """
    x = _batches(model, config, arrays, model.forward, (1,) + tuple(np.shape(arrays)[-2:]), batch_size, progress,
                 f"reconstruct {config.get('name', '')}")
    return postprocess(config["channel"], x)


def _encode_rows(archive: Any, model: AutoEncoder, channel: str, data, cached: int, n: int, dim: int,
                 batch_size: int, progress: bool, name: str) -> None:
    """Encode archive rows ``cached`` to ``n`` and append their features to ``data`` (cut to ``cached``
    rows first); NaN rows for a ``dose`` model's rows without dose."""
    read = slice_reader(archive, channel)
    src = archive.ct if channel == "ct" else archive.dose
    has = archive.table()["has_dose"][cached:n] if channel == "dose" else np.ones(n - cached, dtype=bool)
    with open(data, "ab+") as f, torch_settings(), torch.inference_mode():
        f.truncate(cached * dim * 4)
        f.seek(cached * dim * 4)
        bar = tqdm(total=n - cached, desc=f"features {name}", unit="slice", disable=not progress)
        # batches aligned to multiples of batch_size in row numbers, so that an incremental
        # run shares all but its first batch with a full one
        start = cached
        while start < n:
            stop = min(n, (start // batch_size + 1) * batch_size)
            feats = np.full((stop - start, dim), np.nan, dtype=np.float32)
            take = np.flatnonzero(has[start - cached:stop - cached])
            if channel == "geometry":
                block = read(np.arange(start, stop))
            elif len(take) == len(feats):
                block = src[start:stop]
            else:
                block = src[start + take] if len(take) else None
            if block is not None:
                x = torch.from_numpy(preprocess(channel, block)).contiguous(memory_format=torch.channels_last)
                feats[take] = model.encode(x).numpy()
            f.write(np.ascontiguousarray(feats).tobytes())
            bar.update(stop - start)
            start = stop
        bar.close()
        f.flush()
        os.fsync(f.fileno())


def archive_features(archive: Any, name: str, progress: bool = True, batch_size: int = ENCODE_BATCH) -> np.ndarray:
    """Features of every archive row under model ``name``, from the cache, encoding what is missing.

    Parameters
    ----------
    archive : :class:`medhash.Archive`.
    name : a model of the archive (:func:`list_models`).
    progress : tqdm bar over the batches encoded.
    batch_size : slices per forward pass.

    Returns
    -------
    (len(archive), latent_dim) float32, read-only memory map of ``features/<name>.f32`` in archive
    row order. For a ``dose`` model the rows without dose are NaN.

    Raises
    ------
    NotFoundError : no such model. ModelMismatchError : the checkpoint fails its sha256 check.
    """
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not hasattr(archive, "table"):
        archive = Archive(archive)
    model, config = load_model(archive, name)
    sha, dim, channel = config["sha256"], int(config["latent_dim"]), config["channel"]
    data, meta_path = feature_paths(archive, name)
    data.parent.mkdir(parents=True, exist_ok=True)
    # a second encoder waits, then finds the cache filled
    with file_lock(data.with_name(f".{name}.lock")):
        n = len(archive)
        meta = read_cache_meta(meta_path)
        cached = 0
        if (meta is not None and meta.get("model_sha256") == sha and int(meta.get("dim", -1)) == dim
                and 0 <= int(meta.get("rows", -1)) <= n and data.is_file()
                and data.stat().st_size >= int(meta["rows"]) * dim * 4):
            cached = int(meta["rows"])
        elif meta is not None or data.exists():
            # another checkpoint (or a damaged cache): forget it first, then rebuild from scratch
            write_json_atomic(meta_path, {"model_sha256": sha, "rows": 0, "dim": dim, "channel": channel,
                                          "model": name})
        if cached < n:
            _encode_rows(archive, model, channel, data, cached, n, dim, batch_size, progress, name)
            write_json_atomic(meta_path, {"model_sha256": sha, "rows": n, "dim": dim, "channel": channel,
                                          "model": name})
        return open_cache(data, n, dim)


