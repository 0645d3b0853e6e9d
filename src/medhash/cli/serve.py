"""``medhash serve``: run the web app and REST API for an archive.

Serve the search page and the REST API (GET /api/health, /api/indexes, /api/patients,
/api/slices/PATIENT/SLICE.png; POST /api/search) for one archive, opened read-only. Bound to
127.0.0.1 unless --host says otherwise; give a token for use beyond localhost.

examples:
  medhash serve --archive demo-archive            # then open http://127.0.0.1:8000/
  MEDHASH_TOKEN=s3cret medhash serve --archive ./archive --host 0.0.0.0 --port 8080
"""
from __future__ import annotations

import argparse
import errno
import os
import socket
import sys

from ..errors import EXIT_OK, AddressInUseError, MedhashError
from .options import add_archive, add_command, add_listen_address

def register(sub) -> None:
    p = add_command(sub, "serve", run, __doc__)
    add_archive(p, "archive directory (never modified)")
    add_listen_address(p, 8000)
    p.add_argument("--token", help="require 'Authorization: Bearer TOKEN' on the API (default: $MEDHASH_TOKEN; "
                                   "none: no token)")
    p.add_argument("--max-upload-mb", type=float, default=64, metavar="MIB",
                   help="largest request body accepted, MiB (default 64); larger uploads get 413")


def run(args: argparse.Namespace) -> int:
    """Serve until Ctrl-C (uvicorn)."""
    import uvicorn  # start-up: the web stack only when serving

    from ..web import TOKEN_ENV, create_app  # start-up: fastapi only when serving

    token = args.token or os.environ.get(TOKEN_ENV) or None
    if args.max_upload_mb <= 0:
        raise MedhashError(f"--max-upload-mb must be positive, not {args.max_upload_mb}")
    app = create_app(args.archive, token=token, max_upload=int(args.max_upload_mb * 2 ** 20))
    if args.host not in ("127.0.0.1", "localhost", "::1") and token is None:
        print(f"warning: serving on {args.host} without a token: anyone who can reach this port can search the "
              f"archive; use --token or ${TOKEN_ENV}", file=sys.stderr)
    sock = bind(args.host, args.port)      # before saying "serving": a taken port is an error of its own
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"medhash: serving {args.archive} at http://{host}:{args.port}/ (API schema: /api/openapi.json"
          f"{', token required' if token else ''}); Ctrl-C stops", file=sys.stderr)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning" if not args.verbose else "info")
    uvicorn.Server(config).run(sockets=[sock])
    return EXIT_OK


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port), for uvicorn to listen on; AddressInUseError (exit 5) when another
    program holds the port, MedhashError for any other failure (an unknown host, a port below 1024)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise AddressInUseError(f"cannot serve on {host}:{port}: the port is in use (another program, or another "
                                    "medhash serve); choose another port", param="port") from None
        raise MedhashError(f"cannot serve on {host}:{port}: {exc.strerror or exc}", param="port") from None
    return sock
