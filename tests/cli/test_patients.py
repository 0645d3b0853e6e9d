"""`medhash patients`: the archive's patient ids with what the catalog knows of each, never a name."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from medhash import Archive
from medhash.cli import main


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--out", str(out), "--patients", "2"]) == 0
    return out


@pytest.fixture(scope="module")
def archive(demo_dir, tmp_path_factory):
    """The two demo patients (DICOM) plus two synthetic OpenKBP patients, one without dose."""
    from conftest import make_openkbp_patient
    root = tmp_path_factory.mktemp("kbp")
    make_openkbp_patient(root / "train-pats", "pt_7")
    make_openkbp_patient(root / "train-pats", "pt_12", dose=False, body_slices=range(30, 70))
    arch = tmp_path_factory.mktemp("arch") / "a"
    assert main(["ingest", str(demo_dir), str(root / "train-pats"), "--archive", str(arch), "--no-progress"]) == 0
    return arch


def test_json_lists_every_patient_with_its_catalog_figures(archive, capsys):
    assert main(["patients", "--archive", str(archive), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert [p["patient_id"] for p in got] == ["DEMO001", "DEMO002", "pt_12", "pt_7"]
    with Archive(archive) as arch:
        table = arch.table()
        for p in got:
            mine = table["patient_id"] == p["patient_id"]
            idx = table["slice_index"][mine]
            assert p["slices"] == int(mine.sum()) > 0
            assert (p["first_slice"], p["last_slice"]) == (int(idx.min()), int(idx.max()))
            assert p["slices_with_dose"] == int(table["has_dose"][mine].sum())
            assert p["has_dose"] is bool(table["has_dose"][mine].any())
            assert p["series"] == 1 and p["pseudonymised"] is False
            names = set().union(*(s.masks for s in arch.slices(p["patient_id"])))
            assert p["structures"] == len(names)
    by_id = {p["patient_id"]: p for p in got}
    assert by_id["DEMO001"]["source"] == "dicom" and by_id["pt_7"]["source"] == "openkbp"
    assert by_id["pt_12"]["has_dose"] is False and by_id["pt_12"]["slices_with_dose"] == 0
    assert by_id["pt_7"]["slices"] == 40 and by_id["pt_7"]["structures"] == 1       # PTV70 on 10 of 40 slices
    assert by_id["DEMO001"]["structures"] == 7                                      # the demo's 7 ROIs
    assert sum(p["slices"] for p in got) == len(table["row"])


def test_table_has_one_line_per_patient(archive, capsys):
    assert main(["patients", "--archive", str(archive)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["patient", "slices", "range", "dose", "series", "source", "pseudonym", "structures"]
    assert lines[3].split() == ["pt_12", "40", "30-69", "0", "1", "openkbp", "no", "1"]
    assert lines[-1].startswith("4 patient(s)")
    assert len(lines) == 6


def test_pseudonymised_archive_says_so(demo_dir, tmp_path, capsys):
    key, arch = tmp_path / "key", tmp_path / "pseudo"
    assert main(["keygen", str(key)]) == 0
    assert main(["ingest", str(demo_dir), "--archive", str(arch), "--no-progress", "--pseudonymise", str(key)]) == 0
    capsys.readouterr()
    assert main(["patients", "--archive", str(arch), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert len(got) == 2
    for p in got:
        assert re.fullmatch(r"P[0-9a-f]{16}", p["patient_id"]) and p["pseudonymised"] is True
    assert main(["patients", "--archive", str(arch)]) == 0
    text = capsys.readouterr().out
    assert "DEMO00" not in text and text.splitlines()[1].split()[6] == "yes"


def test_empty_and_missing_archives(tmp_path, capsys):
    Archive(tmp_path / "empty", create=True).close()
    assert main(["patients", "--archive", str(tmp_path / "empty"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["patients", "--archive", str(tmp_path / "empty")]) == 0
    assert "no patients" in capsys.readouterr().out
    assert main(["patients", "--archive", str(tmp_path / "none")]) == 3
    assert "not a medhash archive" in capsys.readouterr().err


def test_patients_loads_no_heavy_module(archive):
    code = ("import sys, medhash.cli\n"
            f"rc = medhash.cli.main(['patients', '--archive', {str(archive)!r}])\n"
            "heavy = [m for m in ('torch', 'pydicom', 'fastapi', 'pynetdicom', 'matplotlib.pyplot', 'scipy.ndimage')"
            " if m in sys.modules]\n"
            "print('RESULT', rc, heavy)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.stdout.splitlines()[-1] == "RESULT 0 []", proc.stderr


def test_pseudonym_rule():
    from medhash.store.archive import _looks_pseudonymised
    assert _looks_pseudonymised("P0123456789abcdef")
    for pid in ("DEMO001", "P0123456789ABCDEF", "P0123456789abcde", "pt_7", "P0123456789abcdef0"):
        assert not _looks_pseudonymised(pid)


def test_a_series_recorded_as_pseudonymised_counts(demo_dir, tmp_path, capsys):
    """A series whose catalog info says ``pseudonymised`` marks its patient, whatever the id looks like."""
    import sqlite3
    arch = tmp_path / "a"
    assert main(["ingest", str(demo_dir / "DEMO002"), "--archive", str(arch), "--no-progress"]) == 0
    with sqlite3.connect(arch / "catalog.sqlite") as con:
        (info,) = con.execute("SELECT info FROM series").fetchone()
        con.execute("UPDATE series SET info = ?", (json.dumps({**json.loads(info), "pseudonymised": True}),))
    with Archive(arch, read_only=True) as a:
        assert [(p["patient_id"], p["pseudonymised"]) for p in a.patient_summaries()] == [("DEMO002", True)]
