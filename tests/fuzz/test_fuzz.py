"""Fuzzed ingest (issue 17): one damaged DICOM RT file never costs another file, and never stores
something wrong in silence.

For every kind of :mod:`fuzz_mutate`, :data:`CASES_PER_KIND` seeded cases (240 in all), each a copy of a
small demo patient with one damaged file, are ingested in process next to an intact patient, in
batches of :data:`fuzz_harness.N_TEMPLATES` (a batch that breaks a shared invariant is run again case
by case, so each failure names its case). Invariants (:attr:`fuzz_harness.Outcome.failures`): no
exception but a report; the intact patient stored byte for byte as when ingested alone; no NaN, inf,
HU outside [-1024, 4000] or dose outside [0, 200] Gy stored; every change to the damaged patient
reported, duplicates decided as issue 17 says. The long run is ``benchmarks/fuzz.py --cases 5000``.
"""
from __future__ import annotations

import dataclasses
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.filereader import read_file_meta_info

sys.path.insert(0, str(Path(__file__).parent))
import fuzz_harness as H  # noqa: E402  (tests/fuzz/fuzz_harness.py)
from fuzz_mutate import KINDS, mutate, target_files  # noqa: E402

CASES_PER_KIND = 16


@pytest.fixture(scope="module")
def templates(tmp_path_factory):
    """The intact patient and the damaged-patient templates, each with its clean fingerprint."""
    return H.write_templates(tmp_path_factory.mktemp("fuzz-templates"))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_one_damaged_file_costs_nothing_else(kind, templates, tmp_path):
    outcomes = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom and numpy warn about what the cases damaged
        for start in range(0, CASES_PER_KIND, H.N_TEMPLATES):
            batch = [H.Case(kind, n) for n in range(start, min(start + H.N_TEMPLATES, CASES_PER_KIND))]
            outcomes += H.run_batch(batch, templates, tmp_path)
    assert len(outcomes) == CASES_PER_KIND
    failed = [f"{', '.join(o.failures)}: {o.line()}" for o in outcomes if o.failures]
    assert not failed, f"{len(failed)} of {CASES_PER_KIND} {kind} cases failed:\n" + "\n".join(failed)


# ------------------------------------------------------------------------ the harness itself
def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_mutator_is_seeded_and_changes_a_file(kind, templates, tmp_path):
    """The same case damages the same bytes twice; every case of the first eight changes a file."""
    template = _files(templates.damaged[0])
    for n in range(0, 8 * H.N_TEMPLATES, H.N_TEMPLATES):   # eight cases on template 0
        a, ma = H.Case(kind, n).prepare(templates, tmp_path / "a")
        b, mb = H.Case(kind, n).prepare(templates, tmp_path / "b")
        assert _files(a) == _files(b) and ma.detail == mb.detail
        assert _files(a) != template, f"{kind}-{n} changed nothing: {ma.detail}"
        assert ma.target in KINDS[kind].targets and ma.path.parent == a


def _mutated(templates, tmp_path, kind: str, n: int):
    folder = tmp_path / f"{kind}-{n}"
    shutil.copytree(templates.damaged[0], folder)
    return mutate(folder, kind, np.random.default_rng([7, n]))


def test_dicom_level_mutations_are_what_they_say(templates, tmp_path):
    """Spot checks of the damage, read back with pydicom: duplicates keep their twin's UID, a
    re-declared VR is that VR, a declared transfer syntax is that one, DoseGridScaling is gone, and
    '2£.81' is in the bytes of a damaged ContourData."""
    for kind in ("dup_identical", "dup_different", "dup_truncated"):
        for n in range(4):
            m = _mutated(templates, tmp_path, kind, n)
            dup, twin = m.path.read_bytes(), m.twin.read_bytes()
            assert m.path.parent == m.twin.parent and m.path != m.twin
            if kind == "dup_identical":
                assert dup == twin
            elif kind == "dup_truncated":
                assert len(dup) < len(twin) and twin.startswith(dup)
            else:
                a, b = pydicom.dcmread(m.path), pydicom.dcmread(m.twin)
                assert a.SOPInstanceUID == b.SOPInstanceUID and dup != twin
    checked = 0
    for n in range(12):
        m = _mutated(templates, tmp_path, "wrong_vr", n)
        what, vr = m.detail.split(" declared as ")
        if "/" not in what:
            assert pydicom.dcmread(m.path).get_item(what).VR == vr
            checked += 1
    assert checked >= 3
    for n in range(4):
        m = _mutated(templates, tmp_path, "transfer_syntax", n)
        assert str(read_file_meta_info(m.path).TransferSyntaxUID) == m.detail.split(" = ")[1].split(" ")[0]
    m = _mutated(templates, tmp_path, "missing_dose_scaling", 0)
    assert "DoseGridScaling" in pydicom.dcmread(target_files(templates.damaged[0], "rtdose")[0])
    assert "DoseGridScaling" not in pydicom.dcmread(m.path)
    details = [_mutated(templates, tmp_path, "contour_data", n) for n in range(40)]
    pound = [m for m in details if m.detail.split(": ")[1].startswith("2£.81")]
    assert pound and all(b"2\xa3.81" in m.path.read_bytes() for m in pound)


def test_harness_tells_a_traceback_from_an_abort(templates, tmp_path, monkeypatch):
    ingest_mod = sys.modules["medhash.ingest"]   # the package (``medhash.ingest`` is also the function)
    src = [templates.intact]

    def boom(exc):
        def ingest(*a, **k):
            raise exc
        return ingest
    monkeypatch.setattr(ingest_mod, "ingest", boom(TypeError("'NoneType' object is not iterable")))
    run = H.ingest_inprocess(src, tmp_path / "a")
    assert (run.status, run.symptom.split(" at ")[0]) == ("traceback", "TypeError: 'NoneType' object is not iterable")
    monkeypatch.setattr(ingest_mod, "ingest", boom(ValueError("could not convert string to float: '2£.81'")))
    run = H.ingest_inprocess(src, tmp_path / "b")
    assert (run.status, run.symptom) == ("abort", "error: ValueError: could not convert string to float: '2£.81'")


def test_harness_sees_a_silent_change(templates, tmp_path):
    """A valid but different RescaleIntercept (+100 HU on one slice) is stored in silence by any
    reader, as it should be: the harness calls the damaged patient changed, silently unless a
    problem names the file, and the intact patient intact."""
    case = H.Case("absurd_value", 0)
    folder, m = case.prepare(templates, tmp_path)
    for p in templates.damaged[0].iterdir():   # undo the case's own damage
        (folder / p.name).write_bytes(p.read_bytes())
    ct = target_files(folder, "ct")[4]
    ds = pydicom.dcmread(ct)
    ds.RescaleIntercept = float(ds.RescaleIntercept) + 100
    ds.save_as(ct)
    arch = tmp_path / "arch"
    run = H.ingest_inprocess([templates.intact, folder], arch)
    assert (run.status, run.exit_code, run.problems) == ("ok", 0, [])
    planted = dataclasses.replace(m, target="ct", path=ct, detail="planted")
    o = H.judge(case, folder, planted, run, arch, templates, H.fingerprint(arch))
    assert o.intact_ok and o.changed and o.named == "no" and o.silent and not o.out_of_range
    assert o.failures == ["silently changed"]
    elsewhere = H.Run("ok", 1, [("error", str(templates.intact / ct.name), "about another patient's file")])
    assert H.judge(case, folder, planted, elsewhere, arch, templates, H.fingerprint(arch)).named == "no"
    named = H.Run("ok", 1, [("error", str(ct), "RescaleIntercept out of range")])
    o = H.judge(case, folder, planted, named, arch, templates, H.fingerprint(arch))
    assert o.named == "file" and not o.silent and o.failures == []
    assert o.own_problems() == named.problems and H.Outcome(case, m, elsewhere, folder).own_problems() == []


def test_values_out_of_range_are_found():
    """HU outside [-1024, 4000], dose below 0, above 200 Gy or not finite, a non-finite position."""
    from types import SimpleNamespace as S
    ok = np.zeros((4, 4), np.float32)
    def slice_(ct=ok, dose=ok, z=0.0, origin=(0.0, 0.0, 0.0)):
        return S(slice_index=3, ct=np.asarray(ct, np.float32), dose=dose, z_mm=z, origin_mm=np.array(origin))
    assert H._out_of_range("P", slice_()) == [] and H._out_of_range("P", slice_(dose=None)) == []
    assert H._out_of_range("P", slice_(ct=ok - 1024, dose=ok + 200)) == []
    assert H._out_of_range("P", slice_(ct=ok + 32767)) == ["P:3 HU in [32767, 32767]"]
    assert H._out_of_range("P", slice_(ct=ok - 1025)) == ["P:3 HU in [-1025, -1025]"]
    assert H._out_of_range("P", slice_(dose=ok + np.inf)) == ["P:3 dose in [inf, inf] Gy"]
    assert H._out_of_range("P", slice_(dose=ok - 0.5)) == ["P:3 dose in [-0.5, -0.5] Gy"]
    assert H._out_of_range("P", slice_(dose=ok + 200.5)) == ["P:3 dose in [200.5, 200.5] Gy"]
    assert H._out_of_range("P", slice_(z=float("nan")))[0].startswith("P:3 position z=nan")


def test_table_counts_per_kind(templates, tmp_path):
    case = H.Case("truncate", 3)
    folder, m = case.prepare(templates, tmp_path)
    ok = H.Outcome(case, m, H.Run("ok", 1), intact_ok=True, named="file", changed=True)
    bad = H.Outcome(H.Case("wrong_vr", 1), m, H.Run("traceback", 1, symptom="x"), intact_ok=False)
    rows = H.tally([ok, bad])
    assert rows["truncate"]["ok"] == 1 and rows["truncate"]["FAILED"] == 0 and rows["truncate"]["exit 1"] == 1
    assert rows["wrong_vr"]["traceback"] == 1 and rows["wrong_vr"]["intact lost"] == 1 and rows["wrong_vr"]["FAILED"] == 1
    assert rows["total"]["cases"] == 2 and rows["total"]["FAILED"] == 1
    assert list(rows) == ["truncate", "wrong_vr", "total"]
    assert H.table([ok, bad]).splitlines()[2].startswith("| truncate | 1 | 1 | 0 |")


def test_a_failing_batch_is_run_again_case_by_case(templates, tmp_path, monkeypatch):
    """An ingest that dies whenever one case's folder is among its sources: the batch of two is run
    again alone, so the traceback is charged to that case only and the other case passes."""
    ingest_mod = sys.modules["medhash.ingest"]
    real = ingest_mod.ingest

    def ingest(archive, sources, **kw):
        if any("dup_identical-1" in str(s) for s in sources):
            raise TypeError("'NoneType' object is not iterable")
        return real(archive, sources, **kw)
    monkeypatch.setattr(ingest_mod, "ingest", ingest)
    a, b = H.run_batch([H.Case("dup_identical", 0), H.Case("dup_identical", 1)], templates, tmp_path)
    assert (a.case.number, a.run.status, a.failures) == (0, "ok", [])
    assert (b.case.number, b.run.status) == (1, "traceback")
    assert b.failures == ["traceback", "intact patient lost", "identical duplicate changed the archive"]
    assert b.run.symptom.startswith("TypeError: 'NoneType' object is not iterable at ")
    assert (tmp_path / "dup_identical-0" / "archive").is_dir() and (tmp_path / "dup_identical-1").is_dir()
