"""Test helper (not a test file): two archives hold the same thing.

``assert_same_archive(reference, got)`` is what the listener, pull and compressed-DICOM tests mean by "the
same archive as `medhash ingest`": the same patients (through ``map_pid`` when the second one was
pseudonymised), the same series, and slice by slice the same position and the same CT and dose arrays,
byte for byte, and the same structure masks. Slices that completed series superseded are not compared
(they are no longer the archive's).
"""
from __future__ import annotations

from medhash import Archive


def assert_same_archive(reference: Archive, got: Archive, *, map_pid=None, min_slices: int = 1,
                        dose_required: bool = False) -> None:
    """Assert that ``got`` holds what ``reference`` holds.

    map_pid : patient id in ``reference`` -> patient id in ``got`` (pseudonymisation); then series UIDs
        are not compared (they are remapped too).
    min_slices : every patient has at least this many slices.
    dose_required : every slice has a dose.
    """
    mapped = map_pid or (lambda p: p)
    ri, gi = reference.info(), got.info()
    assert (ri["slices"], ri["series"]) == (gi["slices"], gi["series"])   # live slices (superseded ones aside)
    assert sorted(mapped(p) for p in reference.patients()) == got.patients()
    if map_pid is None:
        assert reference.series_uids() == got.series_uids()
    for pid in reference.patients():
        a, b = reference.slices(pid), got.slices(mapped(pid))
        assert len(a) == len(b) >= min_slices
        for x, y in zip(a, b):
            assert (x.slice_index, x.z_mm) == (y.slice_index, y.z_mm)
            assert x.ct.tobytes() == y.ct.tobytes()
            assert (x.dose is None) == (y.dose is None) and (x.dose is not None or not dose_required)
            if x.dose is not None:
                assert x.dose.tobytes() == y.dose.tobytes()
            assert sorted(x.masks) == sorted(y.masks)
            assert all(x.masks[k].tobytes() == y.masks[k].tobytes() for k in x.masks)
    assert ri["structures"] == gi["structures"]
