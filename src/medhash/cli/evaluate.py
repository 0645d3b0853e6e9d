"""``medhash evaluate``: measure retrieval quality and write an HTML report.

Reproduce the talk's analysis for this archive and go beyond it: overlap of Hamming and Euclidean
neighbours (Dice, Jaccard; violins and curves against k), Hamming against Euclidean distance with
the closed form and a gamma sweep, reconstructions (also 3D), retrieval grids, cross-patient organ
relevance, dose from neighbours and timings. Writes OUT/report.html, OUT/metrics.json (schema:
docs/metrics-schema.md) and the PNGs. Needs trained model(s).

With --dose-only, only the dose-prediction section runs (no auto-encoder needed): planning-time
dose from CT and contours (dose model by k-fold, neighbours by geometry, CT or both, geometry mapping,
predicting 0 Gy), leave-one-patient-out, with OpenKBP dose and DVH scores, per-metric DVH errors,
DVH and isodose figures; with an index also the slice-pasting methods.

examples:
  medhash evaluate --archive ./archive --channel ct --out report
  medhash evaluate --archive ./archive --index joint256 --quick --out quick-report
  medhash evaluate --archive ./archive --dose-only --out dose-report
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import EXIT_OK, MedhashError
from ..store import Archive
from .options import add_archive, add_command, add_no_progress, add_rerank, int_list, positive_float


def register(sub) -> None:
    p = add_command(sub, "evaluate", run, __doc__)
    add_archive(p)
    p.add_argument("--out", required=True, type=Path, help="output folder (created)")
    p.add_argument("--index", help="evaluate the features of this index (its models, scales, weights)")
    p.add_argument("--channel", choices=("ct", "dose", "ct+dose", "geometry", "ct+geometry"),
                   help="evaluate the newest model(s) of this channel (default ct when no --index)")
    p.add_argument("--queries", type=int, help="query slices drawn with --seed (default 400; --quick 40)")
    p.add_argument("--bits", type=int_list, help="code lengths, comma-separated (default 1,10,100,1000,10000)")
    p.add_argument("--k", type=int_list, help="numbers retrieved, comma-separated (default 1,5,10,20,50,100)")
    p.add_argument("--seed", type=int, default=0, help="seed of the queries, hashers and baselines (default 0)")
    p.add_argument("--gamma", default="auto", help="kernel width, or auto (default)")
    add_rerank(p, "depth of the Hamming shortlist re-ranked by Euclidean distance (default 500)", default=500)
    p.add_argument("--quick", action="store_true", help="a small fast run (about a minute on a small archive)")
    p.add_argument("--dose-prediction", action="store_true",
                   help="also score dose from similar patients leave-one-patient-out (OpenKBP dose and DVH scores)")
    p.add_argument("--compare-hashers", action="store_true",
                   help="also compare kernel-lsh, pca-sign, itq and trained hashers (Dice@k against bits)")
    p.add_argument("--dose-only", action="store_true",
                   help="only the dose-prediction section (planning-time methods; slice methods with an index)")
    p.add_argument("--folds", type=int, default=5, help="--dose-only: folds by patient of the dose model (default 5)")
    p.add_argument("--dose-k", type=int, default=10,
                   help="similar patients considered for --dose-prediction (default 10; the 5 nearest per slice)")
    add_no_progress(p)


def run(args: argparse.Namespace) -> int:
    """Run the evaluation, write the report and print its headline numbers."""
    from ..evaluate import evaluate  # start-up: torch and matplotlib only when evaluating

    if args.index and args.channel:
        raise MedhashError("give --index or --channel, not both (an index fixes its channel)")
    archive = Archive(args.archive)
    if args.dose_only:
        return _run_dose_only(archive, args)
    gamma = args.gamma if args.gamma == "auto" else positive_float(args.gamma, "--gamma")
    m = evaluate(archive, args.out, index=args.index, channel=args.channel, queries=args.queries, bits=args.bits,
                 ks=args.k, seed=args.seed, gamma=gamma, rerank=args.rerank, quick=args.quick,
                 progress=not args.no_progress, command="medhash " + " ".join(sys.argv[1:]),
                 dose_prediction=args.dose_prediction, dose_k=args.dose_k, compare_hashers=args.compare_hashers)
    print(f"report: {Path(args.out) / 'report.html'}  (metrics.json and {len(list(Path(args.out).glob('*.png')))} "
          f"PNGs beside it; {m['elapsed_s']['total_s']:.0f} s)")
    print(f"features {m['features']['channel']} ({m['features']['dim']} floats), {m['parameters']['queries']} "
          f"queries, gamma {m['gamma']['fitted']:.4g}")
    _print_summary(m)
    return EXIT_OK


def _run_dose_only(archive: Archive, args: argparse.Namespace) -> int:
    """``--dose-only``: the dose-prediction section, its report and its headline numbers."""
    from ..evaluate import evaluate_dose  # start-up: LightGBM, scipy and matplotlib only when evaluating

    if args.folds < 2:
        raise MedhashError("--folds must be at least 2 (each patient is scored by a model trained without it)")
    m = evaluate_dose(archive, args.out, index=args.index, k=args.dose_k, folds=args.folds, seed=args.seed,
                      progress=not args.no_progress, command="medhash " + " ".join(sys.argv[1:]))
    print(f"report: {Path(args.out) / 'report.html'}  ({m['elapsed_s']['total_s']:.0f} s)")
    _print_dose(m["dose_prediction"])
    return EXIT_OK


def _print_dose(L: dict) -> None:
    """The dose-prediction scores of ``metrics.json``."""
    if L.get("methods"):
        print(f"  dose from the {L['k']} most similar patients, leave-one-patient-out over {len(L['patients'])} "
              f"patients (OpenKBP dose / DVH score, Gy):")
        for name, v in L["methods"].items():
            print(f"    {name:<40} {v['dose_score']:.2f} / {v['dvh_score']:.2f}")
    S = L.get("slice_level")
    if S:
        print(f"  slice level, {S['queries']} slices, their {S['k']} nearest slices of other patients in {S['index']} "
              f"(MAE Gy): pixels {S['pixels_mae']:.2f}, transfer by anatomy {S['anatomy_mae']:.2f}, "
              f"0 Gy {S['zero_mae']:.2f}")
    P = L.get("planned")
    if P:
        print(f"  planning-time dose (CT and contours only), leave-one-patient-out over {len(P['patients'])} patients "
              f"(OpenKBP dose / DVH score, Gy; seconds a patient):")
        for name, v in P["methods"].items():
            print(f"    {name:<40} {v['dose_score']:.2f} / {v['dvh_score']:.2f}  {v['seconds_per_patient']:.2f} s")


def _print_summary(m: dict) -> None:
    """Dice@k per code length, organ-set Jaccard, dose MAE and dose-prediction scores of ``metrics.json``."""
    s = m["overlap"]["summary"]
    kr = m["parameters"]["k_reference"]
    for b in m["parameters"]["bits"]:
        inc, exc = s["included"]["dice"][str(b)][str(kr)], s["excluded"]["dice"][str(b)][str(kr)]
        print(f"  Dice@{kr} {b:>6} bits: {inc['mean']:.3f} (same patient included), {exc['mean']:.3f} (excluded)")
    rel = m["relevance"]
    k10 = "10" if "10" in rel["organ"]["methods"]["euclidean"]["jaccard"] else str(m["parameters"]["ks"][-1])
    oj = rel["organ"]["methods"]
    if oj["euclidean"]["jaccard"][k10] is not None:
        print(f"  organ-set Jaccard@{k10}, other patients: Euclidean {oj['euclidean']['jaccard'][k10]:.3f}, "
              f"Hamming {oj['hamming']['jaccard'][k10]:.3f}, re-ranked {oj['rerank']['jaccard'][k10]:.3f}, "
              f"random {oj['random']['jaccard'][k10]:.3f}")
    dz = rel["dose"]
    if dz["zero"] is not None:
        print(f"  dose MAE of the top-{k10} mean: Euclidean {dz['mae']['euclidean'][k10]:.2f} Gy, Hamming "
              f"{dz['mae']['hamming'][k10]:.2f} Gy, re-ranked {dz['mae']['rerank'][k10]:.2f} Gy; predicting 0 Gy "
              f"{dz['zero']:.2f} Gy")
    if m.get("dose_prediction"):
        _print_dose(m["dose_prediction"])
