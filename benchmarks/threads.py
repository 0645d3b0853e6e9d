"""OpenMP wait policy under load: medhash's engines with and without ``OMP_WAIT_POLICY=PASSIVE``.

:mod:`medhash.threads` sets ``OMP_WAIT_POLICY=PASSIVE`` (unless the environment sets a policy)
because idle OpenMP threads otherwise spin, taking the cores that other threads need on a busy
machine. This benchmark measures that choice for the three call patterns of the thread policy:

* ``build``: an IVF engine built on N random 256-bit codes (k-means training + adding), every core;
* ``batch``: one flat-engine search of 256 queries, k = 10, every core;
* ``single``: 200 single queries through :func:`medhash.retrieval.topk.hamming_topk`, one thread.

The policy is read once, when the OpenMP runtime starts, so each measurement runs in a child
process: ``default`` (no policy: the runtime's spin-then-sleep) imports faiss before medhash with
the variable removed, ``passive`` sets it. The two alternate within each repetition (interleaved,
so that a change of machine load hits both), idle and under load: load is one busy-loop process
per core, started by this script and bounded in time (each exits by itself after
``--load-seconds`` at most, and is stopped when its phase ends).

Reported: the median seconds of each (phase, pattern, policy) and the median over repetitions of
the ratio default / passive (> 1: passive is faster).

Run::

    python benchmarks/threads.py --n 200000 --reps 3
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import time

CHILD = r"""
import json, os, sys, time
policy, n = sys.argv[1], int(sys.argv[2])
if policy == "default":
    os.environ.pop("OMP_WAIT_POLICY", None)
    import faiss  # noqa: F401  (the OpenMP runtime starts here, with no policy; medhash cannot set one now)
else:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
import numpy as np
from medhash.retrieval.engines import FaissApproxEngine, FlatEngine, resolve_params
from medhash.retrieval.topk import hamming_topk
rng = np.random.default_rng(0)
codes = rng.integers(0, 256, size=(n, 32), dtype=np.uint8)
queries = rng.integers(0, 256, size=(256, 32), dtype=np.uint8)
keys = np.arange(n, dtype=np.int64)
out = {}
t = time.perf_counter()
FaissApproxEngine.create("ivf", resolve_params("ivf", None), codes, seed=0)
out["build"] = time.perf_counter() - t
flat = FlatEngine(codes, shards=1)
hamming_topk(flat, queries, 10, keys)                  # warm-up
t = time.perf_counter()
hamming_topk(flat, queries, 10, keys)
out["batch"] = time.perf_counter() - t
t = time.perf_counter()
for i in range(200):
    hamming_topk(flat, queries[i:i + 1], 10, keys)
out["single"] = time.perf_counter() - t
print(json.dumps(out))
"""

PATTERNS = ("build", "batch", "single")
POLICIES = ("default", "passive")


def _busy(deadline: float) -> None:
    """Spin until ``deadline`` (time.time()): one core's worth of load, bounded in time."""
    x = 0
    while time.time() < deadline:
        x += 1


class Load:
    """One busy-loop process per core while the ``with`` block runs (each gives up by itself after
    ``seconds`` at most)."""

    def __init__(self, cores: int, seconds: float) -> None:
        self.cores, self.seconds, self.procs = cores, seconds, []

    def __enter__(self) -> "Load":
        deadline = time.time() + self.seconds
        self.procs = [mp.Process(target=_busy, args=(deadline,), daemon=True) for _ in range(self.cores)]
        for p in self.procs:
            p.start()
        return self

    def __exit__(self, *exc) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.join()


def run_child(policy: str, n: int, timeout: float) -> dict:
    """One measurement in a fresh process (the wait policy is fixed when OpenMP starts)."""
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
    env["PYTHONPATH"] = os.path.abspath(src) + os.pathsep + env.get("PYTHONPATH", "")
    res = subprocess.run([sys.executable, "-c", CHILD, policy, str(n)], env=env, capture_output=True, text=True,
                         timeout=timeout)
    if res.returncode != 0:
        raise RuntimeError(f"child ({policy}) failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def measure(n: int, reps: int, load_seconds: float, phases: list[str]) -> dict:
    """times[phase][policy][pattern] = list of seconds, interleaved by repetition."""
    cores = os.cpu_count() or 1
    times = {ph: {po: {pa: [] for pa in PATTERNS} for po in POLICIES} for ph in phases}
    for phase in phases:
        for rep in range(reps):
            order = POLICIES if rep % 2 == 0 else POLICIES[::-1]        # neither policy always runs first
            for policy in order:
                if phase == "load":
                    with Load(cores, load_seconds):
                        r = run_child(policy, n, load_seconds)
                else:
                    r = run_child(policy, n, load_seconds)
                for pa in PATTERNS:
                    times[phase][policy][pa].append(r[pa])
                print(f"  {phase} rep {rep + 1} {policy:8s} " + "  ".join(f"{pa} {r[pa]:.3f} s" for pa in PATTERNS),
                      file=sys.stderr)
    return times


def table(times: dict, n: int) -> str:
    lines = [f"| phase | pattern | default (s) | passive (s) | default / passive |",
             "|---|---|---:|---:|---:|"]
    for phase, by_policy in times.items():
        for pa in PATTERNS:
            d, p = by_policy["default"][pa], by_policy["passive"][pa]
            ratio = statistics.median(a / b for a, b in zip(d, p))
            lines.append(f"| {phase} | {pa} | {statistics.median(d):.3f} | {statistics.median(p):.3f} | {ratio:.2f} |")
    lines.append(f"\nN = {n} codes of 256 bits, {len(next(iter(times.values()))['default']['build'])} repetitions, "
                 f"{os.cpu_count()} cores; build = IVF (nlist auto), batch = 256 queries, single = 200 queries, k = 10.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200_000, help="codes in the index (default 200000)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions per policy and phase (default 3)")
    ap.add_argument("--load-seconds", type=float, default=120.0,
                    help="bound on one loaded measurement: busy loops and the child stop by then (default 120)")
    ap.add_argument("--phases", default="idle,load", help="comma-separated: idle, load (default both)")
    ap.add_argument("--json", help="also write the raw times here")
    args = ap.parse_args(argv)
    phases = [p for p in args.phases.split(",") if p]
    times = measure(args.n, args.reps, args.load_seconds, phases)
    print(table(times, args.n))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"n": args.n, "times": times}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
