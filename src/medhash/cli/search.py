"""``medhash search``: find the archive slices most similar to a query.

QUERY is PATIENT:SLICE (an archive slice), a DICOM CT slice file, a DICOM series folder (with
--slice), or a PNG/NPY image (PNG grey 0..255 = -1000..1000 HU; NPY in HU). The query's own patient
is left out unless --include-same-patient: an archive query's, and the archive patient a DICOM file
or folder is recognised as (same series, study, frame of reference or PatientID; for a pseudonymised
archive give its key with --pseudonymise); the header says which. A geometry or ct+geometry index
needs the query's contours: an archive slice, or a DICOM series folder with its RTSTRUCT and --slice.

examples:
  medhash search --archive demo-archive DEMO001:25 --index ct256 --k 10 --png results.png
  medhash search --archive ./archive CT_0042.dcm --dose RD.dcm --index joint --json
  medhash search --archive demo-archive --patient DEMO001 --index ct256 --k 5   # similar patients
  medhash search --archive ./archive /data/new/CT --slice 40 --index geo  # a geometry index: folder with RTSTRUCT
  medhash search --archive ./archive --patient /data/new/CT --index ct256
  medhash search --archive demo-archive --patient DEMO001 --rank geometry  # similar plans by target-organ geometry
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import EXIT_OK, MedhashError
from ..store import Archive
from .options import add_archive, add_command, add_identity, add_index, add_json, add_rerank, add_targets, identity_note


def register(sub) -> None:
    p = add_command(sub, "search", run, __doc__)
    p.add_argument("query", metavar="QUERY", nargs="?")
    p.add_argument("--patient", metavar="PID|FOLDER",
                   help="patient-level search: rank the other patients like an archive patient or a DICOM CT "
                        "series folder (with --dose for dose indexes); --k patients")
    p.add_argument("--per-slice", type=int, default=20,
                   help="patient-level: slice neighbours per query slice (default 20)")
    p.add_argument("--tolerance-mm", type=float, default=10.0,
                   help="patient-level: z alignment tolerance of matched slices (default 10 mm)")
    p.add_argument("--rank", choices=("ct", "geometry", "both"), default="ct",
                   help="patient-level: rank by CT slices (default), by target-organ geometry (overlap-volume "
                        "histograms, target volumes and levels: patients whose plans transfer), or both fused")
    add_targets(p)
    add_archive(p)
    add_index(p)
    p.add_argument("--k", type=int, default=10, help="number of results (default 10)")
    add_rerank(p, "re-rank the Hamming top-N by exact Euclidean distance of the features (default 0: off)")
    add_identity(p, exclude=True)
    p.add_argument("--dose", type=Path, help="RTDOSE (DICOM query) or dose image in Gy (NPY) for ct+dose / dose indexes")
    p.add_argument("--slice", type=int, help="slice of a series folder query (0-based, position order)")
    add_json(p)
    p.add_argument("--png", type=Path, help="write a picture: the query and the results with isodose lines")
    p.add_argument("--isodose", metavar="LEVELS",
                   help="isodose lines of the --png picture: percent of the reference dose (default '95,80,50,20%%'; "
                        "the prescription when known, else the query slice's maximum) or Gy ('10,20,30')")


def run(args: argparse.Namespace) -> int:
    """Search with one slice (QUERY) or one patient (``--patient``); print the ranking."""
    from ..retrieval import IndexCache, needs_geometry, open_index, parse_query, search  # start-up: faiss only here

    archive = Archive(args.archive)
    if (args.query is None) == (args.patient is None):
        raise MedhashError("give a QUERY (one slice) or --patient PID|FOLDER (patient-level search), not both")
    if args.patient is not None:
        return run_patient(archive, args)
    isodose = None
    if args.isodose is not None:
        if not args.png:
            raise MedhashError("isodose levels are drawn only in a picture: give --png FILE too", param="isodose")
        from ..render import parse_isodose  # start-up: the picture's module only for a picture (no matplotlib)
        isodose = parse_isodose(args.isodose)
    cache = IndexCache()   # opened once: its channel says whether a file query needs its contours (geometry)
    idx = open_index(archive, args.index, cache)
    query = parse_query(archive, args.query, dose=args.dose, slice_index=args.slice, geometry=needs_geometry(idx))
    res = search(archive, query, index=idx.name, k=args.k, rerank=args.rerank, same_patient=args.same_patient,
                 cache=cache, pseudonymise=args.pseudonymise)
    if args.png:
        from ..render import render_search  # start-up: matplotlib only for a picture
        render_search(archive, res, query, args.png, isodose=isodose)
    if args.json:
        print(json.dumps(res, indent=2))
        return EXIT_OK
    q = res["query"]
    label = f"{q['patient_id']}:{q['slice_index']}" if q["type"] == "archive" else q["file"]
    print(f"query {label}  index {res['index']} ({res['channel']}, {res['n_bits']} bits)  k {res['k']}"
          + (f"  re-ranked from {res['rerank']}" if res["rerank"] else "")
          + _note(q["type"], res))
    print_slice_results(res)
    t = res["timing_ms"]
    print(f"time: encode {t['encode']:.1f} ms, search {t['search']:.1f} ms")
    if args.png:
        print(f"picture: {args.png}")
    return EXIT_OK


def _note(kind: str, res: dict) -> str:
    """The header's note on the query's own patient (:func:`~.options.identity_note`), with its two spaces."""
    note = identity_note(kind, res.get("recognised"), res.get("excluded_patient"))
    return f"  {note}" if note else ""


def patient_or_series(args: argparse.Namespace) -> dict:
    """``--patient`` as keyword arguments: ``series=FOLDER`` for a DICOM series folder, else
    ``patient=PID`` (shared with ``medhash predict-dose``)."""
    folder = Path(args.patient)
    return {"patient": None, "series": folder} if folder.is_dir() else {"patient": args.patient, "series": None}


def run_patient(archive: Archive, args: argparse.Namespace) -> int:
    """``medhash search --patient``: the other patients ranked by z-aligned slice votes (or by geometry)."""
    from ..retrieval import patient_search  # start-up: faiss only when searching

    if args.rank != "ct":
        return run_patient_geometry(archive, args)

    res = patient_search(archive, **patient_or_series(args), dose=args.dose, index=args.index, k=args.k,
                         per_slice=args.per_slice, rerank=args.rerank, tolerance_mm=args.tolerance_mm,
                         same_patient=bool(args.same_patient), pseudonymise=args.pseudonymise)
    if args.json:
        print(json.dumps(res, indent=2))
        return EXIT_OK
    q = res["query"]
    label = q["patient_id"] if q["type"] == "archive" else q["folder"]
    print(f"patient query {label} ({res['query_slices_searched']} slices searched)  index {res['index']} "
          f"({res['channel']}, {res['n_bits']} bits)  {res['per_slice']} neighbours a slice, z tolerance "
          f"{res['tolerance_mm']:g} mm" + _note(q["type"], res))
    print(f"{'rank':>4}  {'patient':<14} {'score':>6} {'absolute':>8} {'matched':>7} {'z offset mm':>11}")
    for r in res["results"]:
        print(f"{r['rank']:>4}  {r['patient_id']:<14} {r['patient_score']:>6.3f} {_num(r.get('absolute_score'), 8, 3)} "
              f"{r['matched_slices']:>7} {r['z_offset_mm']:>11.1f}")
    for r in res["results"][:3]:
        pairs = r["pairs"][::max(1, len(r["pairs"]) // 6)][:6]
        txt = ", ".join(f"{p['query_slice_index']}->{p['slice_index']} (H {p['hamming']})" for p in pairs)
        print(f"  {r['patient_id']}: query slice -> matched slice, e.g. {txt}")
    if res.get("calibration"):
        print(f"verdict: {res['calibration']['verdict_text']}")
    return EXIT_OK


def _num(x, width: int, digits: int) -> str:
    """A number right-aligned in ``width`` characters, or "-" when there is none."""
    return f"{x:>{width}.{digits}f}" if x is not None else f"{'-':>{width}}"


def print_slice_results(res: dict) -> None:
    """The result table of a slice search (Hamming distance, its percentile among random pairs of
    different patients, the expected Hamming distance of kernel-LSH indexes) and the verdict line."""
    rer = res["rerank"] > 0
    exp = any("expected_hamming" in r for r in res["results"])
    print(f"{'rank':>4}  {'patient':<14} {'slice':>5} {'z_mm':>8} {'hamming':>7} {'pct':>6}"
          + (f" {'expected':>8}" if exp else "") + ("  euclidean" if rer else ""))
    for r in res["results"]:
        print(f"{r['rank']:>4}  {r['patient_id']:<14} {r['slice_index']:>5} {r['z_mm']:>8.1f} {r['hamming']:>7} "
              f"{_num(r.get('percentile'), 6, 2)}" + (f" {_num(r.get('expected_hamming'), 8, 1)}" if exp else "")
              + (f"  {r['euclidean']:>9.4f}" if rer else ""))
    cal = res.get("calibration")
    if cal:
        print(f"pct: % of {cal['reference_pairs']} random pairs of slices of different patients at this Hamming "
              f"distance or nearer (their median {_num(cal['random_median'], 0, 0).strip()})"
              + ("; expected: the kernel-LSH expectation at the features' Euclidean distance" if exp else ""))
        print(f"verdict: {cal['verdict_text']}")


def run_patient_geometry(archive: Archive, args: argparse.Namespace) -> int:
    """``medhash search --patient --rank geometry|both``: the patients whose target-organ geometry is nearest."""
    from ..dose.planning import rank_patients_by_geometry  # start-up: scipy and LightGBM only here
    from ..geometry import parse_targets  # start-up: as rank_patients_by_geometry

    res = rank_patients_by_geometry(archive, **patient_or_series(args), k=args.k, by=args.rank,
                                    targets=parse_targets(args.targets), index=args.index,
                                    same_patient=bool(args.same_patient), pseudonymise=args.pseudonymise)
    if args.json:
        print(json.dumps(res, indent=2))
        return EXIT_OK
    q = res["query"]
    levels = ", ".join(f"{lv:g}" for lv in q["levels_gy"]) or "none"
    print(f"patient query {q.get('patient_id') or q.get('folder')}  ranked by {res['by']}  target levels {levels} Gy  "
          f"({res['seconds']:.2f} s)" + _note(q["type"], res))
    key = {"geometry": "geometry_distance", "both": "fused_score"}[res["by"]]
    print(f"{'rank':>4}  {'patient':<14} {key.replace('_', ' '):>17}  levels (Gy)")
    for r in res["results"]:
        print(f"{r['rank']:>4}  {r['patient_id']:<14} {r[key]:>17.3f}  {', '.join(f'{v:g}' for v in r['levels_gy'])}")
    return EXIT_OK
