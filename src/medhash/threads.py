"""Thread policy: how many OpenMP / faiss / torch threads each call pattern uses, and how they wait.

Three call patterns, measured by ``benchmarks/search.py``, ``benchmarks/scale.py`` and
``benchmarks/threads.py``:

==========  ===========================  ==================================================================
pattern     faiss (OpenMP) threads       why
==========  ===========================  ==================================================================
``single``  1                            faiss parallelises a flat scan over queries, not over items: one
                                         query gains nothing from more threads and pays their start-up
``batch``   every core (:func:`cpu_count`)  one query per thread
``build``   every core                   IVF training (k-means) and adding codes are parallel loops
==========  ===========================  ==================================================================

**Wait policy.** OpenMP threads that finish a parallel loop spin (burn a core) for a while before
sleeping, waiting for the next loop. On a busy machine that spinning takes the cores the other
threads need: building an IVF index on 10^6 codes took 33-65 s on a busy 2-core machine and
1.5-1.8 s with ``OMP_WAIT_POLICY=PASSIVE`` (threads sleep at once). The OpenMP runtime reads the
variable once, when it starts (when faiss or torch is first imported), so this module sets it at
import, with :func:`os.environ.setdefault` (a value the user exported wins), and the package imports
this module before anything that loads faiss or torch.

faiss's thread count is an OpenMP setting of the calling thread: :func:`use_faiss_threads` sets it
only when it differs from what that thread last set (kept per thread, so the web app's worker
threads do not race on one value). Torch settings are scoped to one call by :func:`torch_settings`.
"""
from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from typing import Iterator

WAIT_POLICY = "PASSIVE"
"""OpenMP wait policy medhash asks for (``OMP_WAIT_POLICY``), unless the environment already sets one."""

os.environ.setdefault("OMP_WAIT_POLICY", WAIT_POLICY)  # before any OpenMP runtime starts (see the module docstring)

PATTERNS = ("single", "batch", "build")
"""Call patterns a thread count is chosen for."""

_local = threading.local()


def cpu_count() -> int:
    """Cores this process may use (its CPU affinity where the system has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def faiss_threads(pattern: str) -> int:
    """OpenMP threads for faiss in a call pattern: 1 for ``"single"``, every core otherwise."""
    if pattern not in PATTERNS:
        raise ValueError(f"call pattern must be one of {', '.join(PATTERNS)}, not {pattern!r}")
    return 1 if pattern == "single" else cpu_count()


def set_faiss_threads(n: int) -> int:
    """Make faiss calls of this thread use ``n`` OpenMP threads (at least 1); returns the count.

    Calls ``faiss.omp_set_num_threads`` only when ``n`` differs from what this thread set last (a
    no-op for repeated single queries). Code that chooses faiss threads must come here, never call
    faiss directly, so that the recorded count stays true.
    """
    n = max(1, int(n))
    if getattr(_local, "faiss_threads", None) != n:
        import faiss  # start-up: faiss only when an engine is built or searched

        faiss.omp_set_num_threads(n)
        _local.faiss_threads = n
    return n


def use_faiss_threads(pattern: str) -> int:
    """Make faiss calls of this thread use :func:`faiss_threads` (``pattern``) threads; returns the count."""
    return set_faiss_threads(faiss_threads(pattern))


def search_threads(n_queries: int) -> int:
    """:func:`use_faiss_threads` for a search of ``n_queries`` queries (one: ``single``, more: ``batch``)."""
    return use_faiss_threads("single" if n_queries <= 1 else "batch")


@contextmanager
def torch_settings(threads: int | None = None, deterministic: bool = True) -> Iterator[int]:
    """Use ``threads`` intra-op threads (default: ``os.cpu_count()``) and, when ``deterministic``,
    ``torch.use_deterministic_algorithms(True)``; restore both on exit. Yields the thread count.

    Nothing here runs at import: the settings hold for one call (training, encoding), then what the
    caller had is put back.
    """
    # start-up: torch is imported here, not at module top, because every medhash process imports
    # this module first (for the wait policy) and commands that need no model must not load torch
    import torch

    n = int(threads or os.cpu_count() or 1)
    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(n)
    if deterministic:
        torch.use_deterministic_algorithms(True)
    try:
        yield n
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det, warn_only=old_warn)
