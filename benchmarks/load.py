"""Load test of `medhash serve`: N concurrent clients for a bounded time against 127.0.0.1.

    .venv/bin/python benchmarks/load.py --archive demo-archive --index ct256 --clients 8 --seconds 30
    .venv/bin/python benchmarks/load.py                      # a small demo archive built in a temp dir

The server runs as it does for a user: ``medhash serve`` in a subprocess (one uvicorn worker), bound
to 127.0.0.1 on a free port. Each client is a thread with its own keep-alive ``http.client``
connection and does what the search page does, over and over until the time is up:

1. ``POST /api/search`` with a JSON body naming a random archive slice (every other round), or a
   multipart upload of a random archive slice's CT as a 128 x 128 NPY in HU (the other rounds), then
2. ``GET /api/slices/P/S.png`` for each of the k results (the result pictures; the server caches
   pictures it drew before, as a browser session would hit them again).

Random choices come from ``--seed`` (client i uses seed + i). A request is an error when the status
is not 200 or the connection fails; the run expects 0. The table (stdout) gives, per request kind and
in total: requests, requests/s, p50 and p95 latency in ms, errors.
"""
from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import platform
import shlex
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_demo_archive(folder: Path) -> Path:
    """3 demo patients (96 rows), a shallow CT model (1 epoch) and the 256-bit CT index ``ct256``."""
    from medhash import Archive
    from medhash.ingest import ingest
    from medhash.demo import write_demo_cohort
    from medhash.features import train_model
    from medhash.retrieval import build_index

    write_demo_cohort(folder / "demo", n_patients=3, rows=96)
    with Archive(folder / "arch", create=True) as arch:
        ingest(arch, [folder / "demo"])
        train_model(arch, "ct", "shallow", epochs=1, latent_dim=32, seed=0, progress=False)
        build_index(arch, "ct256", "ct", 256, seed=0)
    return folder / "arch"


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    out = io.BytesIO()
    for k, v in fields.items():
        out.write(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n".encode())
    for k, (name, data) in files.items():
        out.write(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"; filename=\"{name}\"\r\n"
                  "Content-Type: application/octet-stream\r\n\r\n".encode())
        out.write(data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


class Client(threading.Thread):
    def __init__(self, port: int, slices: list[tuple[str, int]], npys: dict, index: str | None, k: int,
                 stop_at: float, seed: int, rounds: int | None = None) -> None:
        super().__init__(daemon=True)
        self.port, self.slices, self.npys, self.index, self.k, self.stop_at = port, slices, npys, index, k, stop_at
        self.rng = np.random.default_rng(seed)
        self.rounds = rounds
        self.records: list[tuple[str, float, bool]] = []   # (kind, seconds, ok)
        self.conn = None

    def request(self, kind: str, method: str, path: str, body: bytes | None = None, ctype: str | None = None):
        t0 = time.perf_counter()
        ok, data = False, b""
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            headers = {"Content-Type": ctype} if ctype else {}
            self.conn.request(method, path, body=body, headers=headers)
            resp = self.conn.getresponse()
            data = resp.read()
            ok = resp.status == 200
        except (OSError, http.client.HTTPException):
            self.conn = None
        self.records.append((kind, time.perf_counter() - t0, ok))
        return data if ok else None

    def run(self) -> None:
        n = 0
        while time.perf_counter() < self.stop_at and (self.rounds is None or n < self.rounds):
            pid, s = self.slices[self.rng.integers(len(self.slices))]
            settings = {"k": self.k, **({"index": self.index} if self.index else {})}
            if n % 2 == 0:
                body = json.dumps({"patient_id": pid, "slice_index": int(s), **settings}).encode()
                data = self.request("search, archive slice (JSON)", "POST", "/api/search", body, "application/json")
            else:
                body, ctype = multipart({k: str(v) for k, v in settings.items()}, {"file": ("q.npy", self.npys[(pid, s)])})
                data = self.request("search, NPY upload (multipart)", "POST", "/api/search", body, ctype)
            n += 1
            if data is None:
                continue
            for r in json.loads(data)["results"]:
                if time.perf_counter() >= self.stop_at:
                    break
                self.request("result picture (PNG)", "GET", f"/api/slices/{r['patient_id']}/{r['slice_index']}.png")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--archive", type=Path, help="archive to serve (default: build a small demo archive in a temp dir)")
    ap.add_argument("--index", help="index name (default: the archive's only index)")
    ap.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    ap.add_argument("--seconds", type=float, default=20, help="how long the clients run (default 20)")
    ap.add_argument("--k", type=int, default=10, help="results per search (default 10)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from medhash import Archive

    tmp = None
    archive = args.archive
    if archive is None:
        tmp = tempfile.TemporaryDirectory(prefix="medhash-load-")
        print("building a demo archive ...", file=sys.stderr)
        archive = build_demo_archive(Path(tmp.name))
    with Archive(archive, read_only=True) as arch:
        table = arch.table()
        slices = list(zip(table["patient_id"].astype(str), table["slice_index"].astype(int)))
        rng = np.random.default_rng(args.seed)
        chosen = [slices[i] for i in rng.choice(len(slices), size=min(len(slices), 64), replace=False)]
        npys = {}
        for pid, s in chosen:
            buf = io.BytesIO()
            np.save(buf, arch.get(pid, s).ct)
            npys[(pid, s)] = buf.getvalue()

    port = free_port()
    server = None
    try:
        server = start_server(archive, port)
        # warm-up, not counted: one search of each kind (first encode) and its pictures
        warm = Client(port, chosen, npys, args.index, args.k, time.perf_counter() + 60, args.seed + 10_000, rounds=2)
        warm.run()
        if not any(ok for _, _, ok in warm.records):
            raise SystemExit("warm-up requests failed: check --index")
        stop_at = time.perf_counter() + args.seconds
        clients = [Client(port, chosen, npys, args.index, args.k, stop_at, args.seed + i) for i in range(args.clients)]
        t0 = time.perf_counter()
        for c in clients:
            c.start()
        for c in clients:
            c.join()
        elapsed = time.perf_counter() - t0
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
        if tmp is not None:
            tmp.cleanup()

    return report(args, archive, slices, [r for c in clients for r in c.records], elapsed)


def start_server(archive: Path, port: int) -> subprocess.Popen:
    """``medhash serve`` on ``port``, once it answers ``/api/health`` (within 60 s)."""
    cmd = [sys.executable, "-m", "medhash.cli", "serve", "--archive", str(archive), "--port", str(port)]
    server = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while True:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/api/health")
            if c.getresponse().status == 200:
                return server
        except OSError:
            pass
        if server.poll() is not None or time.time() > deadline:
            print(server.stderr.read(), file=sys.stderr)
            server.kill()
            raise SystemExit("the server did not start")
        time.sleep(0.2)


def report(args, archive: Path, slices: list, records: list, elapsed: float) -> int:
    """Print the table of request kinds; 0 when every request succeeded."""
    kinds = sorted({k for k, _, _ in records}, key=lambda k: (k.startswith("result"), k))
    print(f"# {args.clients} clients for {args.seconds:g} s against 127.0.0.1 (medhash serve, 1 uvicorn worker); "
          f"archive {Path(archive).name} ({len(slices)} slices), k {args.k}; {os.cpu_count()} CPU cores, "
          f"Python {platform.python_version()}")
    print(f"# command: python {' '.join(shlex.quote(a) for a in sys.argv)}")
    print()
    print("| requests | count | requests/s | p50 ms | p95 ms | errors |")
    print("|---|---|---|---|---|---|")
    for kind in kinds + ["all"]:
        rows = [r for r in records if kind == "all" or r[0] == kind]
        lat = np.array([t for _, t, _ in rows]) * 1e3
        errors = sum(1 for *_, ok in rows if not ok)
        name = f"**{kind}**" if kind == "all" else kind
        print(f"| {name} | {len(rows)} | {len(rows) / elapsed:.1f} | {np.percentile(lat, 50):.1f} | "
              f"{np.percentile(lat, 95):.1f} | {errors} |")
    return 0 if all(ok for *_, ok in records) else 1


if __name__ == "__main__":
    sys.exit(main())
