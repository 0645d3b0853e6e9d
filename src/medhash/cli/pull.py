"""``medhash pull``: fetch a patient or study from a PACS (DIMSE or DICOMweb) and ingest it.

Query a PACS for a patient's studies (or one study) and retrieve them into a temporary folder that
is then ingested (as `medhash ingest`). DIMSE (--pacs): C-FIND, then C-MOVE to a storage SCP that
medhash runs during the pull with AE title --aet on --move-port (the PACS must know that AE title
with this host and port), falling back to C-GET when the PACS refuses the C-MOVE; --get uses C-GET
only (nothing to configure on the PACS). DICOMweb (--dicomweb): QIDO-RS, then WADO-RS per series.
What failed is listed; what arrived is ingested. Details: docs/pacs-pull.md.

examples:
  medhash pull --archive ./archive --pacs 127.0.0.1:4242 --aec ORTHANC --aet MEDHASH --patient DEMO001
  medhash pull --archive ./archive --pacs pacs.example.org:104 --aec PACS --get --study 1.2.840.113619.2.55.3
  medhash pull --archive ./archive --dicomweb http://127.0.0.1:8042/dicom-web --patient DEMO001 --pseudonymise ./medhash.key
"""
from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import sys
from pathlib import Path

from ..errors import EXIT_NO_INPUT, MedhashError
from ..store import Archive
from .options import (MAX_LISTED, add_archive, add_command, add_json, add_no_progress, add_pseudonymise,
                      print_ingested, print_problems)


def register(sub) -> None:
    p = add_command(sub, "pull", run, __doc__)
    add_archive(p, "archive directory (created if missing)")
    p.add_argument("--pacs", metavar="HOST:PORT", help="DIMSE: the PACS's host and DICOM port")
    p.add_argument("--aec", metavar="AE", help="DIMSE: the PACS's AE title (called AE)")
    p.add_argument("--aet", metavar="AE", default="MEDHASH",
                   help="DIMSE: medhash's AE title, calling AE and C-MOVE destination (default MEDHASH)")
    p.add_argument("--move-port", type=int, default=None, metavar="PORT",
                   help="DIMSE: port of medhash's temporary storage SCP for C-MOVE (default 11113); the PACS "
                        "must know --aet at this host and port")
    p.add_argument("--get", action="store_true", help="DIMSE: retrieve by C-GET only (no PACS configuration needed)")
    p.add_argument("--no-get-fallback", action="store_true",
                   help="DIMSE: C-MOVE only; do not retry a refused C-MOVE by C-GET")
    p.add_argument("--dicomweb", metavar="URL", help="DICOMweb root, e.g. http://127.0.0.1:8042/dicom-web")
    p.add_argument("--dicomweb-user", metavar="USER",
                   help="DICOMweb: HTTP basic authentication as USER; the password is read from "
                        "$MEDHASH_DICOMWEB_PASSWORD, else asked for on the terminal (never on the command line)")
    p.add_argument("--dicomweb-token-file", metavar="FILE", type=Path,
                   help="DICOMweb: send 'Authorization: Bearer TOKEN' with the token read from FILE (default: "
                        "$MEDHASH_DICOMWEB_TOKEN when set)")
    p.add_argument("--patient", metavar="ID", help="PatientID to pull (all its studies)")
    p.add_argument("--study", metavar="UID", help="StudyInstanceUID to pull")
    p.add_argument("--timeout", type=float, default=60, metavar="S",
                   help="network timeout in seconds (default 60)")
    add_pseudonymise(p, "pseudonymise on the way in with this key, as `medhash ingest --pseudonymise`")
    add_json(p, "print the report as JSON")
    add_no_progress(p)


def host_port(text: str) -> tuple[str, int]:
    """``"pacs.example.org:4242"`` -> ``("pacs.example.org", 4242)``; ``[::1]:104`` -> ``("::1", 104)``."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise MedhashError(f"--pacs must be HOST:PORT (e.g. pacs.example.org:4242), not {text!r}")
    return host.strip("[]"), int(port)


def dicomweb_auth(args: argparse.Namespace) -> dict:
    """The Authorization header of ``medhash pull --dicomweb`` from --dicomweb-user / --dicomweb-token-file
    or the environment; credentials are never taken from the command line itself."""
    from ..net import dicomweb_headers  # start-up: the network code only when pulling

    token = None
    if args.dicomweb_token_file is not None:
        try:
            token = args.dicomweb_token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise MedhashError(f"cannot read the DICOMweb token file {args.dicomweb_token_file}: "
                               f"{exc.strerror or exc}") from None
    elif os.environ.get("MEDHASH_DICOMWEB_TOKEN") and args.dicomweb_user is None:
        token = os.environ["MEDHASH_DICOMWEB_TOKEN"]
    password = None
    if args.dicomweb_user is not None:
        password = os.environ.get("MEDHASH_DICOMWEB_PASSWORD")
        if password is None:
            if not sys.stdin.isatty():
                raise MedhashError(f"no password for DICOMweb user {args.dicomweb_user!r}: set "
                                   "$MEDHASH_DICOMWEB_PASSWORD (there is no terminal to ask on)")
            password = getpass.getpass(f"DICOMweb password for {args.dicomweb_user}: ")
    return dicomweb_headers(args.dicomweb_user, password, token)


def _check(args: argparse.Namespace) -> None:
    """The combinations of options that make sense (one source, one patient or study)."""
    if (args.pacs is None) == (args.dicomweb is None):
        raise MedhashError("give --pacs HOST:PORT (DIMSE) or --dicomweb URL, one of them")
    if (args.patient is None) == (args.study is None):
        raise MedhashError("give --patient ID or --study UID, one of them")


def _pull(args: argparse.Namespace, archive):
    """The pull report of DIMSE (``--pacs``) or DICOMweb (``--dicomweb``)."""
    from ..net import pull_dicomweb, pull_dimse  # start-up: pynetdicom only when pulling

    if args.pacs is not None:
        if args.dicomweb_user is not None or args.dicomweb_token_file is not None:
            raise MedhashError("--dicomweb-user and --dicomweb-token-file apply to --dicomweb, not to --pacs")
        if not args.aec:
            raise MedhashError("--pacs needs --aec, the PACS's AE title (e.g. ORTHANC)")
        host, port = host_port(args.pacs)
        return pull_dimse(archive, host, port, args.aec, args.aet, patient=args.patient, study=args.study,
                          move_port=args.move_port, progress=not args.no_progress, pseudonymise=args.pseudonymise,
                          method="get" if args.get else ("move" if args.no_get_fallback else "auto"),
                          timeout=args.timeout)
    if args.aec or args.get:
        raise MedhashError("--aec and --get apply to --pacs, not to --dicomweb")
    return pull_dicomweb(archive, args.dicomweb, patient=args.patient, study=args.study,
                         progress=not args.no_progress, pseudonymise=args.pseudonymise, timeout=args.timeout,
                         headers=dicomweb_auth(args))


def run(args: argparse.Namespace) -> int:
    """Pull, ingest what arrived, and report what failed; the exit code is the pull report's."""
    if not args.verbose:  # pynetdicom logs every refused connection as ERROR; our message says it once
        logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
    _check(args)
    # an existing archive is checked before the network is asked; a new one is created only when data arrived
    archive = Archive(args.archive, create=True) if args.archive.exists() else args.archive
    report = _pull(args, archive)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return report.exit_code
    what = f"patient {args.patient}" if args.patient is not None else f"study {args.study}"
    if not report.studies:
        print(f"nothing found on {report.source} for {what}: nothing was ingested", file=sys.stderr)
        return report.exit_code
    for f in report.failed[:MAX_LISTED]:
        print(f"error: {f['what']}: {f['reason']}", file=sys.stderr)
    if len(report.failed) > MAX_LISTED:
        print(f"error: ... and {len(report.failed) - MAX_LISTED} more (use --json for the full list)", file=sys.stderr)
    print(f"pulled {what} from {report.source} by {report.method}: {len(report.studies)} study(ies) found, "
          f"{report.files_received} file(s) received, {len(report.failed)} failed")
    rep = report.ingest
    if rep is None:
        print("nothing arrived: nothing was ingested", file=sys.stderr)
        return report.exit_code
    print_problems(rep.problems)
    print_ingested(rep, archive if isinstance(archive, Archive) else Archive(args.archive))
    if report.exit_code == EXIT_NO_INPUT:
        print("nothing was ingested: no usable DICOM CT series arrived", file=sys.stderr)
    return report.exit_code
