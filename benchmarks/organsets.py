"""Organ-set Jaccard@k of slice search in several indexes of one archive (a table on stdout).

``--queries`` archive slices are drawn with ``--seed``; each is searched in every index given (other
patients only) and scored by the mean Jaccard index of its organ set (the structures on the slice,
targets and organs) against those of its ``k`` results; the same queries against ``k`` slices of other
patients drawn at random give the baseline.

    .venv/bin/python benchmarks/organsets.py --archive A ct256 geo256 ctgeo256
"""
from __future__ import annotations

import argparse

import numpy as np

from medhash import Archive
from medhash.evaluate.metrics import set_jaccard
from medhash.evaluate.relevance import organ_sets
from medhash.retrieval import search_many


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--archive", required=True)
    ap.add_argument("indexes", nargs="+", metavar="INDEX")
    ap.add_argument("--queries", type=int, default=400)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    archive = Archive(args.archive, read_only=True)
    table, sets = archive.table(), organ_sets(archive)
    rng = np.random.default_rng(args.seed)
    rows = np.sort(rng.choice(len(table["row"]), min(args.queries, len(table["row"])), replace=False))
    names = [f"{table['patient_id'][r]}:{int(table['slice_index'][r])}" for r in rows]
    row_of = {(str(p), int(s)): int(r) for r, p, s in zip(table["row"], table["patient_id"], table["slice_index"])}
    print(f"| index | organ-set Jaccard@{args.k} |\n|---|---|")
    for index in args.indexes:
        results = search_many(archive, names, index=index, k=args.k, same_patient=False)
        scores = [np.mean([set_jaccard(sets[r], sets[row_of[(h["patient_id"], h["slice_index"])]])
                           for h in res["results"]]) for r, res in zip(rows, results)]
        print(f"| {index} | {np.mean(scores):.3f} |")
    random = [np.mean([set_jaccard(sets[r], sets[o]) for o in rng.choice(
        np.flatnonzero(table["patient_id"] != table["patient_id"][r]), args.k, replace=False)]) for r in rows]
    print(f"| random slices of other patients | {np.mean(random):.3f} |")
    print(f"\n{len(rows)} queries, seed {args.seed}, archive {archive.path.name}")


if __name__ == "__main__":
    main()
