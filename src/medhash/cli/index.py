"""``medhash index``: hash the slices' features into a named Hamming index.

Encode the archive's slices with the trained model(s), hash the features with kernel LSH and store
the codes as index NAME. Run it again after an ingest: only the new slices are encoded and added.

examples:
  medhash index --archive ./archive --name ct256 --channel ct --bits 256
  medhash index --archive ./archive --name joint --channel ct+dose --bits 1024
  medhash index --archive ./archive --name geo --channel ct+geometry --bits 512   # after train --channel geometry
  medhash index --archive ./archive --name big --bits 256 --index-type ivf --nprobe 64
  medhash index --archive ./archive --name mv --bits 256 --backend milvus --uri ./milvus.db
"""
from __future__ import annotations

import argparse
import json

from ..errors import EXIT_OK, MedhashError
from ..store import Archive
from .options import add_archive, add_command, add_json, add_no_progress, positive_float


def register(sub) -> None:
    p = add_command(sub, "index", run, __doc__)
    add_archive(p)
    p.add_argument("--name", required=True, help="index name (a folder under ARCHIVE/indexes)")
    p.add_argument("--channel", choices=("ct", "dose", "ct+dose", "geometry", "ct+geometry"), default="ct",
                   help="features hashed: CT, dose, geometry (targets, organs and distance to the targets, from "
                        "the contours), or CT joined with dose or geometry (default ct)")
    _add_hashing(p)
    _add_engine(p)
    p.add_argument("--rebuild", action="store_true", help="build again from scratch (after retraining a model)")
    add_json(p, "print the manifest as JSON")
    add_no_progress(p)


def _add_hashing(p: argparse.ArgumentParser) -> None:
    """Code length, hasher, kernel width, seed, models and block weights."""
    p.add_argument("--bits", type=int, default=256, help="code length, 1 to 16384 (default 256)")
    p.add_argument("--gamma", default="auto", help="kernel parameter, or auto = 4 / median squared distance of "
                                                   "random pairs (default auto)")
    p.add_argument("--seed", type=int, default=0, help="seed of the hash draws (default 0)")
    p.add_argument("--ct-model", help="CT model name (default: the newest CT model)")
    p.add_argument("--dose-model", help="dose model name (default: the newest dose model)")
    p.add_argument("--geometry-model", help="geometry model name (default: the newest geometry model)")
    p.add_argument("--ct-weight", type=float, help="weight of the CT block in ct+dose / ct+geometry (default 1)")
    p.add_argument("--dose-weight", type=float, help="weight of the dose block in ct+dose (default 1)")
    p.add_argument("--geometry-weight", type=float, help="weight of the geometry block in ct+geometry (default 1)")
    p.add_argument("--hasher", choices=("kernel-lsh", "itq", "pca-sign", "trained"), default="kernel-lsh",
                   help="how features become bits: kernel-lsh (default, Raginsky & Lazebnik), itq or pca-sign "
                        "(bits <= feature length), trained (kernel LSH whose w, b are learned; see README)")
    p.add_argument("--epochs", type=int, help="trained hasher: training epochs (default 10)")


def _add_engine(p: argparse.ArgumentParser) -> None:
    """Engine type and parameters (faiss flat, IVF, HNSW) or the Milvus backend."""
    p.add_argument("--index-type", choices=("flat", "ivf", "hnsw"), default="flat",
                   help="search engine: flat = exact scan (default; up to a few million slices), ivf or hnsw = "
                        "approximate, for 10^7 and more")
    p.add_argument("--nlist", help="ivf: inverted lists (default auto: the power of two nearest sqrt(n) / 4, "
                                   "at least 16 and at most n / 39)")
    p.add_argument("--nprobe", type=int, help="ivf: lists scanned per query (default 32)")
    p.add_argument("--M", type=int, help="hnsw: links per node (default 32)")
    p.add_argument("--ef-search", type=int, help="hnsw: candidates kept while searching (default 128)")
    p.add_argument("--ef-construction", type=int, help="hnsw: candidates kept while building (default 80)")
    p.add_argument("--backend", choices=("local", "milvus"), default="local",
                   help="where searches run: local faiss engine (default) or a Milvus collection")
    p.add_argument("--uri", help="milvus: a Milvus Lite file (./milvus.db) or a server (http://HOST:19530)")
    p.add_argument("--collection", help="milvus: collection name (default medhash_NAME)")


def _engine_params(args: argparse.Namespace) -> dict | None:
    """The engine parameters given on the command line (None: the engine's defaults)."""
    params = {"nlist": args.nlist, "nprobe": args.nprobe, "M": args.M, "ef_search": args.ef_search,
              "ef_construction": args.ef_construction}
    if args.nlist not in (None, "auto"):
        try:
            params["nlist"] = int(args.nlist)
        except ValueError:
            raise MedhashError(f"--nlist must be 'auto' or a whole number, not {args.nlist!r}") from None
    return {k: v for k, v in params.items() if v is not None} or None


def run(args: argparse.Namespace) -> int:
    """Build or update the index and print its manifest."""
    from ..retrieval import build_index  # start-up: faiss and torch only when indexing

    archive = Archive(args.archive)
    gamma = args.gamma if args.gamma == "auto" else positive_float(args.gamma, "--gamma")
    weights = {ch: w for ch, w in (("ct", args.ct_weight), ("dose", args.dose_weight),
                                   ("geometry", args.geometry_weight)) if w is not None}
    models = {k: v for k, v in (("ct", args.ct_model), ("dose", args.dose_model), ("geometry", args.geometry_model))
              if v}
    index_params = _engine_params(args)
    hasher_params = {"epochs": args.epochs} if args.epochs is not None else None
    if hasher_params and args.hasher != "trained":
        raise MedhashError("--epochs applies to --hasher trained")
    man = build_index(archive, args.name, args.channel, args.bits, gamma, args.seed, models=models or None,
                      hasher=args.hasher, hasher_params=hasher_params,
                      weights=weights or None, rebuild=args.rebuild, progress=not args.no_progress,
                      index_type=args.index_type, index_params=index_params,
                      backend={"type": args.backend, "uri": args.uri, "collection": args.collection})
    if args.json:
        print(json.dumps(man, indent=2))
    else:
        _print_manifest(man)
    return EXIT_OK


def _print_manifest(man: dict) -> None:
    """The index's summary: hasher, models, engine or backend, items and bytes a slice."""
    models_txt = ", ".join(f"{ch}: {m['name']}" for ch, m in man["models"].items())
    hasher = (man.get("hasher") or {}).get("name", "kernel-lsh")
    gamma_txt = (f", gamma {man['gamma_']:.4g} ({'auto' if man['gamma'] == 'auto' else 'given'})"
                 if man.get("gamma_") is not None else "")
    print(f"index {man['name']}: {man['channel']}, {man['n_bits']} bits, hasher {hasher}{gamma_txt}, "
          f"seed {man['seed']}, models {models_txt}")
    eng = man.get("engine") or {}
    be = man.get("backend") or {}
    if be.get("type") == "milvus":
        print(f"backend Milvus: {be['uri']}, collection {be['collection']}, {be['index']} / {be['metric']}")
    if man.get("index_type", "flat") != "flat":
        print(f"engine {man['index_type']}: " + ", ".join(f"{k} {v}" for k, v in eng.items() if k != "index_type"))
    print(f"{man['added']} slices added, {man['items']} in the index "
          f"({man['code_bytes']} bytes a slice, {man['feature_dim'] * 4} bytes as float features)")
