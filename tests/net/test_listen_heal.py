"""The listener after a kill (issue 17, point 4): a study the killed run received only in part waits in
the spool for the quiet period, so that the sender's resend completes it; a resend that comes after the
part was ingested still completes the series. Either way the archive ends as `medhash ingest` of the
whole cohort gives, byte for byte."""
from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from medhash import Archive
from medhash.ingest import ingest
from medhash.net import Listener

sys.path.insert(0, str(Path(__file__).parents[1]))
sys.path.insert(0, str(Path(__file__).parent))
from archives import assert_same_archive  # noqa: E402
from test_listen import DEADLINE_S, cohort, pytestmark, storescu  # noqa: E402,F401  (fixture and skip mark)


def left_by_a_killed_run(arch: Path, cohort: Path, drop: tuple[int, ...] = ()) -> Path:
    """A spool folder as a listener killed mid-transfer leaves it: the first 25 CT slices of DEMO002
    (without the slices at positions ``drop``), no RTDOSE, no RTSTRUCT."""
    Archive(arch, create=True).close()
    folder = arch / "spool" / "20260101T000000-1-1.2"
    folder.mkdir(parents=True)
    for k, f in enumerate(sorted((cohort / "DEMO002").glob("CT_*.dcm"))[:25]):
        if k not in drop:
            shutil.copy(f, folder / f.name)
    return folder


def reference(cohort: Path, tmp_path: Path) -> Archive:
    ref = Archive(tmp_path / "reference", create=True)
    ingest(ref, [cohort])
    return ref


def test_cut_study_waits_for_the_resend_and_is_ingested_with_it(cohort, tmp_path, caplog):
    arch = tmp_path / "arch"
    left_by_a_killed_run(arch, cohort)
    with caplog.at_level("INFO", logger="medhash.net.listen"):
        with Listener(arch, port=0, quiet_s=600) as listener:
            out = storescu(listener.port, cohort)      # the sender sends the whole folder again
            assert out.returncode == 0, out.stderr
        # leaving the block stops the listener, which ingests everything spooled
    assert "left by an earlier run; ingested after 600 s without a new file" in caplog.text
    with Archive(arch, read_only=True) as got:
        assert_same_archive(reference(cohort, tmp_path), got)
        # the part and the resend were ingested together: no series was stored in part, then completed
        assert got.info()["superseded_slices"] == 0 and got.incomplete_series() == []
    assert not list((arch / "spool").glob("*/*.dcm"))


def test_a_later_resend_completes_a_series_ingested_in_part(cohort, tmp_path):
    arch = tmp_path / "arch"
    folder = left_by_a_killed_run(arch, cohort, drop=(12,))
    with Listener(arch, port=0, quiet_s=0.1) as listener:
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline and folder.exists():   # the part ingested after the quiet period
            time.sleep(0.1)
        with Archive(arch, read_only=True) as got:
            (inc,) = got.incomplete_series()
            assert (inc["patient_id"], inc["present"], inc["expected"]) == ("DEMO002", 24, 25)
        out = storescu(listener.port, cohort)
        assert out.returncode == 0, out.stderr
    with Archive(arch, read_only=True) as got:
        assert got.incomplete_series() == [] and got.info()["superseded_slices"] == 24
        assert_same_archive(reference(cohort, tmp_path), got)
