"""``medhash patients``: list the archive's patients.

One line per archive patient: its id (the one QUERY, --patient and the web page take), slices with
body and their slice_index range, slices with dose, series, source (dicom, openkbp), whether its id
is a pseudonym, and how many structures its slices show. Never a patient name: the archive holds none.

example: medhash patients --archive demo-archive --json
"""
from __future__ import annotations

import argparse
import json

from ..errors import EXIT_OK
from ..store import Archive
from .options import add_archive, add_command, add_json

COLUMNS = ("patient", "slices", "range", "dose", "series", "source", "pseudonym", "structures")
"""The table's header, one column per key of :meth:`Archive.patient_summaries` shown."""


def register(sub) -> None:
    p = add_command(sub, "patients", run, __doc__)
    add_archive(p)
    add_json(p, "print JSON: a list with one object per patient (keys: patient_id, slices, slices_with_dose, "
                "first_slice, last_slice, series, source, pseudonymised, has_dose, structures, ingested_at)")


def rows(summaries: list[dict]) -> list[tuple[str, ...]]:
    """The table's cells, one tuple of :data:`COLUMNS` per patient."""
    out = []
    for s in summaries:
        span = "-" if s["first_slice"] is None else f"{s['first_slice']}-{s['last_slice']}"
        out.append((s["patient_id"], str(s["slices"]), span, str(s["slices_with_dose"]), str(s["series"]),
                    s["source"] or "-", "yes" if s["pseudonymised"] else "no", str(s["structures"])))
    return out


def run(args: argparse.Namespace) -> int:
    """Print :meth:`Archive.patient_summaries` as a table or as JSON."""
    with Archive(args.archive, read_only=True) as arch:
        summaries = arch.patient_summaries()
    if args.json:
        print(json.dumps(summaries, indent=2))
        return EXIT_OK
    if not summaries:
        print(f"{args.archive}: no patients (ingest data with `medhash ingest SOURCE --archive {args.archive}`)")
        return EXIT_OK
    table = [COLUMNS, *rows(summaries)]
    widths = [max(len(r[j]) for r in table) for j in range(len(COLUMNS))]
    for r in table:
        print("  ".join(cell.ljust(w) if j in (0, 2, 5) else cell.rjust(w)
                        for j, (cell, w) in enumerate(zip(r, widths))).rstrip())
    print(f"{len(summaries)} patient(s); slices: with body, range: first-last slice_index; dose: slices with dose")
    return EXIT_OK
