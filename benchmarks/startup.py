"""Start-up wall time of the `medhash` command (a table on stdout).

Builds a small demo archive (3 patients, one-epoch models, a 256-bit CT index) in a temporary folder,
then times, interleaved round by round: `python -c pass` (the interpreter alone), `python -c "import
medhash"`, `medhash info`, and `medhash search` of an archive slice. Medians and ranges of --repeat runs.
With ``--baseline-src DIR`` (the ``src`` folder of another checkout, e.g. a ``git worktree`` of an older
commit) the same commands run from that code too, interleaved, for a before/after table.

    .venv/bin/python benchmarks/startup.py --repeat 11
    git worktree add /tmp/before 0e81699 && .venv/bin/python benchmarks/startup.py --baseline-src /tmp/before/src
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def build(root: Path) -> Path:
    from medhash import Archive
    from medhash.demo import write_demo_cohort
    from medhash.features import train_model
    from medhash.ingest import ingest
    from medhash.retrieval import build_index
    write_demo_cohort(root / "demo", n_patients=3, rows=128)
    with Archive(root / "arch", create=True) as arch:
        ingest(arch, [root / "demo"], progress=False)
        train_model(arch, "ct", "shallow", epochs=1, latent_dim=32, seed=0, progress=False)
        build_index(arch, "ct256", "ct", 256, seed=0)
    return root / "arch"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=11, help="runs of each command (default 11)")
    ap.add_argument("--baseline-src", type=Path, help="also run the commands from this checkout's src folder")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        arch = build(Path(tmp))
        py = [sys.executable]
        cmds = {"python -c pass": py + ["-c", "pass"],
                "import medhash": py + ["-c", "import medhash"],
                "medhash info": py + ["-m", "medhash.cli", "info", "--archive", str(arch)],
                "medhash search ARCHIVE_SLICE": py + ["-m", "medhash.cli", "search", "--archive", str(arch),
                                                      "DEMO001:30", "--index", "ct256", "--k", "5", "--json"]}
        here = str(Path(__file__).resolve().parents[1] / "src")
        sources = {"this checkout": here} | ({"baseline": str(args.baseline_src.resolve())} if args.baseline_src else {})
        times: dict[tuple[str, str], list[float]] = {(s, k): [] for s in sources for k in cmds}
        for _ in range(args.repeat):
            for (src_name, name), ts in times.items():
                env = dict(os.environ, PYTHONPATH=sources[src_name])
                t0 = time.perf_counter()
                subprocess.run(cmds[name], check=True, stdout=subprocess.DEVNULL, env=env)
                ts.append(time.perf_counter() - t0)
    print(f"| code | command | median s | range s |  (n = {args.repeat} each, interleaved)")
    print("|---|---|---|---|")
    for (src_name, name), ts in times.items():
        print(f"| {src_name} | `{name}` | {statistics.median(ts):.2f} | {min(ts):.2f}-{max(ts):.2f} |")


if __name__ == "__main__":
    main()
