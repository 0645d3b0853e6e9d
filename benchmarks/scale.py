"""Scale: flat / ivf / hnsw engines on 10^5 .. 10^7 synthetic 256-bit codes (a table on stdout).

    .venv/bin/python benchmarks/scale.py                                   # 10^5, 10^6, 10^7
    .venv/bin/python benchmarks/scale.py --sizes 100000,1000000 --hnsw-max 1000000 --queries 200 --seed 0

Codes have a clustered structure like real codes, not uniform noise: 1,000 random centre codes; an
item is a centre with each bit flipped with probability 1/8 (the AND of three random bits), so an
item's true neighbours are members of its own cluster at about 56 bits, while other clusters lie
near 128. Queries are drawn the same way (not in the database).

For each size and engine (medhash's :mod:`medhash.retrieval.engines.faiss_engines`, searched through
`medhash.retrieval.topk.hamming_topk` exactly as ``Index.search`` does): build time, memory (RSS growth
of this process), single-query p50 / p95 latency (one query at a time, 1 OpenMP thread a shard),
batch queries/s (all queries in one call, every core), load time (what opening an index costs: the
codes file memory-mapped and copied into the shards for flat, the engine file read for ivf / hnsw)
and recall@10 against the exact top-10 (an
answer counts when its distance is within the exact 10th distance, so ties do not matter). The flat
engine is compared with faiss ``IndexBinaryFlat.search`` called directly in the same run (default
threads and 1 thread), and with the memory-bandwidth bound measured in the same run (bytes scanned
/ read bandwidth of numpy summing a 1 GiB array with 1 and 2 threads). A paper projection for 10^8
and 10^9 codes follows, with its arithmetic. HNSW is built up to ``--hnsw-max`` codes only: its build
time grows faster than the others' (measured per code and extrapolated in the output).
"""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

T0 = time.perf_counter()
N_BITS, N_BYTES, K = 256, 32, 10


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def clustered(n: int, centres: np.ndarray, rng: np.random.Generator, chunk: int = 1_000_000) -> np.ndarray:
    """(n, 32) uint8: a random centre per item, each bit flipped with probability 1/8."""
    out = np.empty((n, N_BYTES), dtype=np.uint8)
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        flip = rng.integers(0, 256, (m, N_BYTES), dtype=np.uint8)
        flip &= rng.integers(0, 256, (m, N_BYTES), dtype=np.uint8)
        flip &= rng.integers(0, 256, (m, N_BYTES), dtype=np.uint8)
        out[s:s + m] = centres[rng.integers(0, len(centres), m)] ^ flip
    return out


def single_latencies(fn, queries: np.ndarray, warmup: int = 3) -> np.ndarray:
    for i in range(min(warmup, len(queries))):
        fn(queries[i:i + 1])
    ts = np.empty(len(queries))
    for i in range(len(queries)):
        t = time.perf_counter()
        fn(queries[i:i + 1])
        ts[i] = time.perf_counter() - t
    return ts * 1e3


def interleaved(fns: dict, queries: np.ndarray, passes: int = 2, warmup: int = 3) -> dict[str, np.ndarray]:
    """Latencies (ms) of several functions on the same queries, called in turn query by query (so that
    drift of the machine hits all alike); ``passes`` rounds over the queries."""
    for i in range(min(warmup, len(queries))):
        for fn in fns.values():
            fn(queries[i:i + 1])
    out = {name: [] for name in fns}
    for _ in range(passes):
        for i in range(len(queries)):
            for name, fn in fns.items():
                t = time.perf_counter()
                fn(queries[i:i + 1])
                out[name].append(time.perf_counter() - t)
    return {name: np.asarray(v) * 1e3 for name, v in out.items()}


def recall_at_k(D_approx: np.ndarray, D_exact: np.ndarray) -> float:
    """Share of the k answers whose distance is within the exact k-th distance (ties do not count)."""
    kth = D_exact[:, -1:]
    ok = (D_approx >= 0) & (D_approx <= kth)
    return float(ok.sum() / D_exact.size)


def read_bandwidth(threads: int, gib: float = 1.0) -> float:
    """Bytes/s of numpy summing a ``gib`` GiB uint64 array split over ``threads`` threads (best of 3)."""
    a = np.ones(int(gib * (1 << 30)) // 8, dtype=np.uint64)
    parts = np.array_split(a, threads)
    best = np.inf
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(3):
            t = time.perf_counter()
            list(pool.map(np.sum, parts))
            best = min(best, time.perf_counter() - t)
    return a.nbytes / best


def fmt(x: float, nd: int = 3) -> str:
    return f"{x:.{nd}f}" if x < 100 else f"{x:,.0f}"


def table(headers, rows) -> str:
    cells = [list(map(str, headers))] + [list(map(str, r)) for r in rows]
    w = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "  ".join(c.ljust(w[i]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(r))  # noqa: E731
    return "\n".join([line(cells[0]), "  ".join("-" * x for x in w)] + [line(r) for r in cells[1:]])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000,1000000,10000000", help="numbers of codes (comma-separated)")
    ap.add_argument("--types", default="flat,ivf,hnsw", help="engines (comma-separated)")
    ap.add_argument("--hnsw-max", type=int, default=1_000_000, help="largest size HNSW is built for")
    ap.add_argument("--queries", type=int, default=200, help="single queries timed per engine (default 200)")
    ap.add_argument("--batch", type=int, default=1000, help="queries in the batch measurement (default 1000)")
    ap.add_argument("--nprobe", type=int, default=None, help="ivf nprobe (default: medhash's default)")
    ap.add_argument("--ef-search", type=int, default=None, help="hnsw ef_search (default: medhash's default)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import faiss

    from medhash.threads import cpu_count

    sizes = [int(s) for s in args.sizes.split(",")]
    types = args.types.split(",")
    cores = cpu_count()
    print(f"command: {' '.join(shlex.quote(a) for a in sys.argv)}")
    print(f"machine: {platform.processor() or platform.machine()}, {cores} cores, python {platform.python_version()}, "
          f"faiss {faiss.__version__}, numpy {np.__version__}")
    log("memory bandwidth")
    bw1, bwn = read_bandwidth(1), read_bandwidth(cores)
    print(f"read bandwidth (numpy sum of 1 GiB): {bw1 / 1e9:.1f} GB/s on 1 thread, {bwn / 1e9:.1f} GB/s on {cores}")
    rng = np.random.default_rng(args.seed)
    centres = rng.integers(0, 256, (1000, N_BYTES), dtype=np.uint8)
    Q = clustered(max(args.queries, args.batch), centres, np.random.default_rng([args.seed, 1]))
    Qs, Qb = Q[:args.queries], Q[:args.batch]
    rows, flat_rows, build_rate = [], [], {}
    for n in sizes:
        codes = clustered(n, centres, np.random.default_rng([args.seed, 2, n]))
        keys = np.arange(n, dtype=np.int64)
        flat, D_exact = measure_flat(args, n, codes, keys, Qs, Qb, bw1, bwn, cores, rows, flat_rows)
        for kind in [t for t in types if t != "flat"]:
            measure_approx(args, kind, n, codes, keys, Qs, Qb, D_exact, build_rate, rows)
        del flat, codes
    print()
    print(f"Engines, {N_BITS}-bit clustered codes, k = {K}; single queries: {args.queries}, batch: {args.batch} "
          f"queries in one call")
    print(table(["codes", "engine", "build s", "load s", "RSS MiB", "MiB / 10^6", "p50 ms", "p95 ms", "batch q/s",
                 "recall@10"], rows))
    print()
    print("Flat scan of one query: medhash (shards on parallel threads) against faiss IndexBinaryFlat.search "
          "called directly, and against the memory-bandwidth bound (bytes scanned / measured read bandwidth of "
          "the threads used)")
    print(table(["codes", "shards", "medhash ms", f"faiss ms ({cores} thr)", "faiss ms (1 thr)",
                 f"speed ratio (faiss {cores} thr / medhash)", "bound ms", "bound / medhash"], flat_rows))
    print("(medians of single queries, the three called in turn query by query, two passes)")
    print()
    projection(args, bw1, bwn)
    log("done")


def measure_flat(args, n: int, codes, keys, Qs, Qb, bw1: float, bwn: float, cores: int, rows: list, flat_rows: list):
    """The flat engine at one size: build, load, single and batch queries, against faiss called directly;
    appends its rows and returns (engine, exact distances of the batch)."""
    import faiss

    from medhash.retrieval import hamming_topk
    from medhash.retrieval.engines import FlatEngine
    from medhash.threads import set_faiss_threads

    log(f"{n:,} codes: measuring the flat engine")
    # the exact answer and faiss called directly
    r0 = rss_mib()
    t = time.perf_counter()
    flat = FlatEngine(codes)
    t_flat = time.perf_counter() - t
    mem_flat = rss_mib() - r0
    log(f"{n:,}: exact reference ({len(Qb)} queries, batch)")
    t = time.perf_counter()
    D_exact, _ = hamming_topk(flat, Qb, K, keys)
    t_batch_flat = time.perf_counter() - t
    direct = faiss.IndexBinaryFlat(N_BITS)
    direct.add(codes)
    log(f"{n:,}: flat single queries (medhash and faiss called directly, interleaved query by query)")

    def faiss_default(q):
        set_faiss_threads(cores)
        direct.search(q, K)

    def faiss_one(q):
        set_faiss_threads(1)
        direct.search(q, K)

    lat = interleaved({"medhash": lambda q: hamming_topk(flat, q, K, keys), "faiss": faiss_default,
                       "faiss1": faiss_one}, Qs)
    lat_flat, lat_direct, lat_direct1 = lat["medhash"], lat["faiss"], lat["faiss1"]
    del direct
    bound_ms = n * N_BYTES / (bwn if len(flat.parts) > 1 else bw1) * 1e3
    flat_rows.append([f"{n:,}", len(flat.parts), fmt(np.median(lat_flat)), fmt(np.median(lat_direct)),
                      fmt(np.median(lat_direct1)), f"{np.median(lat_direct) / np.median(lat_flat):.2f}",
                      fmt(bound_ms), f"{bound_ms / np.median(lat_flat):.2f}"])
    with tempfile.TemporaryDirectory() as tmp:        # load = open codes.u8 memory-mapped + build the shards
        codes.tofile(Path(tmp) / "codes.u8")
        t = time.perf_counter()
        FlatEngine(np.memmap(Path(tmp) / "codes.u8", dtype=np.uint8, mode="r", shape=codes.shape))
        t_load_flat = time.perf_counter() - t
    rows.append([f"{n:,}", "flat", f"{t_flat:.1f}", f"{t_load_flat:.2f}", f"{mem_flat:.0f}", f"{mem_flat / n * 1e6:.0f}",
                 fmt(np.median(lat_flat)), fmt(np.percentile(lat_flat, 95)),
                 f"{len(Qb) / t_batch_flat:,.0f}", "1.000"])
    return flat, D_exact


def measure_approx(args, kind: str, n: int, codes, keys, Qs, Qb, D_exact, build_rate: dict, rows: list) -> None:
    """An approximate engine at one size: build, save + load, single and batch queries, recall@10."""
    from medhash.retrieval import hamming_topk
    from medhash.retrieval.engines import FaissApproxEngine, resolve_params

    if kind == "hnsw" and n > args.hnsw_max:
        rate = build_rate.get("hnsw")
        est = f"not built (est. {rate * n:,.0f} s)" if rate else "not built"
        rows.append([f"{n:,}", kind, est, "", "", "", "", "", "", ""])
        return
    params = resolve_params(kind, {"nprobe": args.nprobe} if kind == "ivf" else {"ef_search": args.ef_search})
    log(f"{n:,}: building {kind} {params}")
    r0 = rss_mib()
    t = time.perf_counter()
    eng = FaissApproxEngine.create(kind, params, codes, seed=args.seed)
    t_build = time.perf_counter() - t
    mem = rss_mib() - r0
    build_rate[kind] = t_build / n
    with tempfile.TemporaryDirectory() as tmp:
        eng.save(Path(tmp) / "engine")
        t = time.perf_counter()
        FaissApproxEngine.load(Path(tmp) / "engine", kind, params)
        t_load = time.perf_counter() - t
    lat = single_latencies(lambda q: hamming_topk(eng, q, K, keys), Qs)
    t = time.perf_counter()
    D_a, _ = hamming_topk(eng, Qb, K, keys)
    t_batch = time.perf_counter() - t
    rec = recall_at_k(D_a, D_exact)
    label = kind + (f" (nlist {eng.index.nlist}, nprobe {eng.index.nprobe})" if kind == "ivf"
                    else f" (M {params['M']}, ef {params['ef_search']})")
    rows.append([f"{n:,}", label, f"{t_build:.1f}", f"{t_load:.2f}", f"{mem:.0f}", f"{mem / n * 1e6:.0f}", fmt(np.median(lat)),
                 fmt(np.percentile(lat, 95)), f"{len(Qb) / t_batch:,.0f}", f"{rec:.3f}"])
    log(f"{n:,}: {kind} p50 {np.median(lat):.3f} ms, recall {rec:.3f}")
    del eng


def projection(args, bw1: float, bwn: float) -> None:
    """Print the arithmetic projection for 10^8 and 10^9 codes."""
    from medhash.retrieval.engines import DEFAULT_PARAMS

    print("Projection for 10^8 and 10^9 codes (arithmetic; not measured):")
    nprobe = args.nprobe or DEFAULT_PARAMS["ivf"]["nprobe"]
    for n in (10**8, 10**9):
        mem = n * N_BYTES
        flat_ms = mem / bwn * 1e3
        nlist = int(2 ** round(np.log2(np.sqrt(n) / 4)))
        scanned = n * nprobe / nlist
        ivf_ms = (scanned * N_BYTES + nlist * N_BYTES) / bw1 * 1e3
        nodes_mem = int(np.ceil((mem + 8 * n) * 1.4 / (64 * 2**30)))
        nodes_5ms = int(np.ceil(flat_ms / 5.0))
        print(f"  {n:.0e} codes: {mem / 2**30:.1f} GiB of codes (+ 8 B an id in an IVF: {(mem + 8 * n) / 2**30:.1f} "
              f"GiB, {nodes_mem} machine(s) of 64 GiB with 40 % headroom).\n"
              f"      flat: {mem / 1e6:,.0f} MB / {bwn / 1e9:.1f} GB/s = {flat_ms:,.0f} ms a query on one machine; "
              f"5 ms needs {nodes_5ms} shards scanned in parallel.\n"
              f"      IVF, nlist {nlist} (medhash's auto), nprobe {nprobe}: {scanned:,.0f} codes + {nlist} centroids = "
              f"{(scanned + nlist) * N_BYTES / 1e6:.1f} MB at {bw1 / 1e9:.1f} GB/s (1 thread) = {ivf_ms:.1f} ms on one "
              f"machine; Milvus spreads the same IVF (BIN_IVF_FLAT) over query nodes.")


if __name__ == "__main__":
    main()
