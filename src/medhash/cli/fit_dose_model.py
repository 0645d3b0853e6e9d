"""``medhash fit-dose-model``: learn the archive's knowledge-based dose model (LightGBM, CPU).

Every archive patient with a dose is a training case: per voxel, its geometry (signed distance to
each target level, depth, organ, position relative to the target, HU) and the dose that its K
nearest other patients by target-organ geometry transfer to it; the model learns the dose it got.
Stored in ARCHIVE/dose-models/NAME with its training patients, settings and the sha256 of its files;
predict-dose then uses it (--method model, the default when one exists). Target levels are read
from structure names (PTV70, PTV_7000 ...); --targets names the others.

examples:
  medhash fit-dose-model --archive ./archive
  medhash fit-dose-model --archive ./archive --name hn --targets PTV_high=70,PTV_low=56
"""
from __future__ import annotations

import argparse
import json

from ..errors import EXIT_OK
from ..store import Archive
from .options import add_archive, add_command, add_json, add_no_progress, add_targets


def register(sub) -> None:
    p = add_command(sub, "fit-dose-model", run, __doc__)
    add_archive(p)
    p.add_argument("--name", default="default", help="dose model name (default: default)")
    p.add_argument("--k", type=int, default=10, help="neighbours by geometry whose dose is an input (default 10)")
    p.add_argument("--trees", type=int, default=300, help="boosting rounds (default 300)")
    p.add_argument("--voxels", type=int, default=20000, help="training voxels drawn per patient (default 20000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the voxel draws and of LightGBM (default 0)")
    add_targets(p)
    add_json(p)
    add_no_progress(p)


def run(args: argparse.Namespace) -> int:
    """Fit and store the model; print what it learned from."""
    from ..dose import fit_dose_model  # start-up: LightGBM and scipy only when fitting
    from ..geometry import parse_targets  # start-up: as fit_dose_model

    archive = Archive(args.archive)
    model = fit_dose_model(archive, args.name, k=args.k, trees=args.trees, voxels=args.voxels, seed=args.seed,
                           targets=parse_targets(args.targets), progress=not args.no_progress)
    m = model.manifest
    if args.json:
        print(json.dumps(m, indent=2))
        return EXIT_OK
    print(f"dose model {m['name']}: {len(m['patients'])} patients, {args.voxels} voxels each, {args.trees} trees, "
          f"k {args.k}; fitted in {m['fit_seconds']:.0f} s")
    print(f"saved in {archive.path / 'dose-models' / m['name']}")
    return EXIT_OK
