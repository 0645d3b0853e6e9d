"""Neighbour preservation of each hasher of medhash.hashing.HASHERS, by code length (a table on stdout).

    .venv/bin/python benchmarks/hashers.py --archive A --model ct-shallow [--queries 400] [--seed 0]

Features: ``medhash.features.archive_features(Archive(A), model)`` (the archive's cache, read only
when it is complete). For each hasher (kernel LSH, PCA-sign, ITQ, the trained kernel hash) and each
code length (16, 32, 64, 128, 256, 1024 bits; PCA-sign and ITQ only up to the feature dimension,
"–" beyond): Dice@50 of the Hamming top-50 against the Euclidean top-50 on the same features, for
``--queries`` archive rows drawn with ``--seed`` (the query itself excluded, same-patient results
included, ties at the 50th Hamming distance counted as the expected overlap under random
tie-breaking, as in benchmarks/retrieval.py); then the fit time (seconds, on all rows) and the
transform time per 1,000 rows (milliseconds). Every hasher is fitted on every row with ``--seed``.
Torch and BLAS run on one thread.

A second table, at 64 and 128 bits (the lengths where every hasher exists): usefulness with results
from other patients only, as in ``medhash evaluate``: organ-set Jaccard@10, the slice-level dose
MAE@10 (mean dose of the top 10 as the query's dose, Gy over its possible-dose mask, else its body)
and the time of one query (hash one feature vector + faiss ``IndexBinaryFlat`` top-10, median).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from medhash import Archive  # noqa: E402
from medhash.evaluate import dice_from_overlap, tie_aware_overlap  # noqa: E402
from medhash.hashing import HASHERS, hamming_distances, make_hasher  # noqa: E402

BITS = (16, 32, 64, 128, 256, 1024)
ORDER = ("kernel-lsh", "pca-sign", "itq", "trained")
K = 50


def euclidean_truth(X: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """(nq, k) Euclidean top-k of each query (itself excluded), ties by row."""
    Xd = X.astype(np.float64)
    out = np.empty((len(queries), k), dtype=np.int64)
    for j, q in enumerate(queries):
        diff = Xd - Xd[q]
        d = np.einsum("ij,ij->i", diff, diff)
        d[q] = np.inf
        out[j] = np.argsort(d, kind="stable")[:k]
    return out


def dice_at_k(codes: np.ndarray, queries: np.ndarray, truth: np.ndarray, k: int) -> float:
    ham = hamming_distances(codes[queries], codes).astype(np.float64)
    ham[np.arange(len(queries)), queries] = np.inf
    ov = [tie_aware_overlap(ham[j], truth[j], k) for j in range(len(queries))]
    return float(np.mean(dice_from_overlap(np.array(ov), k)))


def run(X: np.ndarray, queries: np.ndarray, seed: int, bits=BITS, names=ORDER) -> dict:
    """{(name, n_bits): {"dice": .., "fit_s": .., "transform_ms_per_1000": ..} or None}."""
    truth = euclidean_truth(X, queries, K)
    results = {}
    for name in names:
        for n_bits in bits:
            if name in ("itq", "pca-sign") and n_bits > min(X.shape):
                results[name, n_bits] = None
                continue
            h = make_hasher(name, n_bits, seed=seed)
            t0 = time.perf_counter()
            h.fit(X)
            fit_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            codes = h.transform(X)
            tr = (time.perf_counter() - t0) * 1000.0 / len(X) * 1000.0
            results[name, n_bits] = {"dice": dice_at_k(codes, queries, truth, K), "fit_s": fit_s,
                                     "transform_ms_per_1000": tr}
            print(f"  {name:<10} {n_bits:>5} bits: Dice@{K} {results[name, n_bits]['dice']:.3f}, "
                  f"fit {fit_s:.2f} s, transform {tr:.2f} ms / 1000", file=sys.stderr, flush=True)
    return results


USE_BITS = (64, 128)


def usefulness(arch, X: np.ndarray, queries: np.ndarray, seed: int, names=ORDER) -> dict:
    """{(name, bits): {"organ_j10", "dose_mae10", "query_ms"}} with results from other patients only."""
    import faiss

    from medhash.evaluate import relevance
    patients = arch.table()["patient_id"].astype(str)
    excluded = patients[queries][:, None] == patients[None, :]
    sets = relevance.organ_sets(arch)
    out = {}
    for name in names:
        for n_bits in USE_BITS:
            if name in ("itq", "pca-sign") and n_bits > min(X.shape):
                continue
            h = make_hasher(name, n_bits, seed=seed).fit(X)
            codes = h.transform(X)
            top = relevance.topk(hamming_distances(codes[queries], codes), excluded, 10)
            organ = relevance.organ_scores(top, queries, sets, [10])
            dose = relevance.dose_scores(arch, {"m": top}, queries, [10])
            index = faiss.IndexBinaryFlat(codes.shape[1] * 8)
            index.add(codes)
            faiss.omp_set_num_threads(1)
            times = []
            for q in queries[:100]:
                t0 = time.perf_counter()
                index.search(h.transform(X[q:q + 1]), 10)
                times.append((time.perf_counter() - t0) * 1e3)
            out[name, n_bits] = {"organ_j10": organ["jaccard"]["10"], "dose_mae10": dose["mae"]["m"]["10"],
                                 "query_ms": float(np.median(times))}
            print(f"  usefulness {name:<10} {n_bits:>5} bits: {out[name, n_bits]}", file=sys.stderr, flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archive", required=True, type=Path)
    ap.add_argument("--model", required=True, help="trained model of the archive (e.g. ct-shallow)")
    ap.add_argument("--queries", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    try:
        import torch
        torch.set_num_threads(1)
    except ImportError:
        pass
    from medhash.features import archive_features

    arch = Archive(args.archive)
    X = np.array(archive_features(arch, args.model, progress=False), dtype=np.float32)
    if not np.isfinite(X).all():
        sys.exit(f"{args.model}: some rows have no features (slices without dose?); this benchmark needs every row")
    rng = np.random.default_rng(args.seed)
    queries = np.sort(rng.choice(len(X), size=min(args.queries, len(X)), replace=False))
    results = run(X, queries, args.seed)

    print(f"command: {' '.join(sys.argv)}")
    print(f"archive {args.archive}: {len(X)} slices, model {args.model} ({X.shape[1]} floats); {len(queries)} "
          f"queries (seed {args.seed}); Dice@{K} Hamming vs Euclidean top-{K}, tie-aware")
    for title, key, fmt in ((f"Dice@{K}", "dice", ".3f"), ("fit time, s (all rows, one thread)", "fit_s", ".2f"),
                            ("transform time, ms per 1,000 rows", "transform_ms_per_1000", ".2f")):
        print(f"\n{title}\n{'hasher':<12}" + "".join(f"{b:>8}" for b in BITS))
        for name in ORDER:
            cells = [f"{'–':>8}" if results[name, b] is None else f"{results[name, b][key]:>8{fmt}}" for b in BITS]
            print(f"{name:<12}" + "".join(cells))
    print("\nbest per length:")
    for b in BITS:
        best = max((n for n in ORDER if results[n, b] is not None), key=lambda n: results[n, b]["dice"])
        gain = results[best, b]["dice"] - results["kernel-lsh", b]["dice"]
        print(f"  {b:>5} bits: {best} ({gain:+.3f} vs kernel-lsh)")
    use = usefulness(arch, X, queries, args.seed)
    print("\nusefulness, results from other patients: organ-set Jaccard@10 / dose MAE@10 (Gy) / one query (ms)")
    print(f"{'hasher':<12}" + "".join(f"{str(b) + ' bits':>26}" for b in USE_BITS))
    for name in ORDER:
        cells = []
        for b in USE_BITS:
            u = use.get((name, b))
            cells.append(f"{'–':>26}" if u is None else
                         f"{u['organ_j10']:>10.3f} / {u['dose_mae10']:>5.2f} / {u['query_ms']:>5.3f}")
        print(f"{name:<12}" + "".join(cells))
    assert set(ORDER) == set(HASHERS)


if __name__ == "__main__":
    main()
