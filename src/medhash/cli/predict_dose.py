"""``medhash predict-dose``: estimate a patient's dose from the most similar other patients.

Rank the other patients (as search --patient), take the k most similar, and average their doses on
the slices matched along z, aligned by the body outline. Writes OUT.npy ((slices, 128, 128) float32
Gy on the model grid), OUT.json and, for a DICOM series, OUT.dcm: an RTDOSE in the CT's frame of
reference on its slices.

examples:
  medhash predict-dose --archive ./archive --patient pt_7 --k 5 --out pred/pt_7
  medhash predict-dose --archive ./archive --patient /data/new/CT --out pred/new
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import EXIT_OK
from ..store import Archive
from .options import add_archive, add_command, add_index, add_rerank
from .search import patient_or_series


def register(sub) -> None:
    p = add_command(sub, "predict-dose", run, __doc__)
    add_archive(p)
    p.add_argument("--patient", required=True, metavar="PID|FOLDER", help="archive patient or DICOM CT series folder")
    p.add_argument("--out", required=True, type=Path, help="output path without suffix")
    p.add_argument("--dose", type=Path, help="RTDOSE of the series (only for a dose / ct+dose index)")
    add_index(p)
    p.add_argument("--k", type=int, default=10, help="similar patients considered (default 10)")
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


def run(args: argparse.Namespace) -> int:
    """Predict, write OUT.npy / OUT.json (/ OUT.dcm), and score an archive patient against its own dose."""
    from ..dose import predict_dose, write_prediction  # start-up: faiss and torch only when predicting

    archive = Archive(args.archive)
    who = patient_or_series(args)
    pred = predict_dose(archive, **who, dose=args.dose, index=args.index, k=args.k, per_slice=args.per_slice,
                        rerank=args.rerank, tolerance_mm=args.tolerance_mm, weighting=args.weighting,
                        match=args.match, pool=args.pool or None)
    files = write_prediction(pred, args.out)
    q = pred.query
    print(f"predicted dose for {q.get('patient_id') or q.get('folder')}: {len(pred.z_mm)} slices, max "
          f"{float(pred.dose.max()):.1f} Gy; slices covered by at least one patient: "
          f"{int((pred.coverage > 0).sum())} of {len(pred.coverage)}")
    for p in pred.patients:
        print(f"  from {p['patient_id']:<14} score {p['patient_score']:.3f}  z offset {p['z_offset_mm']:+.1f} mm  "
              f"{p['slices_used']} slices")
    if who["series"] is None:
        from ..evaluate import own_dose_score  # start-up: the evaluation package only here
        sc = own_dose_score(archive, pred, args.patient)
        if sc is not None:
            where = "possible-dose mask" if sc["possible_dose_mask"] else "body"
            print(f"  against its own dose: OpenKBP dose score {sc['dose_score']:.2f} Gy ({where}; predicting 0 Gy: "
                  f"{sc['zero']:.2f} Gy)")
    for kind, path in files.items():
        print(f"{kind:<7} {path}")
    return EXIT_OK
