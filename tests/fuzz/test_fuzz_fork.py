"""The forked children of ``benchmarks/fuzz.py`` (:mod:`fuzz_fork`): a crash by a signal is classified
``signal``, a child that never ends is killed at its timeout with the workers it forked and
classified ``hang``, an uncaught exception is a ``traceback``, exit codes and output come back as a
program's would, and ``medhash ingest`` run in a forked child gives its JSON report and exit code.
"""
from __future__ import annotations

import os
import resource
import select
import signal
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import fuzz_fork as F  # noqa: E402  (tests/fuzz/fuzz_fork.py)
import fuzz_harness as H  # noqa: E402

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")


@pytest.fixture(autouse=True)
def _threads_of_other_tests_allowed(monkeypatch):
    """Other tests of the session may leave idle threads behind (benchmarks/fuzz.py forks alone)."""
    monkeypatch.setattr(F, "ALONE", False)


def _segfault() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))   # no core file
    print("about to crash", file=sys.stderr)
    os.kill(os.getpid(), signal.SIGSEGV)


def test_a_child_killed_by_a_signal_is_classified_signal():
    end = F.run(_segfault, timeout_s=120)
    assert (end.returncode, end.timed_out) == (-signal.SIGSEGV, False)
    run = H.classify(end.returncode, end.out, end.err, 120)
    assert (run.status, run.exit_code) == ("signal", -11)
    assert run.symptom.startswith(f"killed by signal {int(signal.SIGSEGV)}; ")
    assert "about to crash" in end.err


def test_a_child_that_never_ends_is_killed_at_its_timeout_with_its_workers():
    """The child forks a worker that holds the write end of a pipe and blocks for ever, then blocks
    itself: at the 2 s timeout both are killed (the pipe reaches end of file: no writer is left)."""
    r, w = os.pipe()

    def block_for_ever() -> None:
        if os.fork() == 0:          # the worker, in the child's process group
            os.close(r)
            signal.pause()
            os._exit(0)
        os.close(w)
        signal.pause()

    end = F.run(block_for_ever, timeout_s=2)
    os.close(w)
    assert (end.returncode, end.timed_out) == (None, True)
    assert H.classify(end.returncode, end.out, end.err, 2) == H.Run("hang", None, symptom="no exit after 2 s")
    readable, _, _ = select.select([r], [], [], 120)   # a bound for a loaded machine, not the condition tested
    assert readable and os.read(r, 1) == b"", "the worker outlived the killed child"
    os.close(r)


def test_exit_codes_output_and_tracebacks_are_a_programs():
    def fail() -> None:
        raise TypeError("'NoneType' object is not iterable")
    end = F.run(fail, timeout_s=120)
    assert end.returncode == 1 and end.out == ""
    assert end.err.startswith("Traceback (most recent call last)")
    assert end.err.rstrip().endswith("TypeError: 'NoneType' object is not iterable")
    run = H.classify(end.returncode, end.out, end.err, 120)
    assert (run.status, run.symptom) == ("traceback", "TypeError: 'NoneType' object is not iterable")

    def report() -> int:
        print('{"errors": [{"path": "/x/CT_1.dcm", "message": "truncated"}], "warnings": []}')
        return 1
    end = F.run(report, timeout_s=120)
    assert H.classify(end.returncode, end.out, end.err, 120) == H.Run("ok", 1, [("error", "/x/CT_1.dcm", "truncated")])
    assert F.run(lambda: sys.exit(2), 120).returncode == 2
    assert F.run(lambda: None, 120).returncode == 0
    end = F.run(lambda: sys.exit("error: the archive is locked"), 120)
    assert (end.returncode, end.err) == (1, "error: the archive is locked\n")
    run = H.classify(end.returncode, end.out, end.err, 120)
    assert (run.status, run.symptom) == ("abort", "error: the archive is locked")


def test_no_fork_while_another_thread_runs(monkeypatch):
    monkeypatch.setattr(F, "ALONE", True)
    stop = threading.Event()
    t = threading.Thread(target=stop.wait, name="busy")
    t.start()
    try:
        with pytest.raises(RuntimeError, match=r"will not fork while other threads run: \['busy'\]"):
            F.start(lambda: 0, 120)
    finally:
        stop.set()
        t.join()


def test_medhash_ingest_in_a_forked_child(tmp_path):
    """A folder with no DICOM: the JSON report and exit code 4 (nothing usable); a bad option: the
    argparse message and exit code 2, with no report (an abort)."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not DICOM")
    H.preload()
    run = H.ingest_forked([tmp_path / "empty"], tmp_path / "archive", 120)
    assert (run.status, run.exit_code) == ("ok", 4)
    argv = ["ingest", str(tmp_path / "empty"), "--archive", str(tmp_path / "a2"), "--no-such-option"]
    end = F.run(H._cli_in_child(argv), 120)
    assert end.returncode == 2 and end.out == ""
    run = H.classify(end.returncode, end.out, end.err, 120)
    assert run.status == "abort" and run.symptom == "medhash: error: unrecognized arguments: --no-such-option"
