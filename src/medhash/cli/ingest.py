"""``medhash ingest``: add DICOM RT or OpenKBP data to an archive.

Read CT series with their RTDOSE and RTSTRUCT (DICOM, matched by frame of reference) or OpenKBP
patient folders, resample each axial slice onto the 128 x 128 model grid and add it to the archive.
Series already in the archive are not read again. Problems are reported with their file and the rest
goes on.

example: medhash ingest /data/export --archive ./archive
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import EXIT_NO_INPUT
from ..ingest import FORMATS, ingest
from ..store import Archive
from .options import add_archive, add_command, add_json, add_no_progress, add_pseudonymise, print_ingested, print_problems


def register(sub) -> None:
    p = add_command(sub, "ingest", run, __doc__)
    p.add_argument("sources", nargs="+", metavar="SOURCE", type=Path,
                   help="files or folders (searched recursively)")
    add_archive(p, "archive directory (created if missing)")
    p.add_argument("--format", choices=FORMATS, default="auto",
                   help="input format; auto: OpenKBP where pt_*/ct.csv folders are found, else DICOM")
    add_json(p, "print the report as JSON")
    add_no_progress(p)
    add_pseudonymise(p, "pseudonymise on the way in with this key (see `medhash keygen`): PatientID -> keyed "
                        "pseudonym, UIDs remapped consistently, dates shifted per patient, identifying free "
                        "text and private elements removed (docs: pseudonymisation.md)")


def run(args: argparse.Namespace) -> int:
    """Ingest ``args.sources``; the exit code is the report's (0, 1 some problems, 4 nothing usable)."""
    archive = Archive(args.archive, create=True)
    report = ingest(archive, args.sources, format=args.format, progress=not args.no_progress,
                    pseudonymise=args.pseudonymise)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print_problems(report.problems)
        print_ingested(report, archive, f" from {len(set(report.patients))} patient(s)")
    code = report.exit_code
    if code == EXIT_NO_INPUT and not args.json:
        print("nothing was ingested: no usable DICOM CT series or OpenKBP patient found", file=sys.stderr)
    return code
