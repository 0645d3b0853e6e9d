"""Torch runtime settings used inside training and encoding, restored afterwards.

Nothing here runs at import: :func:`torch_settings` is a context manager that sets the number of
intra-op threads and deterministic algorithms for the duration of one call, then puts back what
the caller had.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

import torch


@contextmanager
def torch_settings(threads: int | None = None, deterministic: bool = True) -> Iterator[int]:
    """Use ``threads`` intra-op threads (default: ``os.cpu_count()``) and, when ``deterministic``,
    ``torch.use_deterministic_algorithms(True)``; restore both on exit. Yields the thread count."""
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
