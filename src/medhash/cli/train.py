"""``medhash train``: train an auto-encoder for CT, dose or geometry slices.

Train a convolutional auto-encoder on the archive's slices (validation split by patient, early
stopping) and store it in ARCHIVE/models/NAME. Its encoder gives the feature vector of a slice.
--channel geometry trains on geometry images computed from each slice's CT and contours (targets by
level, organs at risk, distance to the targets; never the dose), for geometry indexes.

examples:
  medhash train --archive ./archive --channel ct --arch shallow --epochs 10
  medhash train --archive ./archive --channel geometry --epochs 10
"""
from __future__ import annotations

import argparse
import json

from .. import features  # torch-free to import: its torch names load on first use
from ..errors import EXIT_OK
from ..store import Archive
from .options import add_archive, add_command, add_json, add_no_progress


def register(sub) -> None:
    p = add_command(sub, "train", run, __doc__)
    add_archive(p)
    p.add_argument("--channel", choices=features.CHANNELS, default="ct",
                   help="what the model sees: CT, dose, or geometry images from CT and contours (default ct)")
    p.add_argument("--arch", choices=("shallow", "deep"), default="shallow", help="architecture (default shallow)")
    p.add_argument("--epochs", type=int, default=20, help="maximum epochs (early stopping may end sooner; default 20)")
    p.add_argument("--batch-size", type=int, default=64, help="default 64")
    p.add_argument("--latent-dim", type=int, default=128, help="feature length (default 128)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, the weights and the batches")
    p.add_argument("--name", help="model name (default CHANNEL-ARCH, e.g. ct-shallow)")
    add_json(p)
    add_no_progress(p)


def run(args: argparse.Namespace) -> int:
    """Train and save the model; print its held-out reconstruction error."""

    archive = Archive(args.archive)
    res = features.train_model(archive, args.channel, args.arch, epochs=args.epochs, batch_size=args.batch_size,
                      latent_dim=args.latent_dim, seed=args.seed, name=args.name, progress=not args.no_progress)
    if args.json:
        print(json.dumps(res, indent=2, default=str))
        return EXIT_OK
    print(f"model {res['name']}: {res['channel']} {res['arch']}, latent {res['latent_dim']}, "
          f"{res['epochs_run']} epochs (best {res['best_epoch']}{', stopped early' if res.get('stopped_early') else ''}), "
          f"{res['n_train_slices']} training / {res['n_val_slices']} held-out slices "
          f"({len(res['val_patients'])} held-out patient(s))")
    print(f"held-out reconstruction: MSE {res['held_out_mse']:.5f}, PSNR {res['held_out_psnr']:.2f} dB "
          f"({res['validation']}); {res['seconds']:.0f} s, {res['seconds_per_epoch']:.1f} s an epoch")
    print(f"saved in {res['path']}")
    return EXIT_OK
