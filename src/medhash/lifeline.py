"""Worker processes that die with their parent.

A worker process (the ingest readers of :mod:`medhash.io.dicom.reader`, the listener's ingest
processes of :mod:`medhash.net.workers`) calls :func:`die_with_parent` first, as the initializer of
its pool: when the parent is killed (``kill -9``, the OOM killer), the worker is killed too instead
of reading on, orphaned, for as long as its job takes.

On Linux the kernel does it: ``prctl(PR_SET_PDEATHSIG, SIGKILL)``; the parent may have died between
the fork and that call, so the parent's pid is then compared once with the expected one. Elsewhere a
daemon thread polls ``os.getppid()`` every :data:`POLL_S` seconds.

A leaf module: it imports nothing of medhash.
"""
from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading

PR_SET_PDEATHSIG = 1
"""The ``prctl`` option (``<linux/prctl.h>``): the signal a process gets when its parent thread exits."""
POLL_S = 0.5
"""Where the kernel cannot do it: how often (s) the watchdog thread checks that the parent lives."""


def expected_parent() -> int:
    """The pid of the process that started this one: the multiprocessing parent where there is one
    (known from before this process ran, so a parent that has already died is noticed), else
    ``os.getppid()``."""
    parent = multiprocessing.parent_process()
    return parent.pid if parent is not None and parent.pid else os.getppid()


def _kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL) if hasattr(signal, "SIGKILL") else os._exit(1)


def _set_pdeathsig() -> bool:
    """Ask the Linux kernel for SIGKILL when the parent exits; False where that is not possible."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch(parent_pid: int, poll_s: float) -> None:
    stop = threading.Event()
    while not stop.wait(poll_s):
        if os.getppid() != parent_pid:
            _kill_self()


def die_with_parent(parent_pid: int | None = None, *, poll_s: float = POLL_S) -> str:
    """Make this process die when its parent does; call it first thing in a worker process.

    Parameters
    ----------
    parent_pid : the pid the parent had when it started this process (default
        :func:`expected_parent`). A process whose parent already differs is killed at once.
    poll_s : s, the watchdog's polling interval where the kernel cannot signal us.

    Returns
    -------
    ``"pdeathsig"`` (Linux: the kernel kills us) or ``"watchdog"`` (a daemon thread polls).
    """
    parent = expected_parent() if parent_pid is None else int(parent_pid)
    how = "pdeathsig" if _set_pdeathsig() else "watchdog"
    if os.getppid() != parent:      # the parent died before the kernel was asked to tell us
        _kill_self()
    if how == "watchdog":
        threading.Thread(target=_watch, args=(parent, poll_s), name="medhash-lifeline", daemon=True).start()
    return how
