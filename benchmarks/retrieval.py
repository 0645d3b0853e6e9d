"""Retrieval quality of learned features beside the raw-pixel reference (a table on stdout).

    .venv/bin/python benchmarks/retrieval.py --archive A [--model ct-shallow] [--queries 400] [--seed 0]

For each feature set (raw pixels as in mission.md's reference protocol, and each trained model
asked for): Dice@50 of the Hamming top-50 against the Euclidean top-50 on the same features (the
query itself excluded, same-patient results included, ties at the 50th Hamming distance counted as
the expected overlap under random tie-breaking) at 256 and 1024 bits with gamma auto, and with
the Hamming top-500 re-ranked by Euclidean distance; then the cross-patient organ-set Jaccard@10
(results from other patients only) for Euclidean, Hamming 256-bit and 10 random slices of other
patients. Queries: ``--queries`` archive rows drawn with ``--seed``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from medhash import Archive, KernelLSH
from medhash.evaluate import dice_from_overlap, set_jaccard, tie_aware_overlap
from medhash.hashing import hamming_distances


def raw_pixel_features(archive: Archive) -> np.ndarray:
    """mission.md's reference feature: HU clipped to [-1000, 1000] / 1000, 4 x 4 mean-pooled (1024)."""
    ct = np.asarray(archive.ct, dtype=np.float32)
    x = np.clip(ct, -1000, 1000) / 1000.0
    return x.reshape(len(x), 32, 4, 32, 4).mean(axis=(2, 4)).reshape(len(x), -1).astype(np.float32)


def euclidean_all(X: np.ndarray, q: np.ndarray) -> np.ndarray:
    diff = X - q[None, :]
    return np.sqrt(np.einsum("ij,ij->i", diff, diff, dtype=np.float64))


def evaluate(X: np.ndarray, patients: np.ndarray, organ_sets, queries: np.ndarray, seed: int) -> dict:
    """The table's numbers for one feature matrix X (n, d)."""
    k, k_rel = 50, 10
    out: dict[str, float] = {}
    eu = np.stack([euclidean_all(X, X[q]) for q in queries])          # (nq, n)
    for j, q in enumerate(queries):
        eu[j, q] = np.inf
    truth = np.argsort(eu, axis=1, kind="stable")[:, :k]
    for bits in (256, 1024):
        h = KernelLSH(n_bits=bits, gamma="auto", seed=seed).fit(X)
        codes = h.transform(X)
        ham = hamming_distances(codes[queries], codes).astype(np.float64)
        for j, q in enumerate(queries):
            ham[j, q] = np.inf
        ov = [tie_aware_overlap(ham[j], truth[j], k) for j in range(len(queries))]
        out[f"dice50_{bits}"] = float(np.mean(dice_from_overlap(np.array(ov), k)))
        if bits == 256:
            out["gamma_auto"] = h.gamma_
            dice_rr = []
            for j in range(len(queries)):
                short = np.lexsort((np.arange(len(X)), ham[j]))[:500]       # Hamming top-500, ties by row
                rr = short[np.argsort(eu[j, short], kind="stable")[:k]]
                dice_rr.append(len(set(rr) & set(truth[j])) / k)
            out["dice50_256_rerank500"] = float(np.mean(dice_rr))
            # cross-patient relevance at k = 10
            rng = np.random.default_rng(seed)
            jac_e, jac_h, jac_r = [], [], []
            for j, q in enumerate(queries):
                other = patients != patients[q]
                e = np.where(other, eu[j], np.inf)
                hh = np.where(other, ham[j], np.inf)
                top_e = np.argsort(e, kind="stable")[:k_rel]
                top_h = np.lexsort((np.arange(len(X)), hh))[:k_rel]
                rand = rng.choice(np.flatnonzero(other), size=k_rel, replace=False)
                jac_e.append(np.mean([set_jaccard(organ_sets[q], organ_sets[i]) for i in top_e]))
                jac_h.append(np.mean([set_jaccard(organ_sets[q], organ_sets[i]) for i in top_h]))
                jac_r.append(np.mean([set_jaccard(organ_sets[q], organ_sets[i]) for i in rand]))
            out["organ_jaccard10_euclidean"] = float(np.mean(jac_e))
            out["organ_jaccard10_hamming256"] = float(np.mean(jac_h))
            out["organ_jaccard10_random"] = float(np.mean(jac_r))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archive", required=True, type=Path)
    ap.add_argument("--model", action="append", default=[],
                    help="trained model name, or CT+DOSE names joined by '+' for the joint feature (repeatable)")
    ap.add_argument("--queries", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    arch = Archive(args.archive)
    table = arch.table()
    patients = table["patient_id"]
    organ_sets = arch.structure_sets()
    rng = np.random.default_rng(args.seed)
    queries = np.sort(rng.choice(len(arch), size=min(args.queries, len(arch)), replace=False))
    feature_sets = {"raw pixels 32x32 (reference)": raw_pixel_features(arch)}
    if args.model:
        from medhash.features import archive_features, read_metrics
        from medhash.retrieval import block_scale
        for name in args.model:
            # "a+b": the joint feature of medhash index --channel ct+dose (blocks scaled to unit RMS norm)
            blocks = [np.asarray(archive_features(arch, part, progress=True), dtype=np.float32)
                      for part in name.split("+")]
            X = np.concatenate([b / block_scale(b) for b in blocks], axis=1) if len(blocks) > 1 else blocks[0]
            feature_sets[name] = X
    rows = []
    for name, X in feature_sets.items():
        if not np.isfinite(X).all():
            sys.exit(f"{name}: some rows have no features (slices without dose?); this benchmark needs every row")
        t = time.perf_counter()
        print(f"evaluating {name} ({X.shape[1]} floats) ...", file=sys.stderr)
        rows.append((name, X.shape[1], evaluate(X, patients, organ_sets, queries, args.seed), time.perf_counter() - t))

    print(f"archive {args.archive}: {len(arch)} slices, {len(set(patients))} patients; {len(queries)} queries "
          f"(seed {args.seed}); command: {' '.join(sys.argv)}")
    cols = [("dice50_256", "Dice@50 256b"), ("dice50_1024", "Dice@50 1024b"),
            ("dice50_256_rerank500", "256b rerank500"), ("organ_jaccard10_euclidean", "organJ@10 eucl"),
            ("organ_jaccard10_hamming256", "organJ@10 ham256"), ("organ_jaccard10_random", "organJ@10 random")]
    print(f"{'features':<32} {'dim':>5} " + " ".join(f"{c[1]:>16}" for c in cols) + f" {'gamma auto':>11}")
    for name, dim, r, _sec in rows:
        print(f"{name:<32} {dim:>5} " + " ".join(f"{r[c[0]]:>16.3f}" for c in cols) + f" {r['gamma_auto']:>11.4g}")
    if args.model:
        from medhash.features import read_metrics
        print("\nreconstruction on held-out patients (from the models' metrics.json):")
        for name in sorted({p for n in args.model for p in n.split("+")}):
            m = read_metrics(arch, name)["final"]
            print(f"  {name:<20} MSE {m['held_out_mse']:.5f}  PSNR {m['held_out_psnr']:.2f} dB  "
                  f"({m['evaluated_on']}, {m['n_slices']} slices)")


if __name__ == "__main__":
    main()
