import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from medhash import Archive, ArchiveError, NotFoundError
from medhash.ingest import ingest
from medhash.store import CATALOG

from conftest import make_openkbp_patient


def test_ingest_get_and_idempotent_reingest(openkbp_root, tmp_path):
    root, pts = openkbp_root
    arch = Archive(tmp_path / "arch", create=True)
    r1 = ingest(arch, [root])
    assert r1.series_added == 2 and r1.slices_added == 80 and r1.exit_code == 0
    s = arch.get("pt_7", 55)
    assert s.ct.shape == (128, 128) and s.ct.dtype == np.float32
    assert set(np.unique(s.ct).tolist()) == {-1024.0, 40.0, 1000.0}
    assert s.structures == ["PTV70"] and s.possible_dose_mask is not None and s.has_dose
    assert s.to_dict()["patient_id"] == "pt_7"
    size_before = {p.name: p.stat().st_size for p in (tmp_path / "arch" / "arrays").iterdir()}
    r2 = ingest(arch, [root])
    assert r2.series_added == 0 and r2.series_existing == 2 and r2.exit_code == 0
    assert len(arch) == 80
    assert {p.name: p.stat().st_size for p in (tmp_path / "arch" / "arrays").iterdir()} == size_before
    # reopen from disk: the same content
    again = Archive(tmp_path / "arch")
    np.testing.assert_array_equal(again.get("pt_12", 40).ct, arch.get("pt_12", 40).ct)
    assert again.patients() == ["pt_12", "pt_7"]
    t = again.table()
    assert len(t["row"]) == 80 and set(t["patient_id"]) == {"pt_7", "pt_12"}


def test_not_found_messages(openkbp_root, tmp_path):
    root, _ = openkbp_root
    arch = Archive(tmp_path / "arch", create=True)
    ingest(arch, [root])
    with pytest.raises(NotFoundError, match=r"slice_index 40 to 79"):
        arch.get("pt_7", 3)
    with pytest.raises(NotFoundError, match="'pt_99' is not in the archive"):
        arch.slices("pt_99")
    with pytest.raises(IndexError):
        arch[10_000]


def test_not_an_archive_and_locked(tmp_path):
    with pytest.raises(ArchiveError, match="not a medhash archive"):
        Archive(tmp_path / "nothing")
    arch = Archive(tmp_path / "arch", create=True)
    import fcntl
    fd = os.open(tmp_path / "arch" / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        make_openkbp_patient(tmp_path / "src", "pt_1")
        with pytest.raises(ArchiveError, match="another medhash process is writing"):
            ingest(arch, [tmp_path / "src"])
    finally:
        os.close(fd)


def test_lock_wait_waits_for_the_other_writer(tmp_path):
    """With lock_wait_s, a write waits for another process's write to end instead of failing."""
    import fcntl
    import threading
    make_openkbp_patient(tmp_path / "src", "pt_1")
    arch = Archive(tmp_path / "arch", create=True, lock_wait_s=0.05)
    fd = os.open(tmp_path / "arch" / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        t = time.monotonic()
        with pytest.raises(ArchiveError, match="another medhash process is writing"):
            ingest(arch, [tmp_path / "src"])
        assert time.monotonic() - t >= 0.05  # it waited before giving up
        arch.lock_wait_s = 30.0
        threading.Timer(0.3, os.close, (fd,)).start()  # the other writer ends 0.3 s from now
        t = time.monotonic()
        report = ingest(arch, [tmp_path / "src"])
        assert report.series_added == 1 and time.monotonic() - t >= 0.25
    finally:
        try:
            os.close(fd)
        except OSError:
            pass


def test_failure_between_arrays_and_catalog_leaves_the_archive_as_it_was(openkbp_root, tmp_path, monkeypatch):
    root, _ = openkbp_root
    arch = Archive(tmp_path / "arch", create=True)
    make_openkbp_patient(tmp_path / "first", "pt_1")
    ingest(arch, [tmp_path / "first"])
    before = arch.info()
    ct_before = np.array(arch.ct)

    # the arrays of the next series are written, then the process "dies" before the catalog commit
    original = arch._append
    calls = []

    def append_then_die(name, data):
        original(name, data)
        calls.append(name)
        if name == "masks":
            raise KeyboardInterrupt("killed")
    monkeypatch.setattr(arch, "_append", append_then_die)
    with pytest.raises(KeyboardInterrupt):
        ingest(arch, [root])
    assert calls[:2] == ["ct", "dose"]  # array bytes really were appended past the committed end
    reopened = Archive(tmp_path / "arch")
    after = reopened.info()
    for key in ("patients", "series", "slices", "slices_with_dose", "structures"):
        assert after[key] == before[key]
    np.testing.assert_array_equal(np.array(reopened.ct), ct_before)
    # the next ingest cuts the leftovers off and ends equal to an uninterrupted run
    monkeypatch.undo()
    ingest(reopened, [root])
    clean = Archive(tmp_path / "clean", create=True)
    ingest(clean, [tmp_path / "first"])
    ingest(clean, [root])
    assert reopened.info()["slices"] == clean.info()["slices"] == 120
    np.testing.assert_array_equal(np.array(reopened.ct), np.array(clean.ct))
    np.testing.assert_array_equal(np.array(reopened.dose), np.array(clean.dose))
    for (pid, idx) in [("pt_7", 50), ("pt_12", 35)]:
        a, b = reopened.get(pid, idx), clean.get(pid, idx)
        assert a.structures == b.structures
        np.testing.assert_array_equal(a.masks["PTV70"], b.masks["PTV70"]) if "PTV70" in a.masks else None


def test_killed_ingest_process_leaves_a_loadable_archive(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for n in range(8):
        make_openkbp_patient(src, f"pt_{n + 1}", body_slices=range(10, 118))
    archive = tmp_path / "arch"
    cmd = [sys.executable, "-m", "medhash.cli", "ingest", str(src), "--archive", str(archive), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # wait until at least one series is committed, then kill hard (a generous ceiling: polling ends
    # as soon as a series is in, and a loaded machine must not fail the test)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with Archive(archive, read_only=True) as a:
                if a.info()["series"] >= 1:
                    break
        except ArchiveError:
            pass
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    arch = Archive(archive)
    info = arch.info()
    assert info["series"] >= 1
    assert info["slices"] == 108 * info["series"]          # whole series only
    assert np.array(arch.ct).shape == (info["slices"], 128, 128)
    for pid in arch.patients():
        assert len(arch.slices(pid)) == 108
    # finishing the job gives everything, once
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert Archive(archive).info()["slices"] == 8 * 108


def test_info_counts_and_json_keys(openkbp_root, tmp_path):
    root, _ = openkbp_root
    arch = Archive(tmp_path / "arch", create=True)
    ingest(arch, [root])
    info = arch.info()
    assert isinstance(info["patients"], int) and info["patients"] == 2
    assert info["slices"] == 80 and info["slices_with_dose"] == 80
    assert info["structures"] == {"PTV70": 20}
    assert info["skipped"]["no_body"] == 2 * 128 - 80
    assert info["size_bytes"] > 80 * 128 * 128 * 6
    json.dumps(info)
