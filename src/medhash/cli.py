"""The ``medhash`` command line: a thin shell over the Python API (no logic of its own).

Exit codes (also in the README): 0 success; 1 some inputs could not be used (each reported, the
rest done); 2 bad command line; 3 archive problem (missing, locked, damaged); 4 no usable input.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from . import __version__
from .errors import ArchiveError, MedhashError, NotFoundError
from .ingest import EXIT_ARCHIVE, EXIT_NO_INPUT, EXIT_OK, EXIT_PARTIAL, FORMATS

MAX_LISTED = 20

EPILOG = """exit codes: 0 success · 1 some inputs could not be used (each reported) · 2 bad command line ·
3 archive missing, locked or damaged · 4 no usable input"""


def _human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _print_problems(problems, stream=None) -> None:
    stream = stream or sys.stderr
    for level in ("error", "warning"):
        items = [p for p in problems if p.level == level]
        for p in items[:MAX_LISTED]:
            print(f"{level}: {p.path}: {p.message}", file=stream)
        if len(items) > MAX_LISTED:
            print(f"{level}: ... and {len(items) - MAX_LISTED} more {level}s (use --json for the full list)",
                  file=stream)


def cmd_ingest(args: argparse.Namespace) -> int:
    from .archive import Archive

    archive = Archive(args.archive, create=True)
    report = archive.ingest(args.sources, format=args.format, progress=not args.no_progress)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        _print_problems(report.problems)
        print(f"ingested {report.series_added} series ({report.slices_added} slices with body, "
              f"{report.slices_skipped_no_body} without body skipped) from {len(set(report.patients))} patient(s); "
              f"{report.series_existing} series already in the archive; "
              f"{len(report.errors)} error(s), {len(report.warnings)} warning(s)")
        print(f"archive: {archive.path} ({len(archive)} slices)")
    code = report.exit_code
    if code == EXIT_NO_INPUT and not args.json:
        print("nothing was ingested: no usable DICOM CT series or OpenKBP patient found", file=sys.stderr)
    return code


def cmd_info(args: argparse.Namespace) -> int:
    from .archive import Archive

    info = Archive(args.archive).info()
    if args.json:
        print(json.dumps(info, indent=2))
        return EXIT_OK
    print(f"archive            {info['archive']}")
    print(f"patients           {info['patients']}")
    print(f"series             {info['series']}  ({', '.join(f'{k}: {v}' for k, v in info['sources'].items()) or '-'})")
    print(f"slices             {info['slices']}")
    print(f"slices with dose   {info['slices_with_dose']}")
    print(f"skipped slices     {info['skipped']['no_body']} without body (< 1 % of the grid above -500 HU)")
    if info["possible_dose_mask_slices"]:
        print(f"possible-dose mask {info['possible_dose_mask_slices']} slices")
    print(f"size on disk       {_human_bytes(info['size_bytes'])}")
    g = info["grid"]
    print(f"model grid         {g.get('size')} x {g.get('size')} pixels of {g.get('spacing_mm')} mm")
    if info["structures"]:
        print("structures         (slices showing each)")
        width = max(len(k) for k in info["structures"])
        for name, count in info["structures"].items():
            print(f"  {name:<{width}}  {count}")
    else:
        print("structures         none")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import write_demo_cohort

    folders = write_demo_cohort(args.out, n_patients=args.patients, seed=args.seed)
    print(f"wrote {len(folders)} synthetic patients as DICOM (CT, RTDOSE, RTSTRUCT) to {args.out}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medhash",
        description="Content-based image retrieval for radiotherapy: find earlier patients' CT slices "
                    "(and their dose) that look like a new one.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"medhash {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("ingest", help="add DICOM RT or OpenKBP data to an archive",
                       description="Read CT series with their RTDOSE and RTSTRUCT (DICOM, matched by frame of "
                                   "reference) or OpenKBP patient folders, resample each axial slice onto the "
                                   "128 x 128 model grid and add it to the archive. Series already in the archive "
                                   "are not read again. Problems are reported with their file and the rest goes on.",
                       epilog="example: medhash ingest /data/export --archive ./archive\n" + EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sources", nargs="+", metavar="SOURCE", type=Path,
                   help="files or folders (searched recursively)")
    p.add_argument("--archive", required=True, type=Path, help="archive directory (created if missing)")
    p.add_argument("--format", choices=FORMATS, default="auto",
                   help="input format; auto: OpenKBP where pt_*/ct.csv folders are found, else DICOM")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("info", help="summarise an archive",
                       description="Patients, series, slices, slices with dose, structures, skipped slices and "
                                   "size on disk of an archive.",
                       epilog="example: medhash info --archive ./archive --json\n" + EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archive", required=True, type=Path, help="archive directory")
    p.add_argument("--json", action="store_true",
                   help="print JSON (keys: patients, series, slices, slices_with_dose, structures, ...)")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("demo", help="write the synthetic demo cohort as DICOM",
                       description="Write deterministic synthetic head-and-neck phantoms (CT series, RTDOSE, "
                                   "RTSTRUCT) as real DICOM files, to try medhash without patient data.",
                       epilog="example: medhash demo --out demo-data && "
                              "medhash ingest demo-data --archive demo-archive\n" + EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path, help="folder to write (one sub-folder per patient)")
    p.add_argument("--patients", type=int, default=6, help="number of patients (default 6)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except ArchiveError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ARCHIVE
    except NotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_PARTIAL
    except MedhashError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_PARTIAL
    except BrokenPipeError:  # `medhash info --json | head`: the reader left, not an error of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        print("interrupted: the archive keeps every series completed so far", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
