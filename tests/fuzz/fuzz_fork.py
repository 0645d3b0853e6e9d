"""Child processes forked from a warm parent: one function run in a child as if it were a program.

Test helper (not a test file), used by :mod:`fuzz_harness` for ``benchmarks/fuzz.py``'s default child
mode: a fresh ``python -m medhash.cli`` costs seconds of imports per case, a fork of a parent that has
already imported medhash, pydicom and numpy costs milliseconds, and still gives what a child process
gives: a hang is killed at its timeout, a crash by a signal is seen as one, an abort cannot take the
parent with it.

:func:`start` forks a child that

* becomes the leader of its own process group (a timeout kills it and the workers it forked),
* disables :mod:`faulthandler` (off in a fresh interpreter) and sends its fds 1 and 2 (and new ``sys.stdout`` / ``sys.stderr`` over them) to two unnamed files,
* runs ``target()`` as the interpreter runs ``sys.exit(target())``: a returned or ``SystemExit`` code
  is the exit status (None 0, an int itself, anything else printed to stderr and 1); an uncaught
  exception prints its traceback to stderr, as the interpreter does, and exits 1,
* joins its non-daemon threads and runs the exit functions it registered itself (those of the parent
  are cleared first: the parent's temporary folders are not the child's to delete), and leaves with
  ``os._exit``.

:func:`finished` waits for some of the running children: an exit (status as ``subprocess`` gives it:
``-N`` when killed by signal ``N``) or, past its deadline, a ``SIGKILL`` to its process group.
Forking is refused while other Python threads run in the parent (a thread holding a lock at the
fork would leave it held in the child for ever); tqdm's monitor thread is stopped first.
"""
from __future__ import annotations

import atexit
import faulthandler
import os
import select
import signal
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Callable

ALONE = True
"""Refuse to fork while other Python threads run here (after stopping tqdm's monitor thread, which a
forked child starts again with its first bar, as a fresh process does). The tests of a whole session
turn it off: threads other tests left behind are idle."""
POLL_S = 0.05
"""s: how often exits are polled where there are no pidfds (not Linux); a deadline is met to this."""


@dataclass
class Child:
    """A forked child: its pid (= its process group), the files its stdout and stderr go to, its
    deadline (``time.monotonic()`` seconds) and timeout (s)."""

    pid: int
    out: object
    err: object
    deadline: float
    timeout_s: float
    pidfd: int | None = None


@dataclass
class Exit:
    """How a child ended: ``returncode`` (``-N``: killed by signal N; None: killed at its timeout,
    ``timed_out``) and what it wrote to stdout and stderr (UTF-8, undecodable bytes replaced)."""

    returncode: int | None
    out: str
    err: str
    timed_out: bool = False


def start(target: Callable[[], object], timeout_s: float) -> Child:
    """Fork a child that runs ``target()`` as a program (see the module docstring); returns at once.

    Raises
    ------
    RuntimeError : other Python threads are running in this process (and :data:`ALONE`).
    """
    _stop_tqdm_monitor()
    others = [t.name for t in threading.enumerate() if t is not threading.current_thread()]
    if others and ALONE:
        raise RuntimeError(f"will not fork while other threads run: {others}")
    out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        if stream is not None:
            stream.flush()   # else what is buffered here would be written again by the child
    pid = os.fork()
    if pid == 0:
        _child(target, out, err)   # never returns
    try:
        os.setpgid(pid, pid)       # here as well as in the child: a kill at once still finds the group
    except OSError:
        pass                       # the child did it first, or has ended already
    try:
        pidfd = os.pidfd_open(pid)  # readable when the child ends: waited for with select
    except (AttributeError, OSError):
        pidfd = None                # not Linux 5.3+: polled every POLL_S
    return Child(pid, out, err, time.monotonic() + timeout_s, timeout_s, pidfd)


def _stop_tqdm_monitor() -> None:
    tqdm = sys.modules.get("tqdm.std")
    monitor = getattr(getattr(tqdm, "tqdm", None), "monitor", None)
    if monitor is not None:
        monitor.exit()
        tqdm.tqdm.monitor = None


def _child(target: Callable[[], object], out, err) -> None:
    code = 1
    try:
        try:
            os.setpgid(0, 0)
        except OSError:
            pass
        atexit._clear()
        faulthandler.disable()     # as in a fresh interpreter (pytest enables it, writing to its own stderr)
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        sys.stdout = open(1, "w", encoding="utf-8", closefd=False)
        sys.stderr = open(2, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)
        code = _run(target)
    except BaseException:  # noqa: BLE001  (the set-up failed: said where the parent reads it)
        os.write(2, traceback.format_exc().encode())
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001  (leaving anyway)
                pass
        os._exit(code)


def _run(target: Callable[[], object]) -> int:
    """``sys.exit(target())`` as the interpreter runs it, with its shutdown; the exit status."""
    try:
        result = target()
    except SystemExit as exc:
        result = exc.code
    except BaseException:  # noqa: BLE001  (what the interpreter prints for an uncaught exception)
        traceback.print_exc()
        result = 1
    if result is not None and not isinstance(result, int):
        print(result, file=sys.stderr)
        result = 1
    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is not None:
        shutdown()                 # joins non-daemon threads: one that never ends is a hang, as in a program
    atexit._run_exitfuncs()
    return (result or 0) & 0xFF


def _reap(child: Child, status: int, timed_out: bool = False) -> Exit:
    code = None if timed_out else os.waitstatus_to_exitcode(status)
    texts = []
    for f in (child.out, child.err):
        f.seek(0)
        texts.append(f.read().decode("utf-8", "replace"))
        f.close()
    if child.pidfd is not None:
        os.close(child.pidfd)
    return Exit(code, texts[0], texts[1], timed_out)


def kill(child: Child) -> Exit:
    """Kill a running child with its process group (``SIGKILL``) and reap it: an :class:`Exit` timed out."""
    for send in (os.killpg, os.kill):    # the group; the child alone if it has no group yet
        try:
            send(child.pid, signal.SIGKILL)
            break
        except ProcessLookupError:
            continue
    _, status = os.waitpid(child.pid, 0)
    return _reap(child, status, timed_out=True)


def finished(children: list[Child]) -> list[tuple[Child, Exit]]:
    """Wait until at least one of ``children`` has ended or passed its deadline (then it is killed
    with its process group); those, with how they ended. Each child is reaped exactly once."""
    while True:
        done = []
        now = time.monotonic()
        for child in children:
            pid, status = os.waitpid(child.pid, os.WNOHANG)
            if pid:
                done.append((child, _reap(child, status)))
            elif now >= child.deadline:
                done.append((child, kill(child)))
        if done:
            return done
        wait_s = max(0.0, min(c.deadline for c in children) - time.monotonic())
        fds = [c.pidfd for c in children if c.pidfd is not None]
        if len(fds) == len(children):
            select.select(fds, [], [], wait_s)     # readable when the child has ended
        else:
            time.sleep(min(wait_s, POLL_S))


def run(target: Callable[[], object], timeout_s: float) -> Exit:
    """:func:`start` one child and wait for it."""
    child = start(target, timeout_s)
    return finished([child])[0][1]
