"""``medhash info``: summarise an archive.

Patients, series, slices, slices with dose, structures, skipped slices, size on disk and the
incomplete series (slices missing by the evidence of their own files) of an archive.

example: medhash info --archive ./archive --json
"""
from __future__ import annotations

import argparse
import json

from ..errors import EXIT_OK
from ..store import Archive
from .options import add_archive, add_command, add_json, human_bytes


def register(sub) -> None:
    p = add_command(sub, "info", run, __doc__)
    add_archive(p)
    add_json(p, "print JSON (keys: patients, series, slices, slices_with_dose, structures, incomplete_series, ...)")


def run(args: argparse.Namespace) -> int:
    """Print :meth:`Archive.info` as a table or as JSON."""
    info = Archive(args.archive).info()
    if args.json:
        print(json.dumps(info, indent=2))
        return EXIT_OK
    print(f"archive            {info['archive']}")
    print(f"patients           {info['patients']}")
    print(f"series             {info['series']}  ({', '.join(f'{k}: {v}' for k, v in info['sources'].items()) or '-'})")
    print(f"slices             {info['slices']}" + (f"  ({info['superseded_slices']} more superseded by completed "
                                                     "series)" if info["superseded_slices"] else ""))
    print(f"slices with dose   {info['slices_with_dose']}")
    print(f"skipped slices     {info['skipped']['no_body']} without body (< 1 % of the grid above -500 HU)")
    if info["possible_dose_mask_slices"]:
        print(f"possible-dose mask {info['possible_dose_mask_slices']} slices")
    print(f"size on disk       {human_bytes(info['size_bytes'])}")
    g = info["grid"]
    print(f"model grid         {g.get('size')} x {g.get('size')} pixels of {g.get('spacing_mm')} mm")
    if info["structures"]:
        print("structures         (slices showing each)")
        width = max(len(k) for k in info["structures"])
        for name, count in info["structures"].items():
            print(f"  {name:<{width}}  {count}")
    else:
        print("structures         none")
    incomplete = info["incomplete_series"]
    print(f"incomplete series  {len(incomplete) or 'none'}" + (" (ingest or send each whole series again to "
                                                              "complete it)" if incomplete else ""))
    for s in incomplete:
        print(f"  {s['patient_id']}  series {s['series_uid']}: {s['present']} of {s['expected']} instances "
              f"({'; '.join(s['missing'])})")
    return EXIT_OK
