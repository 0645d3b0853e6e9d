"""``medhash demo``: write the synthetic demo cohort as DICOM.

Write deterministic synthetic head-and-neck phantoms (CT series, RTDOSE, RTSTRUCT) as real DICOM
files, to try medhash without patient data.

example: medhash demo --out demo-data && medhash ingest demo-data --archive demo-archive
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import EXIT_OK
from .options import add_command


def register(sub) -> None:
    p = add_command(sub, "demo", run, __doc__)
    p.add_argument("--out", required=True, type=Path, help="folder to write (one sub-folder per patient)")
    p.add_argument("--patients", type=int, default=6, help="number of patients (default 6)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def run(args: argparse.Namespace) -> int:
    """Write ``args.patients`` phantoms under ``args.out``."""
    from ..demo import write_demo_cohort  # start-up: the DICOM writers only for this command

    folders = write_demo_cohort(args.out, n_patients=args.patients, seed=args.seed)
    print(f"wrote {len(folders)} synthetic patients as DICOM (CT, RTDOSE, RTSTRUCT) to {args.out}")
    return EXIT_OK
