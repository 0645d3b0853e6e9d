"""``medhash check``: verify an archive and say exactly what is wrong (and, with --repair, mend it).

Checks the catalog (SQLite integrity, row counts) against the arrays, the dose values, the models'
checkpoints, the feature caches, every index (manifest, codes, rows, recorded checksums, hasher,
engine, the models it was built with), the dose models, the spool of medhash listen, and the temporary
files interrupted writes leave, and the series recorded as incomplete. Each finding is damage, an
incomplete series, a leftover or a note, with what --repair does about it (an incomplete series is
completed only by ingesting or sending the whole series again). With --repair the fixes run while holding the archive's writer lock (rebuild a damaged index
with its own parameters, cut an array or cache tail past its committed rows, remove a temporary file
or a feature cache of the wrong size), then the archive is checked again. Exit 0 only when no damage
no incomplete series and no leftover remains.

examples:
  medhash check --archive ./archive
  medhash check --archive ./archive --repair
  medhash check --archive ./archive --json
"""
from __future__ import annotations

import argparse
import json

from ..check import check_archive
from .options import add_archive, add_command, add_json


def register(sub) -> None:
    p = add_command(sub, "check", run, __doc__)
    add_archive(p)
    p.add_argument("--repair", action="store_true",
                   help="apply the repairs listed (needs the archive's writer lock), then check again")
    add_json(p, "print the report as JSON (keys: archive, clean, repair, findings, remaining, counts)")


def _line(f) -> str:
    """One finding: ``damage: indexes/ct64/codes.u8: what (repair: ...)``."""
    if f.repaired:
        tail = f" (repaired: {f.repair})"
    elif f.repair_error:
        tail = f" (repair failed: {f.repair_error})"
    elif f.repair:
        tail = f" (--repair: {f.repair})"
    else:
        tail = ""
    return f"{f.kind}: {f.where}: {f.what}{tail}"


def run(args: argparse.Namespace) -> int:
    """Check (and repair) the archive; print the findings and a summary line."""
    report = check_archive(args.archive, repair=args.repair)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return report.exit_code
    for f in report.findings:
        print(_line(f))
    if args.repair and report.remaining is not report.findings:
        for f in report.remaining:
            print("after repair, " + _line(f))
    c = report.counts()
    state = "clean" if report.clean else "not clean"
    print(f"archive {report.archive}: {state} ({c['damage']} damage, {c['incomplete']} incomplete, "
          f"{c['leftover']} leftover, {c['note']} note"
          f"{' after repair' if args.repair else ''})")
    return report.exit_code
