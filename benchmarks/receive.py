"""Receive throughput: slices/s sent by dcmtk's storescu to `medhash listen`, and received + ingested,
beside the folder-ingest rate (`medhash ingest` of the same folder) measured in the same run.

    .venv/bin/python benchmarks/receive.py                       # 6 demo patients at 512 x 512
    .venv/bin/python benchmarks/receive.py --patients 2 --rows 256
    git worktree add /tmp/before HEAD~1 && .venv/bin/python benchmarks/receive.py --baseline-src /tmp/before/src

The listener runs in its own process (`medhash listen --quiet 0`), started before the clock (it is a
service waiting for senders); "received" is storescu's wall time, "received + ingested" runs until the
listener's log says the series are in the archive. `medhash ingest FOLDER` is timed as a user runs it,
its start-up included. The paths are run --repeat times, interleaved, and the median is printed with the
range: timings on a shared machine vary by 10-30 %. With --baseline-src, the listener of another checkout
(its src folder) is run as a third path, interleaved, and the run-by-run ratio to it is printed: the way
to measure a change to the listener. CPU seconds are those of every process of the path
(storescu's included), which tells what a machine with fewer or more cores can expect.
storescu runs with TCP_NODELAY=1 (without it dcmtk's Nagle delay costs about 40 ms a file).
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import socket
import statistics
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


def children_cpu() -> float:
    """CPU seconds of this process's finished children (and theirs)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def tree_cpu(pid: int) -> float:
    """CPU seconds of a running process and its running children (with the children they reaped)."""
    tick = os.sysconf("SC_CLK_TCK")
    kids = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    total = 0.0
    for p in [pid, *map(int, kids)]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(v) for v in fields[11:15]) / tick  # utime, stime, cutime, cstime
    return total


def folder_ingest(dicom: Path, archive: Path) -> tuple[float, float]:
    """(seconds, CPU seconds) of ``medhash ingest FOLDER`` as a user runs it (start-up included)."""
    t, c = time.perf_counter(), children_cpu()
    subprocess.run(MEDHASH + ["ingest", str(dicom), "--archive", str(archive), "--no-progress"],
                   check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t, children_cpu() - c


def receive(dicom: Path, archive: Path, src: str | None = None) -> tuple[float, float, float, str]:
    """(seconds storescu took, seconds until the listener logged the series ingested, CPU seconds of
    storescu and the listener's processes in that time, the log line).

    The listener is started (and its start-up excluded: it is a running service) before the clock;
    with ``src``, the medhash of that source folder is run (PYTHONPATH) instead of this one.
    """
    port = free_port()
    env = {**os.environ, "PYTHONPATH": src} if src else None
    proc = subprocess.Popen(MEDHASH + ["listen", "--archive", str(archive), "--port", str(port), "--quiet", "0"],
                            stderr=subprocess.PIPE, text=True, env=env)
    done = threading.Event()
    lines: list[str] = []

    def read() -> None:
        for line in proc.stderr:
            lines.append(line)
            if "series ingested" in line and "association" in line:
                done.set()
    threading.Thread(target=read, daemon=True).start()
    try:
        while not any("receiving DICOM" in ln for ln in lines):
            if proc.poll() is not None:
                sys.exit("medhash listen did not start:\n" + "".join(lines))
            time.sleep(0.05)
        cmd = [STORESCU, "-aet", "BENCH", "-aec", "MEDHASH", "127.0.0.1", str(port), "+sd", "+r", str(dicom)]
        time.sleep(0.5)  # the listener idle, as a service waiting for a sender
        cpu0, c = tree_cpu(proc.pid), children_cpu()
        t = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TCP_NODELAY": "1"})
        t_recv = time.perf_counter() - t
        cpu = children_cpu() - c
        if out.returncode != 0:
            sys.exit(f"storescu failed:\n{out.stderr}")
        if not done.wait(600):
            sys.exit("the listener did not ingest within 600 s:\n" + "".join(lines))
        t_total = time.perf_counter() - t
        cpu += tree_cpu(proc.pid) - cpu0
    finally:
        proc.terminate()
        proc.wait(60)
    line = next(ln for ln in lines if "series ingested" in ln).strip()
    return t_recv, t_total, cpu, line.split(": ", 1)[-1] if ": " in line else line


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patients", type=int, default=6)
    ap.add_argument("--rows", type=int, default=512, help="CT matrix of the demo series (default 512)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs of each path, interleaved; the median is reported (default 3)")
    ap.add_argument("--baseline-src", metavar="SRC",
                    help="the src folder of another medhash checkout: its listener runs too, interleaved")
    args = ap.parse_args()
    if STORESCU is None:
        sys.exit("storescu (dcmtk) is not installed")
    if args.baseline_src and not any((Path(args.baseline_src) / "medhash" / cli).is_file()
                                     for cli in ("cli.py", "cli/__init__.py")):
        sys.exit(f"--baseline-src {args.baseline_src}: no medhash CLI there (give a checkout's src folder)")
    runs: dict[str, list[float]] = {"ingest": [], "recv": [], "total": [], "cpu_ingest": [], "cpu_total": [],
                                    "base": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        subprocess.run([sys.executable, "-c", "import sys; from medhash.demo import write_demo_cohort; "
                        "write_demo_cohort(sys.argv[1], n_patients=int(sys.argv[2]), rows=int(sys.argv[3]))",
                        str(tmp / "dicom"), str(args.patients), str(args.rows)], check=True)
        files = sum(1 for _ in (tmp / "dicom").rglob("*.dcm"))
        ct_slices = sum(1 for _ in (tmp / "dicom").rglob("CT_*.dcm"))
        for i in range(args.repeat):
            t_ingest, cpu_ingest = folder_ingest(tmp / "dicom", tmp / f"a-ingest{i}")
            t_recv, t_total, cpu_total, listener = receive(tmp / "dicom", tmp / f"a-listen{i}")
            for key, value in (("ingest", t_ingest), ("cpu_ingest", cpu_ingest), ("recv", t_recv),
                               ("total", t_total), ("cpu_total", cpu_total)):
                runs[key].append(value)
            if args.baseline_src:
                runs["base"].append(receive(tmp / "dicom", tmp / f"a-base{i}", str(Path(args.baseline_src).resolve()))[1])
            for folder in tmp.glob(f"a-*{i}"):
                shutil.rmtree(folder)

    print(f"command: {' '.join(sys.argv)}")
    print(f"input: {args.patients} demo patients, {args.rows}x{args.rows}, {files} files ({ct_slices} CT slices); "
          f"{args.repeat} interleaved runs of each path, median (min-max)")
    print(f"listener: {listener}")
    print(f"{'path':<50} {'seconds':>18} {'CT slices/s':>12} {'CPU seconds':>12}")
    for name, key, cpu in (("medhash ingest FOLDER (folder ingest)", "ingest", "cpu_ingest"),
                           ("storescu -> medhash listen: received", "recv", None),
                           ("storescu -> medhash listen: received + ingested", "total", "cpu_total")):
        sec = statistics.median(runs[key])
        spread = f"{sec:.2f} ({min(runs[key]):.2f}-{max(runs[key]):.2f})"
        cpu_s = f"{statistics.median(runs[cpu]):.2f}" if cpu else ""
        print(f"{name:<50} {spread:>18} {ct_slices / sec:>12.0f} {cpu_s:>12}")
    ratio = statistics.median(runs["ingest"]) / statistics.median(runs["total"])
    paired = sorted(a / b for a, b in zip(runs["ingest"], runs["total"]))
    print(f"received + ingested / folder-ingest rate: {ratio:.2f} from the medians (target: at least 1.00); "
          f"run by run {paired[0]:.2f} to {paired[-1]:.2f}, median {statistics.median(paired):.2f}, "
          f"at least 1.00 in {sum(r >= 1.0 for r in paired)} of {len(paired)} runs")
    if runs["base"]:
        base = sorted(a / b for a, b in zip(runs["base"], runs["total"]))
        print(f"listener of {args.baseline_src}: received + ingested {statistics.median(runs['base']):.2f} s "
              f"({min(runs['base']):.2f}-{max(runs['base']):.2f}); this checkout is {statistics.median(base):.2f} "
              f"times as fast, run by run (range {base[0]:.2f} to {base[-1]:.2f})")
    print(f"CPU seconds: folder ingest {statistics.median(runs['cpu_ingest']):.2f} (its start-up included); "
          f"storescu + listener {statistics.median(runs['cpu_total']):.2f} (storescu, receiving, writing with "
          f"fsync, ingest) on {os.cpu_count()} CPU(s)")


if __name__ == "__main__":
    main()
