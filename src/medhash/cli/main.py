"""The ``medhash`` parser, assembled from one module per sub-command, and :func:`main`, which runs
a command and turns its exceptions into messages and exit codes (:func:`medhash.errors.exit_code_of`).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from ..version import __version__
from ..errors import EXIT_OK, ArchiveError, MedhashError, NotFoundError, exit_code_of
from . import (check, demo, evaluate, export, fit_dose_model, index, info, ingest, keygen, listen, patients,
               predict_dose, pull, search, serve, train)
from .options import EPILOG, error_text

COMMANDS = (ingest, keygen, info, patients, check, demo, train, index, search, evaluate, pull, fit_dose_model,
            predict_dose, listen, export, serve)
"""The sub-command modules, in the order ``medhash --help`` lists them; each has ``register(sub)``
and ``run(args) -> int``."""


def build_parser() -> argparse.ArgumentParser:
    """The ``medhash`` argument parser; each sub-command's parser sets ``func``, its ``run``."""
    parser = argparse.ArgumentParser(
        prog="medhash",
        description="Content-based image retrieval for radiotherapy: find earlier patients' CT slices "
                    "(and their dose) that look like a new one.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"medhash {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``medhash ARGV`` and return its exit status.

    Exit codes (also in the README): 0 success; 1 some inputs could not be used (each reported, the
    rest done); 2 bad command line; 3 archive problem (missing, locked, damaged); 4 no usable input.
    An error is printed as ``error: MESSAGE (option --FLAG)``; with ``--verbose`` an error that is
    not about the archive or a missing object is raised with its traceback instead.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (MedhashError, ValueError) as exc:
        if args.verbose and not isinstance(exc, (ArchiveError, NotFoundError)):
            raise
        print(f"error: {error_text(exc)}", file=sys.stderr)
        return exit_code_of(exc)
    except BrokenPipeError:  # `medhash info --json | head`: the reader left, not an error of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        print("interrupted: the archive keeps every series completed so far", file=sys.stderr)
        return 130
