"""``medhash predict-dose``: estimate a patient's dose from its CT and contours and the archive's plans.

Three methods (--method): model, the archive's dose model (medhash fit-dose-model) fed with the
patient's geometry and the dose its K nearest patients by geometry transfer to it (the default when
the archive has one); neighbours, that transferred dose alone (each neighbour's dose as a function of
distance to the targets and depth, read on this patient's geometry), neighbours chosen by geometry,
CT or both (--neighbours-by); pixels, the older rule that pastes the dose of CT look-alike slices
(--pool, --match, --per-slice, --tolerance-mm, --weighting, --rerank and --dose apply to it only).
The patient's own dose is never read (model, neighbours), and its own plan is never a donor: an
archive patient is left out of its neighbours, and so is the archive patient a DICOM folder is
recognised as (same series, study, frame of reference or PatientID; --pseudonymise KEYFILE for a
pseudonymised archive), unless --include-same-patient. A DICOM folder brings its RTSTRUCT.
Writes OUT.npy ((slices, 128, 128) float32 Gy on the model grid), OUT.json and, for a DICOM series,
OUT.dcm: an RTDOSE in the CT's frame of reference on its slices.

examples:
  medhash predict-dose --archive demo-archive --patient DEMO001 --out pred/DEMO001
  medhash predict-dose --archive ./archive --patient /data/new/CT --method neighbours --out pred/new
  medhash predict-dose --archive demo-archive --patient DEMO001 --method pixels --index ct256 --k 5 --out pred/DEMO001-pixels
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import EXIT_OK
from ..store import Archive
from .options import (add_archive, add_command, add_identity, add_index, add_no_progress, add_rerank, add_targets,
                      identity_note)
from .search import patient_or_series


def register(sub) -> None:
    p = add_command(sub, "predict-dose", run, __doc__)
    add_archive(p)
    p.add_argument("--patient", required=True, metavar="PID|FOLDER", help="archive patient or DICOM CT series folder")
    p.add_argument("--out", required=True, type=Path, help="output path without suffix")
    p.add_argument("--method", choices=("model", "neighbours", "pixels"),
                   help="model (default when the archive has a dose model), neighbours (default without one) "
                        "or pixels")
    p.add_argument("--neighbours-by", choices=("geometry", "ct", "both"), default="geometry",
                   help="how --method neighbours chooses the similar patients (default geometry; ct and both "
                        "search a CT index)")
    p.add_argument("--dose-model", metavar="NAME", help="dose model (default: the archive's only one)")
    add_targets(p)
    p.add_argument("--dose", type=Path, help="RTDOSE of the series (--method pixels with a dose / ct+dose index)")
    add_index(p)
    p.add_argument("--k", type=int, default=10,
                   help="similar patients used (default 10; --method model uses the k it was fitted with)")
    p.add_argument("--per-slice", type=int, default=20, help="slice neighbours per query slice (default 20)")
    add_rerank(p, "re-rank each slice's Hamming top-N")
    p.add_argument("--tolerance-mm", type=float, default=10.0, help="z alignment tolerance (default 10 mm)")
    p.add_argument("--weighting", choices=("mean", "score"), default="mean",
                   help="plain mean of the patients' doses, or weighted by patient score (default mean)")
    p.add_argument("--match", choices=("feature", "z"), default="feature",
                   help="which slice of a patient's aligned window: nearest in features (default) or in z")
    p.add_argument("--pool", type=int, default=5,
                   help="per query slice, average the POOL patients' slices nearest in features (default 5; "
                        "0: all k)")
    add_identity(p)
    add_no_progress(p)


def run(args: argparse.Namespace) -> int:
    """Predict, write OUT.npy / OUT.json (/ OUT.dcm), and score an archive patient against its own dose."""
    from ..dose import list_dose_models, predict_dose, predict_dose_planned, write_prediction  # start-up: faiss,
    from ..geometry import parse_targets  # LightGBM and scipy only when predicting

    archive = Archive(args.archive)
    who = patient_or_series(args)
    method = args.method or ("model" if list_dose_models(archive) else "neighbours")
    if method == "pixels":
        pred = predict_dose(archive, **who, dose=args.dose, index=args.index, k=args.k, per_slice=args.per_slice,
                            rerank=args.rerank, tolerance_mm=args.tolerance_mm, weighting=args.weighting,
                            match=args.match, pool=args.pool or None, same_patient=args.same_patient,
                            pseudonymise=args.pseudonymise)
    else:
        pred = predict_dose_planned(archive, **who, method=method, dose_model=args.dose_model, k=args.k,
                                    neighbours_by=args.neighbours_by, targets=parse_targets(args.targets),
                                    index=args.index, progress=not args.no_progress, same_patient=args.same_patient,
                                    pseudonymise=args.pseudonymise)
    files = write_prediction(pred, args.out)
    _print_prediction(pred, method)
    if who["series"] is None:
        from ..evaluate import own_dose_score  # start-up: the evaluation package only here
        sc = own_dose_score(archive, pred, args.patient)
        if sc is not None:
            where = "possible-dose mask" if sc["possible_dose_mask"] else "body"
            print(f"  against its own dose: OpenKBP dose score {sc['dose_score']:.2f} Gy ({where}; predicting 0 Gy: "
                  f"{sc['zero']:.2f} Gy)")
            if args.patient in pred.query.get("dose_model_patients", ()):
                print(f"  note: {args.patient} is one of the dose model's training patients, so this score is not "
                      "an independent measure (medhash evaluate --dose-prediction scores by k-fold)")
    for kind, path in files.items():
        print(f"{kind:<7} {path}")
    return EXIT_OK


def _print_prediction(pred, method: str) -> None:
    """What was predicted and from which patients."""
    q = pred.query
    print(f"predicted dose ({method}) for {q.get('patient_id') or q.get('folder')}: {len(pred.z_mm)} slices, max "
          f"{float(pred.dose.max()):.1f} Gy")
    note = identity_note(q.get("type", ""), q.get("recognised"), q.get("excluded_patient"))
    note = {"other patients only": "its own plan: left out of the donors",
            "own patient included": "its own plan: among the donors (a check only: it flatters the result)"}.get(
        note, note + (" of the donors" if note.endswith("left out") else ""))
    if note:
        print(f"  {note}")
    if method == "pixels":
        print(f"  slices covered by at least one patient: {int((pred.coverage > 0).sum())} of {len(pred.coverage)}")
        for p in pred.patients:
            print(f"  from {p['patient_id']:<14} score {p['patient_score']:.3f}  z offset {p['z_offset_mm']:+.1f} mm  "
                  f"{p['slices_used']} slices")
        return
    levels = ", ".join(f"{lv:g} Gy" for lv in q.get("levels_gy", [])) or "none"
    print(f"  target levels: {levels}; neighbours by {q['neighbours_by']}"
          + (f"; dose model {q['dose_model']}" if q.get("dose_model") else ""))
    for p in pred.patients:
        how = next((f"{k.replace('_', ' ')} {p[k]:.3f}" for k in ("geometry_distance", "ct_score", "fused_score")
                    if k in p), "")
        print(f"  from {p['patient_id']:<14} {how}")
