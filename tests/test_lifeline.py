"""Worker processes die with their parent (issue 17 point 6): after ``kill -9`` of an ingest (or of the
listener), no worker goes on reading, orphaned.

Each case runs a parent in a subprocess whose workers block for ever inside their job (so they are
surely mid-job, whatever the machine's speed) and print their pids; the test kills the parent with
SIGKILL and polls, up to a generous deadline, until every worker is gone. A control without
:func:`die_with_parent` shows that such a worker would otherwise live on.
"""
from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medhash.lifeline import expected_parent

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

DEADLINE_S = 300.0
"""Generous upper bound for a start-up or an exit; the tests poll and never wait for it unless failing."""

BLOCK = r"""
import os, sys, threading
def blocked(*args):
    os.write(1, f"WORKER {os.getpid()}\n".encode())   # one write: lines of two workers never interleave
    threading.Event().wait()        # for ever: the worker is mid-job when its parent is killed
"""

INGEST = BLOCK + r"""
import medhash.io.dicom.reader as reader
from medhash.cli import main
reader.read_series_job = blocked    # the forked workers inherit it
os.cpu_count = lambda: 4            # a pool even on a one-core machine
main(["ingest", sys.argv[1], "--archive", sys.argv[2], "--no-progress"])
"""

POOL = BLOCK + r"""
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from medhash import lifeline
if sys.argv[1] == "watchdog":
    lifeline._set_pdeathsig = lambda: False     # as on a system without prctl
init = None if sys.argv[1] == "none" else lifeline.die_with_parent
pool = ProcessPoolExecutor(2, multiprocessing.get_context("fork"), initializer=init)
for f in [pool.submit(blocked) for _ in range(2)]:
    f.result()
"""

LISTENER = BLOCK + r"""
import time
from medhash import Archive
from medhash.net import workers
pool = workers.IngestProcesses(Archive(sys.argv[1], create=True), sys.argv[1])
assert pool.start() == workers.INGEST_PROCESSES
jobs = [pool._pool.submit(time.sleep, 86400) for _ in range(workers.INGEST_PROCESSES)]  # a job that blocks
for pid in pool._pool._processes:
    os.write(1, f"WORKER {pid}\n".encode())
threading.Event().wait()
"""


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, dead but not yet reaped by its new parent, counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def start(script: str, *args: str, workers: int = 2) -> tuple[subprocess.Popen, list[int]]:
    """Run ``script`` and read the pids of its ``workers`` blocked workers (poll up to the deadline)."""
    proc = subprocess.Popen([sys.executable, "-c", script, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=dict(os.environ))
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    pids: list[int] = []
    text = b""
    end = time.monotonic() + DEADLINE_S
    while len(pids) < workers and time.monotonic() < end and proc.poll() is None:
        if sel.select(timeout=1.0):
            text += os.read(proc.stdout.fileno(), 65536)      # unbuffered: select sees what is left
            pids = [int(line.split()[1]) for line in text.decode().split("\n")[:-1]
                    if line.startswith("WORKER ")]
    sel.close()
    if len(pids) < workers:
        proc.kill()
        err = proc.communicate()[1][-2000:].decode(errors="replace")
        pytest.fail(f"the workers did not start (read {text!r}): {err}")
    assert all(alive(p) for p in pids) and proc.pid not in pids
    return proc, pids


def kill_and_wait(proc: subprocess.Popen, pids: list[int]) -> list[int]:
    """SIGKILL the parent; the pids still alive once all are gone or the deadline passed (then killed)."""
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    end = time.monotonic() + DEADLINE_S
    while any(alive(p) for p in pids) and time.monotonic() < end:
        time.sleep(0.1)   # polling interval only: the deadline is what bounds the wait
    left = [p for p in pids if alive(p)]
    for p in left:        # a failing test leaves no process behind
        os.kill(p, signal.SIGKILL)
    return left


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    from medhash.cli import main
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--out", str(out), "--patients", "2"]) == 0
    return out


def test_ingest_workers_die_with_a_killed_ingest(demo_dir, tmp_path):
    proc, pids = start(INGEST, demo_dir, tmp_path / "arch")
    assert kill_and_wait(proc, pids) == []


@pytest.mark.parametrize("how", ["pdeathsig", "watchdog"])
def test_pool_workers_die_with_their_parent(how):
    proc, pids = start(POOL, how)
    assert kill_and_wait(proc, pids) == []


def test_without_the_lifeline_workers_live_on():
    """The control: the same pool without the initializer leaves its workers running."""
    proc, pids = start(POOL, "none")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    try:
        assert all(alive(p) for p in pids)   # blocked for ever: they cannot have ended on their own
    finally:
        for p in pids:
            os.kill(p, signal.SIGKILL)


def test_listener_ingest_processes_die_with_the_listener(tmp_path):
    from medhash.net.workers import INGEST_PROCESSES
    proc, pids = start(LISTENER, tmp_path / "arch", workers=INGEST_PROCESSES)
    assert kill_and_wait(proc, pids) == []


def test_a_parent_already_gone_kills_at_once():
    code = "from medhash.lifeline import die_with_parent\ndie_with_parent(1)\nprint('alive')\n"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == -signal.SIGKILL and "alive" not in res.stdout


def test_the_expected_parent_is_the_real_one():
    assert expected_parent() == os.getppid()          # no multiprocessing parent here: getppid
    code = ("import os\nfrom medhash.lifeline import die_with_parent\n"
            "print(die_with_parent(), die_with_parent(os.getppid()))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.split() == ["pdeathsig", "pdeathsig"], res.stderr
