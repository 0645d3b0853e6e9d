"""Receive throughput: slices/s sent by dcmtk's storescu to `medhash listen`, and received + ingested,
beside the folder-ingest rate (`medhash ingest` of the same folder) measured in the same run.

    .venv/bin/python benchmarks/receive.py                       # 6 demo patients at 512 x 512
    .venv/bin/python benchmarks/receive.py --patients 2 --rows 256

The listener runs in its own process (`medhash listen --quiet 0`); "received" is storescu's wall
time, "received + ingested" runs until the listener's log says the series are in the archive.
storescu runs with TCP_NODELAY=1 (without it dcmtk's Nagle delay costs about 40 ms a file).
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

MEDHASH = [sys.executable, "-m", "medhash.cli"]
STORESCU = "/usr/bin/storescu" if os.path.exists("/usr/bin/storescu") else shutil.which("storescu")  # not pynetdicom's


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patients", type=int, default=6)
    ap.add_argument("--rows", type=int, default=512, help="CT matrix of the demo series (default 512)")
    args = ap.parse_args()
    if STORESCU is None:
        sys.exit("storescu (dcmtk) is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        subprocess.run([sys.executable, "-c", "import sys; from medhash.demo import write_demo_cohort; "
                        "write_demo_cohort(sys.argv[1], n_patients=int(sys.argv[2]), rows=int(sys.argv[3]))",
                        str(tmp / "dicom"), str(args.patients), str(args.rows)], check=True)
        files = sum(1 for _ in (tmp / "dicom").rglob("*.dcm"))
        ct_slices = sum(1 for _ in (tmp / "dicom").rglob("CT_*.dcm"))

        t = time.perf_counter()
        subprocess.run(MEDHASH + ["ingest", str(tmp / "dicom"), "--archive", str(tmp / "a-ingest"), "--no-progress"],
                       check=True, stdout=subprocess.DEVNULL)
        t_ingest = time.perf_counter() - t

        port = free_port()
        proc = subprocess.Popen(MEDHASH + ["listen", "--archive", str(tmp / "a-listen"), "--port", str(port),
                                           "--quiet", "0"], stderr=subprocess.PIPE, text=True)
        done = threading.Event()
        lines: list[str] = []

        def read() -> None:
            for line in proc.stderr:
                lines.append(line)
                if "series ingested" in line and "association" in line:
                    done.set()
        threading.Thread(target=read, daemon=True).start()
        while not any("receiving DICOM" in ln for ln in lines):
            time.sleep(0.05)
        cmd = [STORESCU, "-aet", "BENCH", "-aec", "MEDHASH", "127.0.0.1", str(port), "+sd", "+r", str(tmp / "dicom")]
        t = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TCP_NODELAY": "1"})
        t_recv = time.perf_counter() - t
        if out.returncode != 0:
            sys.exit(f"storescu failed:\n{out.stderr}")
        done.wait(600)
        t_total = time.perf_counter() - t
        proc.terminate()
        proc.wait(60)
        ingested = next(ln for ln in lines if "series ingested" in ln).strip()

    print(f"command: {' '.join(sys.argv)}")
    print(f"input: {args.patients} demo patients, {args.rows}x{args.rows}, {files} files ({ct_slices} CT slices)")
    print(f"listener: {ingested.split(': ', 1)[-1] if ': ' in ingested else ingested}")
    print(f"{'path':<52} {'seconds':>8} {'CT slices/s':>11}")
    for name, sec in (("medhash ingest FOLDER (folder ingest)", t_ingest),
                      ("storescu -> medhash listen: received", t_recv),
                      ("storescu -> medhash listen: received + ingested", t_total)):
        print(f"{name:<52} {sec:>8.1f} {ct_slices / sec:>11.0f}")


if __name__ == "__main__":
    main()
