"""The ``medhash`` command line: a thin shell over the Python API (no logic of its own).

:mod:`.main` assembles the parser from one module per sub-command (``ingest``, ``keygen``, ``info``,
``patients``, ``check``, ``demo``, ``train``, ``index``, ``search``, ``evaluate``, ``pull``, ``predict_dose``,
``listen``, ``export``, ``serve``), each with ``register(subparsers)`` and ``run(args) -> int``; :mod:`.options`
declares the options they share once. Exit codes come from :mod:`medhash.errors`.
"""
from __future__ import annotations

from .main import build_parser, main

__all__ = ["build_parser", "main"]
