"""Ingest throughput: slices/s and peak memory for OpenKBP and DICOM ingest (a table on stdout).

    .venv/bin/python benchmarks/ingest.py                  # both, OpenKBP from ../shared if present
    .venv/bin/python benchmarks/ingest.py --openkbp DIR    # DIR/train-pats/pt_* already unpacked
    .venv/bin/python benchmarks/ingest.py --skip-openkbp --dicom-patients 6 --rows 512

Each ingest runs in a fresh child process (so peak RSS is its own); the time is that of the
``medhash.ingest`` call, not interpreter start-up. DICOM input is the demo cohort written at
``--rows`` (512 = a clinical CT matrix) before timing starts.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared"

CHILD = r"""
import json, resource, sys, time
from medhash import Archive, ingest
src, arch = sys.argv[1], sys.argv[2]
a = Archive(arch, create=True)
t = time.perf_counter()
rep = ingest(a, [src])
dt = time.perf_counter() - t
files = sum(1 for _ in __import__('pathlib').Path(src).rglob('*') if _.is_file())
print(json.dumps({"seconds": dt, "series": rep.series_added, "slices_stored": rep.slices_added,
                  "slices_read": rep.slices_added + rep.slices_skipped_no_body, "errors": len(rep.errors),
                  "files": files, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "worker_peak_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def run_child(src: Path, arch: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(src), str(arch)], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"ingest of {src} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--openkbp", type=Path, help="folder holding train-pats/pt_* (default: unpack ../shared)")
    ap.add_argument("--skip-openkbp", action="store_true")
    ap.add_argument("--dicom-patients", type=int, default=6)
    ap.add_argument("--rows", type=int, default=512, help="CT matrix of the DICOM demo series (default 512)")
    args = ap.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if not args.skip_openkbp:
            src = args.openkbp
            if src is None and (SHARED / "bin" / "unpack-openkbp").exists():
                subprocess.run([str(SHARED / "bin" / "unpack-openkbp"), str(tmp / "okbp")], check=True,
                               stdout=subprocess.DEVNULL)
                src = tmp / "okbp"
            if src is None:
                print("OpenKBP: skipped (no --openkbp and no ../shared)", file=sys.stderr)
            else:
                r = run_child(src / "train-pats" if (src / "train-pats").is_dir() else src, tmp / "arch-okbp")
                rows.append(("OpenKBP (sparse CSV)", r))
        # written in its own process: Linux keeps a process's peak RSS across fork + exec, so the
        # children must not be forked from a process that held the phantoms
        subprocess.run([sys.executable, "-c", "import sys; from medhash.demo import write_demo_cohort; "
                        "write_demo_cohort(sys.argv[1], n_patients=int(sys.argv[2]), rows=int(sys.argv[3]))",
                        str(tmp / "dicom"), str(args.dicom_patients), str(args.rows)], check=True)
        r = run_child(tmp / "dicom", tmp / "arch-dicom")
        rows.append((f"DICOM demo {args.rows}x{args.rows} (CT+RTDOSE+RTSTRUCT)", r))

    print(f"{'input':<44} {'series':>6} {'slices read':>11} {'stored':>7} {'seconds':>8} {'slices/s':>9} "
          f"{'peak RSS MiB':>12} {'worker peak':>11} {'errors':>6}")
    for name, r in rows:
        print(f"{name:<44} {r['series']:>6} {r['slices_read']:>11} {r['slices_stored']:>7} {r['seconds']:>8.1f} "
              f"{r['slices_read'] / r['seconds']:>9.0f} {r['peak_rss_mib']:>12.0f} {r['worker_peak_rss_mib']:>11.0f} "
              f"{r['errors']:>6}")


if __name__ == "__main__":
    main()
