"""``medhash export``: export an index's features, codes and slice list.

Write features.npy (float32), codes.npy (packed uint8 codes) and slices.csv (patient_id,
slice_index, z_mm; rows in index order) to OUT.

example: medhash export --archive ./archive --index ct256 --out ./export
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import EXIT_OK
from ..store import Archive
from .options import add_archive, add_command, add_index


def register(sub) -> None:
    p = add_command(sub, "export", run, __doc__)
    add_archive(p)
    add_index(p, "index name", required=True)
    p.add_argument("--out", required=True, type=Path, help="output folder")


def run(args: argparse.Namespace) -> int:
    """Write the files and list them."""
    from ..retrieval import export_index  # start-up: faiss only when an index is opened

    files = export_index(Archive(args.archive), args.index, args.out)
    for kind, path in files.items():
        print(f"{kind:<9} {path}")
    return EXIT_OK
