"""Ties at equal Hamming distance are ordered by the Euclidean distance of the features, then by row
(issue 16 point 3): an exact copy of a patient comes first for every query slice."""
import shutil

import numpy as np
import pytest

from medhash import Archive, search
from medhash.demo import DEMO_PROVENANCE, make_phantom
from medhash.ingest import ingest
from medhash.io.writers import write_ct_series
from medhash.retrieval import FlatEngine, build_index, hamming_topk, search_many

COPY = "EXACTCOPY"


# ---------------------------------------------------------------------- hamming_topk on hand-made codes
def _codes():
    """Six 8-bit items: items 0, 1, 2 share one code (distance 0 to the query), 3 and 4 another (distance
    1), item 5 is at distance 8; the tie-break says item 2 is the exact copy (0.0), then 1, then 0."""
    codes = np.array([[0], [0], [0], [1], [1], [255]], dtype=np.uint8)
    exact = np.array([3.0, 2.0, 0.0, 5.0, 4.0, 9.0])
    return FlatEngine(codes), np.arange(6, dtype=np.int64), (lambda q, items: exact[items])


def test_ties_are_ordered_by_the_exact_distance_then_the_key():
    engine, keys, tb = _codes()
    q = np.zeros((1, 1), np.uint8)
    D, I = hamming_topk(engine, q, 1, keys, tiebreak=tb)          # single-query path, cut inside a tie
    assert I.tolist() == [[2]] and D.tolist() == [[0]]
    D, I = hamming_topk(engine, q, 4, keys, tiebreak=tb)          # across the 3rd/4th distance
    assert I.tolist() == [[2, 1, 0, 4]] and D.tolist() == [[0, 0, 0, 1]]
    D, I = hamming_topk(engine, np.zeros((2, 1), np.uint8), 2, keys, tiebreak=tb)   # batch path
    assert I.tolist() == [[2, 1], [2, 1]]
    ex = np.zeros(6, bool)
    ex[1] = True
    D, I = hamming_topk(engine, q, 3, keys, excluded=[ex], tiebreak=tb)             # with an exclusion
    assert I.tolist() == [[2, 0, 4]]
    # without a tie-break: by key (the row), as before
    assert hamming_topk(engine, q, 2, keys)[1].tolist() == [[0, 1]]


def test_the_tie_break_is_asked_only_for_tied_candidates():
    engine, keys, _ = _codes()
    asked = []

    def tb(q, items):
        asked.append(sorted(items.tolist()))
        return np.zeros(len(items))
    hamming_topk(engine, np.full((1, 1), 255, np.uint8), 1, keys, tiebreak=tb)   # item 5 alone at 0
    assert asked == []
    hamming_topk(engine, np.full((1, 1), 1, np.uint8), 2, keys, tiebreak=tb)     # 3, 4 tied at 0; 0-2 beyond
    assert asked == [[3, 4]]


# ---------------------------------------------------------------------- a planted exact copy in an archive
@pytest.fixture(scope="module")
def copied(trained, tmp_path_factory):
    """The trained demo archive with an exact copy of DEMO001's CT (new ids) ingested after it, and
    ITQ 32-bit indexes (the models have 32 features: ITQ gives at most one bit a feature): a flat (exact) one and an hnsw (approximate) one."""
    root, arch = trained
    dest = tmp_path_factory.mktemp("ties")
    shutil.copytree(arch.path, dest / "arch")
    ph = make_phantom(0, 0, rows=96)
    write_ct_series(dest / "copy", ph.hu, pixel_spacing=ph.pixel_spacing, slice_positions_mm=ph.slice_positions_mm,
                    origin_xy_mm=ph.origin_xy_mm, patient_id=COPY, study_uid="1.2.826.0.1.3680043.8.498.11",
                    series_uid="1.2.826.0.1.3680043.8.498.12", frame_of_reference_uid="1.2.826.0.1.3680043.8.498.13",
                    provenance=DEMO_PROVENANCE)
    a = Archive(dest / "arch")
    assert ingest(a, [dest / "copy"]).exit_code == 0
    build_index(a, "itq32", "ct", 32, hasher="itq", seed=0)
    build_index(a, "itq32h", "ct", 32, hasher="itq", seed=0, index_type="hnsw")
    return a


@pytest.mark.parametrize("name", ["itq32", "itq32h"])
def test_an_exact_copy_is_first_for_every_query_slice(copied, name):
    arch = copied
    slices = [s.slice_index for s in arch.slices("DEMO001")]
    copy = {s.slice_index: s.ct for s in arch.slices(COPY)}
    assert len(slices) == len(copy) > 20
    tied_with_others = 0
    for res in search_many(arch, [f"DEMO001:{i}" for i in slices], index=name, k=5):
        first = res["results"][0]
        i = res["query"]["slice_index"]
        if np.array_equal(copy[first["slice_index"]], copy[i]):   # a copied slice identical to this one is as good
            i = first["slice_index"]
        assert (first["patient_id"], first["slice_index"], first["hamming"]) == (COPY, i, 0)
        tied_with_others += sum(r["hamming"] == 0 for r in res["results"][1:])
    # the case of the issue: the copy ties at Hamming 0 with other slices (which row order put first)
    assert tied_with_others > 0
    one = search(arch, f"DEMO001:{slices[len(slices) // 2]}", index=name, k=3)          # the single-query path
    assert (one["results"][0]["patient_id"], one["results"][0]["slice_index"]) == (COPY, slices[len(slices) // 2])
