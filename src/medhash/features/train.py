"""Training an auto-encoder on the slices of an archive (:func:`train_model`)."""
from __future__ import annotations

import copy
import datetime as _dt
import math
import time
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import TrainingDataError
from ..threads import torch_settings
from ..store.layout import check_name, model_dir
from .checkpoints import save_checkpoint
from .models import ARCH_REVISION, build_model, check_arch, count_parameters
from .preprocess import check_channel, preprocess, preprocessing_constants, psnr

CHECKPOINT_FORMAT = 1
_CHUNK = 512


def split_patients(patient_ids: list[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Seeded split of patients into (train, validation), both sorted.

    The sorted unique ids are shuffled with ``np.random.default_rng(seed)``; the first
    ``max(1, round(val_fraction * n))`` (at most ``n - 1``) go to validation. With one patient, or
    ``val_fraction == 0``, validation is empty (the caller validates on the training set).
    """
    pids = sorted(set(patient_ids))
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if len(pids) < 2 or val_fraction == 0:
        return pids, []
    n_val = min(len(pids) - 1, max(1, int(round(val_fraction * len(pids)))))
    order = np.random.default_rng(seed).permutation(len(pids))
    val = sorted(pids[i] for i in order[:n_val])
    train = sorted(pids[i] for i in order[n_val:])
    return train, val


def slice_reader(archive: Any, channel: str):
    """A function ``rows -> (len(rows), 128, 128)`` of the images ``channel`` sees: the archive's CT (HU)
    or dose (Gy), or geometry images computed from its CT and contours (:mod:`medhash.geometry.slices`;
    the structure sets are read once here and shared by every call)."""
    if channel == "geometry":
        # lazy: medhash.geometry (scipy.ndimage) only for geometry models
        from ..geometry.slices import archive_geometry_images

        sets = archive.structure_sets()
        return lambda rows: archive_geometry_images(archive, rows, structure_sets=sets)
    src = archive.ct if channel == "ct" else archive.dose
    return lambda rows: src[rows]


def _load(archive: Any, channel: str, rows: np.ndarray) -> torch.Tensor:
    """Preprocessed slices of ``rows`` as one (n, 1, 128, 128) float32 tensor."""
    read = slice_reader(archive, channel)
    out = np.empty((len(rows), 1) + archive.ct.shape[1:], dtype=np.float32)
    for i in range(0, len(rows), _CHUNK):
        out[i:i + _CHUNK] = preprocess(channel, read(rows[i:i + _CHUNK]))
    return torch.from_numpy(out)


def _evaluate(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 256) -> float:
    """Mean squared error over all pixels of ``x``, eval mode."""
    model.eval()
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            xb = x[i:i + batch_size].contiguous(memory_format=torch.channels_last)
            total += float(((model(xb) - xb) ** 2).sum(dtype=torch.float64))
    return total / max(1, x.numel())


def train_model(archive: Any, channel: str, arch: str = "shallow", *, epochs: int = 20, batch_size: int = 64,
                latent_dim: int = 128, seed: int = 0, lr: float = 1e-3, patience: int | None = 3,
                val_fraction: float = 0.15, name: str | None = None, progress: bool = True,
                max_slices: int | None = None, lr_schedule: str = "constant") -> dict:
    """Train an auto-encoder on one channel of the archive and save it in ``ARCHIVE/models/<name>/``.

    Parameters
    ----------
    archive : :class:`medhash.Archive`.
    channel : ``"ct"`` (every row), ``"dose"`` (rows with ``has_dose``), ``"geometry"`` (:func:`slice_reader`).
    arch : ``"shallow"`` or ``"deep"`` (:mod:`medhash.features.models`).
    epochs : maximum number of epochs (>= 1).
    batch_size : slices per Adam step.
    latent_dim : length of the feature vector.
    seed : seeds the weight initialisation (``torch.manual_seed`` inside a forked RNG, so the
        caller's global RNG is untouched), the patient split and the batch order
        (``np.random.default_rng``).
    lr : Adam learning rate (the start of the decay with ``lr_schedule="cosine"``).
    patience : stop after this many epochs without a lower validation MSE (None or 0: never);
        the weights of the best epoch are kept.
    val_fraction : share of the *patients* held out for validation (at least one when there are
        two or more patients; with a single patient, or 0, validation is on the training set and
        ``config["validation"]`` says so).
    name : model name (default ``f"{channel}-{arch}"``); an existing model of that name is replaced.
    progress : show a tqdm bar per epoch with the running loss.
    max_slices : use at most this many slices, a seeded random subset of the eligible rows taken
        before the patient split (for quick runs); None: all.
    lr_schedule : ``"constant"`` (default) or ``"cosine"`` (decays from ``lr`` to 0 over ``epochs``, per step;
        on the OpenKBP CT set it trained worse in 20 epochs, as the model is far from converged).

    Returns
    -------
    dict : the saved ``config.json`` (name, channel, arch, latent_dim, preprocessing, seed, epochs_run,
    best_epoch, train_patients, val_patients, n_train_slices, n_val_slices, torch_version, created,
    sha256, ...) plus ``held_out_mse``, ``held_out_psnr`` (best weights, validation set),
    ``seconds`` (total), ``seconds_per_epoch`` and ``path`` (the model folder).

    Raises
    ------
    ValueError : unknown channel or arch, epochs <= 0, bad name or fractions.
    TrainingDataError : no slices to train on (empty archive, or no dose for ``dose``).

    Notes
    -----
    Deterministic for a seed on a given machine and thread count: ``use_deterministic_algorithms``
    is on during training and the batch order comes from the seed. Different thread counts or CPUs
    may change the last bits of the weights.
    """
    name, epochs, batch_size, latent_dim = _check_arguments(channel, arch, name, epochs, batch_size, latent_dim, lr,
                                                            lr_schedule, max_slices)
    split = _split_rows(archive, channel, max_slices, val_fraction, seed)
    t_start = time.perf_counter()
    x_train = _load(archive, channel, split["train_rows"])
    x_val = _load(archive, channel, split["val_rows"]) if len(split["val_rows"]) else x_train
    with torch_settings() as threads, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(arch, latent_dim).to(memory_format=torch.channels_last)
        history, (held_out_mse, best_epoch) = _fit(
            model, x_train, x_val, channel=channel, name=name, epochs=epochs, batch_size=batch_size, lr=lr,
            lr_schedule=lr_schedule, patience=patience, seed=seed, progress=progress)
    seconds = time.perf_counter() - t_start
    config = {"format": CHECKPOINT_FORMAT, "name": name, "channel": channel, "arch": arch,
              "arch_revision": ARCH_REVISION[arch], "latent_dim": latent_dim,
              "preprocessing": preprocessing_constants(channel), "seed": int(seed), "lr": float(lr),
              "lr_schedule": lr_schedule, "batch_size": batch_size, "epochs_requested": epochs,
              "epochs_run": len(history), "best_epoch": best_epoch, "patience": patience,
              "stopped_early": len(history) < epochs, "val_fraction": float(val_fraction),
              "validation": split["validation"], "max_slices": max_slices, "train_patients": split["train_patients"],
              "val_patients": split["val_patients"], "n_train_slices": int(len(split["train_rows"])),
              "n_val_slices": int(len(split["val_rows"])), "archive_rows": split["archive_rows"],
              "n_parameters": count_parameters(model), "torch_version": torch.__version__,
              "numpy_version": np.__version__, "threads": threads, "deterministic": True,
              "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    metrics = {"epochs": history,
               "final": {"held_out_mse": held_out_mse, "held_out_psnr": psnr(channel, held_out_mse),
                         "best_epoch": best_epoch, "evaluated_on": split["validation"], "n_slices": int(len(x_val))},
               "seconds": seconds, "seconds_per_epoch": float(np.mean([h["seconds"] for h in history]))}
    config = save_checkpoint(archive, name, model, config, metrics)
    return {**config, "held_out_mse": held_out_mse, "held_out_psnr": psnr(channel, held_out_mse), "seconds": seconds,
            "seconds_per_epoch": metrics["seconds_per_epoch"], "path": str(model_dir(archive, name))}


def _check_arguments(channel: str, arch: str, name: str | None, epochs: int, batch_size: int, latent_dim: int,
                     lr: float, lr_schedule: str, max_slices: int | None) -> tuple[str, int, int, int]:
    """(model name, epochs, batch_size, latent_dim); ValueError for an unknown channel, arch or schedule, a bad
    name, or counts and rates out of range."""
    check_channel(channel)
    check_arch(arch)
    if int(epochs) < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if lr_schedule not in ("cosine", "constant"):
        raise ValueError(f"lr_schedule must be 'cosine' or 'constant', got {lr_schedule!r}")
    if max_slices is not None and int(max_slices) < 1:
        raise ValueError(f"max_slices must be >= 1 or None, got {max_slices}")
    return check_name(name or f"{channel}-{arch}", "model name"), int(epochs), int(batch_size), int(latent_dim)


def _split_rows(archive: Any, channel: str, max_slices: int | None, val_fraction: float, seed: int) -> dict:
    """The archive rows to train and validate on: ``train_rows``, ``val_rows`` (int64 arrays),
    ``train_patients``, ``val_patients``, ``validation`` (what the validation set is, in words) and
    ``archive_rows``; TrainingDataError when there is nothing to train on."""
    table = archive.table()
    n_rows = int(table["live"].sum())
    if n_rows == 0:
        raise TrainingDataError(f"the archive {archive.path} has no slices: ingest data into it before training")
    eligible = table["row"][table["has_dose"]] if channel == "dose" else table["row"][table["live"]]
    if len(eligible) == 0:
        raise TrainingDataError(f"the archive {archive.path} has {n_rows} slices but none with dose: "
                                "a 'dose' model needs slices with RTDOSE / dose.csv")
    if max_slices is not None and len(eligible) > max_slices:
        pick = np.random.default_rng([seed, 2]).choice(len(eligible), int(max_slices), replace=False)
        eligible = eligible[np.sort(pick)]
    pid_of = table["patient_id"]
    train_p, val_p = split_patients(list(pid_of[eligible]), val_fraction, seed)
    in_val = np.isin(pid_of[eligible], np.array(val_p, dtype=object)) if val_p else np.zeros(len(eligible), bool)
    validation = "held-out patients" if val_p else (
        "training set (single patient)" if len(train_p) == 1 else "training set (val_fraction = 0)")
    return {"train_rows": eligible[~in_val], "val_rows": eligible[in_val], "train_patients": train_p,
            "val_patients": val_p, "validation": validation, "archive_rows": int(n_rows)}


def _fit(model: torch.nn.Module, x_train: torch.Tensor, x_val: torch.Tensor, *, channel: str, name: str,
         epochs: int, batch_size: int, lr: float, lr_schedule: str, patience: int | None, seed: int,
         progress: bool) -> tuple[list[dict], tuple[float, int]]:
    """Adam on the reconstruction MSE, epoch by epoch, until ``epochs`` or ``patience`` epochs without a
    lower validation MSE; ``model`` ends with the weights of the best epoch, in eval mode. Returns the
    per-epoch records and (best validation MSE, its epoch)."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps_per_epoch = -(-len(x_train) // batch_size)
    total_steps, step = epochs * steps_per_epoch, 0
    order_rng = np.random.default_rng([seed, 1])
    best = (math.inf, 0, copy.deepcopy(model.state_dict()))
    bad = 0
    history: list[dict] = []
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        bar = tqdm(total=steps_per_epoch, desc=f"{name} epoch {epoch}/{epochs}", unit="batch",
                   disable=not progress, leave=True, dynamic_ncols=True)
        perm = torch.from_numpy(order_rng.permutation(len(x_train)))
        lrs = [lr * 0.5 * (1.0 + math.cos(math.pi * (step + j) / total_steps)) if lr_schedule == "cosine" else None
               for j in range(steps_per_epoch)]
        train_mse = _train_epoch(model, opt, x_train, perm, batch_size, lrs, bar)
        step += steps_per_epoch
        val_mse = _evaluate(model, x_val)
        rec = {"epoch": epoch, "train_mse": train_mse, "val_mse": val_mse, "val_psnr": psnr(channel, val_mse),
               "seconds": time.perf_counter() - t0}
        history.append(rec)
        bar.set_postfix(loss=f"{train_mse:.5f}", val=f"{val_mse:.5f}", psnr=f"{rec['val_psnr']:.2f}dB")
        bar.close()
        if val_mse < best[0]:
            best = (val_mse, epoch, copy.deepcopy(model.state_dict()))
            bad = 0
        else:
            bad += 1
            if patience and bad >= patience:
                break
    model.load_state_dict(best[2])
    model.eval()
    return history, best[:2]


def _train_epoch(model: torch.nn.Module, opt: torch.optim.Optimizer, x_train: torch.Tensor, perm: torch.Tensor,
                 batch_size: int, lrs: list[float | None], bar) -> float:
    """One pass over ``x_train`` in the order ``perm``, batch ``j`` with learning rate ``lrs[j]`` (None: as
    it is); returns the mean training MSE."""
    model.train()
    total, seen = 0.0, 0
    for j, i in enumerate(range(0, len(x_train), batch_size)):
        xb = x_train[perm[i:i + batch_size]].contiguous(memory_format=torch.channels_last)
        if lrs[j] is not None:
            for group in opt.param_groups:
                group["lr"] = lrs[j]
        opt.zero_grad(set_to_none=True)
        loss = torch.mean((model(xb) - xb) ** 2)
        loss.backward()
        opt.step()
        total += float(loss.detach()) * len(xb)
        seen += len(xb)
        bar.set_postfix(loss=f"{total / seen:.5f}", refresh=False)
        bar.update(1)
    return total / seen
