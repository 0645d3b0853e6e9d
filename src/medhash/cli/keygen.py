"""``medhash keygen``: create a pseudonymisation key file.

Write 32 random bytes to KEYFILE (mode 0600) for `medhash ingest --pseudonymise KEYFILE`. An
existing file is never overwritten. Keep the key safe: the same key gives the same pseudonyms on
every run.

example: medhash keygen ./medhash.key && medhash ingest demo-data --archive ./archive --pseudonymise ./medhash.key
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import EXIT_OK
from .options import add_command


def register(sub) -> None:
    p = add_command(sub, "keygen", run, __doc__)
    p.add_argument("keyfile", metavar="KEYFILE", type=Path, help="key file to create")


def run(args: argparse.Namespace) -> int:
    """Write the key file (never over an existing one)."""
    from ..ingest.pseudonymise import make_key  # start-up: pydicom only when pseudonymising

    path = make_key(args.keyfile)
    print(f"wrote a new pseudonymisation key to {path} (mode 0600); keep it safe and private: the same key "
          "gives the same pseudonyms, and without it new data cannot be linked to what is archived")
    return EXIT_OK
