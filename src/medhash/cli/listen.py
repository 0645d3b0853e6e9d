"""``medhash listen``: receive DICOM from a planning system or PACS (storage SCP) into an archive.

A DICOM storage SCP for CT Image, RT Dose, RT Structure Set and RT Plan storage (other SOP classes
are refused; C-ECHO answered). Each file is written to ARCHIVE/spool before it is acknowledged; once
the association has ended and nothing new arrived for --quiet seconds, the spool is ingested like
`medhash ingest` (RT Plans are accepted but not stored). A killed listener loses nothing
acknowledged: the spool is ingested after the next start, once --quiet seconds passed without a new
file, so that a study the kill cut short is completed by the sender's resend. One log line per
association.

examples:
  medhash listen --archive ./archive --port 11112
  TCP_NODELAY=1 storescu -aet PLANNING -aec MEDHASH 127.0.0.1 11112 +sd +r /data/export
  medhash listen --archive ./archive --host 0.0.0.0 --allow-ae PLANNING PACS --pseudonymise ./medhash.key
"""
from __future__ import annotations

import argparse
import logging
import sys

from ..errors import EXIT_OK, EXIT_PARTIAL, MedhashError
from .options import add_archive, add_command, add_listen_address, add_pseudonymise


def register(sub) -> None:
    p = add_command(sub, "listen", run, __doc__)
    add_archive(p, "archive directory (created if missing or empty)")
    p.add_argument("--ae-title", default="MEDHASH", help="this listener's AE title (default MEDHASH)")
    add_listen_address(p, 11112)
    p.add_argument("--allow-ae", nargs="+", metavar="AE", default=None,
                   help="accept associations only from these calling AE titles (default: any)")
    add_pseudonymise(p, "pseudonymise every received file before it is spooled (see `medhash keygen`)")
    p.add_argument("--quiet", type=float, default=5.0, metavar="SECONDS",
                   help="a study is ingested as soon as the sender has moved on to other studies (16 files); "
                        "studies still open when an association ends are ingested once no file arrived for this "
                        "long (default 5)")


def _log_to_stderr(verbose: bool) -> None:
    """One timestamped line per association on stderr (all of medhash's log with ``--verbose``)."""
    net_log = logging.getLogger("medhash.net")
    if not verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        net_log.addHandler(handler)
        net_log.propagate = False
    net_log.setLevel(logging.INFO)


def run(args: argparse.Namespace) -> int:
    """Receive until Ctrl-C; exit 1 when any file or series failed."""
    from ..net import Listener  # start-up: pynetdicom only when listening

    if args.quiet < 0:
        raise MedhashError(f"--quiet must be 0 or more seconds, not {args.quiet}")
    _log_to_stderr(args.verbose)
    listener = Listener(args.archive, ae_title=args.ae_title, host=args.host, port=args.port,
                        allow_ae=args.allow_ae, pseudonymise=args.pseudonymise, quiet_s=args.quiet)
    listener.start()
    listener.serve_forever(ready=lambda: print(
        f"medhash: receiving DICOM as {listener.ae_title} on {args.host}:{listener.port} into {args.archive} "
        f"(CT, RTDOSE, RTSTRUCT, RTPLAN; ingest {args.quiet:g} s after a transfer ends); Ctrl-C stops",
        file=sys.stderr, flush=True))
    s = listener.stats
    print(f"stopped: {s['associations']} association(s), {s['files']} file(s) received, {s['series_ingested']} "
          f"series ingested ({s['slices_ingested']} slices), {s['errors']} error(s)", file=sys.stderr)
    return EXIT_PARTIAL if s["errors"] else EXIT_OK
