"""``medhash evaluate``: every measurement of the report, its figures, metrics.json and report.html.

    from medhash import Archive
    from medhash.evaluate import evaluate
    metrics = evaluate(Archive("archive"), "report", channel="ct", queries=400, seed=0)

Deterministic for a seed: queries, hashers, pairs and baselines are all drawn from it. The schema of
``metrics.json`` is documented in ``docs/metrics-schema.md``.
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..errors import InputError
from ..hashing import KernelLSH, hamming_distances
from ..store.durable import write_json_atomic
from . import distances as dist_mod
from . import figures, overlap, relevance
from .data import FeatureSet, draw_queries, feature_set, optional_feature_set

SCHEMA = "medhash-evaluate/1"
DEFAULT_BITS = (1, 10, 100, 1000, 10000)
DEFAULT_KS = (1, 5, 10, 20, 50, 100)
SCATTER_BITS = (512, 4096)
USEFUL_K = 10
"""k of the per-hasher usefulness scores (organ-set Jaccard, dose MAE) of section 7."""
QUICK = {"queries": 40, "bits": (1, 10, 100, 1000), "ks": (1, 5, 10, 20), "pairs": 500,
         "gamma_factors": tuple(4.0 ** e for e in range(-8, 4, 2)) + (4.0, 64.0), "examples": 1, "timing_repeats": 5}
FULL = {"pairs": 2000, "gamma_factors": tuple(2.0 ** e for e in range(-16, 7)), "examples": 3, "timing_repeats": 20}


def _k_ref(ks: list[int]) -> int:
    """The k of the violin plots and the gamma sweep: 50 as in mission.md where possible."""
    below = [k for k in ks if k <= 50]
    return 50 if 50 in ks else (max(below) if below else min(ks))


def _parse_list(values, what: str, low: int, high: int | None = None) -> list[int]:
    try:
        out = sorted({int(v) for v in values})
    except (TypeError, ValueError):
        raise InputError(f"--{what} must be a list of whole numbers, e.g. 1,10,100; got {values!r}") from None
    if not out or out[0] < low or (high is not None and out[-1] > high):
        raise InputError(f"--{what} values must be between {low} and {high or 'the archive size'}; got {values!r}")
    return out


def evaluate(archive, out: str | Path, *, index: str | None = None, channel: str | None = None,
             queries: int | None = None, bits=None, ks=None, seed: int = 0, gamma: float | str = "auto",
             rerank: int = 500, quick: bool = False, progress: bool = True, command: str | None = None,
             dose_prediction: bool = False, dose_k: int = 10, compare_hashers: bool = False) -> dict:
    """Run the evaluation and write ``report.html``, ``metrics.json`` and the PNGs into ``out``.

    Parameters
    ----------
    archive : an open :class:`~medhash.store.archive.Archive` with trained model(s).
    out : output folder (created).
    index : evaluate the features of this index (its models, scales and weights) ...
    channel : ... or those of the newest model(s) of ``"ct"``, ``"dose"`` or ``"ct+dose"`` (default ct).
    queries : number of query slices (default 400; quick 40), drawn with ``seed``.
    bits : code lengths of the overlap analysis (default 1, 10, 100, 1000, 10000).
    ks : numbers of neighbours (default 1, 5, 10, 20, 50, 100); those larger than some query's
        candidates are dropped (reported under ``parameters.ks_dropped``).
    gamma : kernel width of every hasher, or ``"auto"`` (4 / median squared distance of pairs).
    rerank : depth of the Hamming shortlist re-ranked by Euclidean distance (relevance section).
    quick : a small, fast run (fewer queries, lengths, k, pairs, examples).
    dose_prediction : also score dose from the ``dose_k`` most similar patients leave-one-patient-out
        with the OpenKBP dose and DVH scores (:mod:`.doseloo`; needs an index: ``index``, else the
        archive's only one).
    compare_hashers : also compare kernel LSH, PCA-sign, ITQ and the trained hash (Dice@k against code
        length, fit time) on the same features (quick: 16, 64 bits and 2 training epochs).

    Returns
    -------
    dict : the metrics written to ``metrics.json``.
    """
    t_start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    p = QUICK if quick else FULL
    n_queries = int(queries if queries is not None else (QUICK["queries"] if quick else 400))
    bits = _parse_list(bits if bits is not None else (QUICK["bits"] if quick else DEFAULT_BITS), "bits", 1, 16384)
    ks_asked = _parse_list(ks if ks is not None else (QUICK["ks"] if quick else DEFAULT_KS), "k", 1)
    if n_queries < 2:
        raise InputError(f"--queries must be at least 2, not {n_queries}")
    if len(archive) < 3:
        raise InputError(f"archive {archive.path} has {len(archive)} slices; an evaluation needs more")

    def say(msg: str) -> None:
        if progress:
            tqdm.write(f"evaluate: {msg}", file=sys.stderr)

    timings: dict[str, float] = {}

    def lap(name: str, t0: float) -> None:
        timings[name] = round(time.perf_counter() - t0, 3)

    # ---- data
    t0 = time.perf_counter()
    say("features")
    fs = feature_set(archive, channel=channel, index=index, progress=progress)
    table = archive.table()
    patients = table["patient_id"].astype(str)
    candidates = np.flatnonzero(fs.valid)
    q = draw_queries(candidates, n_queries, seed)
    masks = overlap.exclusion_masks(patients, q, candidates)
    ks_used = overlap.usable_ks(ks_asked, masks)
    if not ks_used:
        raise InputError(f"no k in {ks_asked} fits: some query has fewer candidate slices of other patients "
                         f"than the smallest k; use a larger archive or a smaller --k")
    rerank = max(int(rerank), max(ks_used))
    k_ref = _k_ref(ks_used)
    X = np.nan_to_num(fs.X)
    eu = overlap.euclidean_distances(X, q)
    lap("features_s", t0)

    # ---- 1. overlap of Hamming and Euclidean neighbours
    t0 = time.perf_counter()
    say(f"overlap of Hamming and Euclidean k-NN: {len(q)} queries, {len(bits)} code lengths, k {ks_used}")
    with tqdm(total=len(bits), desc="code lengths", unit="length", disable=not progress) as bar:
        ov = overlap.hamming_overlap(X, q, eu, masks, bits, ks_used, gamma=gamma, seed=seed, fit_rows=candidates,
                                     progress=bar)
    summary = overlap.summarise(ov["per_query"])
    figs = {"violins": figures.violins(ov["per_query"], bits, k_ref, out / "overlap-violins.png").name,
            "overlap_vs_k": figures.overlap_vs_k(summary, bits, ks_used, out / "overlap-vs-k.png").name}
    lap("overlap_s", t0)

    # ---- 2. Hamming vs Euclidean distance, gamma sweep
    t0 = time.perf_counter()
    say("Hamming against Euclidean distance; gamma sweep")
    hve = dist_mod.hamming_vs_euclidean(X, candidates, list(SCATTER_BITS), gamma=gamma, seed=seed, n_pairs=p["pairs"])
    figs["scatter"] = figures.hamming_scatter(hve, out / "hamming-vs-euclidean.png").name
    with tqdm(total=len(p["gamma_factors"]), desc="gamma sweep", unit="gamma", disable=not progress) as bar:
        sweep = dist_mod.gamma_sweep(X, candidates, q, eu, masks["included"], list(p["gamma_factors"]), n_bits=256,
                                     k=k_ref, seed=seed, n_pairs=p["pairs"], progress=bar)
    figs["gamma"] = figures.gamma_sweep(sweep, out / "gamma-sweep.png").name
    lap("distances_s", t0)

    # ---- 3. reconstructions
    t0 = time.perf_counter()
    say("reconstructions")
    recon, recon_figs = _reconstructions(archive, fs, q, patients, out, p["examples"])
    figs.update(recon_figs)
    lap("reconstructions_s", t0)

    # ---- 5. relevance and dose from neighbours (before 4: the examples reuse its codes)
    t0 = time.perf_counter()
    rel_bits = fs.index_bits or 256
    say(f"cross-patient relevance and dose from neighbours ({rel_bits} bits, re-rank depth {rerank})")
    hasher = KernelLSH(n_bits=rel_bits, gamma=gamma, seed=seed).fit(X[candidates])
    codes = hasher.transform(X)
    ex = masks["excluded"]
    ham = hamming_distances(codes[q], codes)
    kmax = max(ks_used)
    lists = {"euclidean": relevance.topk(eu, ex, kmax), "hamming": relevance.topk(ham, ex, kmax),
             "rerank": relevance.reranked_topk(ham, eu, ex, kmax, rerank),
             "random": relevance.random_topk(ex, kmax, seed)}
    sets = relevance.organ_sets(archive)
    organ = {"relevant_jaccard": relevance.RELEVANT_JACCARD, "n_queries": 0, "methods": {}}
    for m, L in lists.items():
        s = relevance.organ_scores(L, q, sets, ks_used)
        organ["n_queries"] = s["n_queries"]
        organ["methods"][m] = {"jaccard": s["jaccard"], "precision": s["precision"]}
    dose = relevance.dose_scores(archive, lists, q, ks_used)
    dose["dose_in_features"] = "dose" in fs.models
    figs["relevance"] = figures.relevance(organ, dose, ks_used, out / "relevance.png").name
    lap("relevance_s", t0)

    # ---- 4. retrieval examples: CT only and joint CT + dose
    t0 = time.perf_counter()
    say("retrieval examples")
    examples = _examples(archive, fs, q, patients, sets, out, p["examples"], rel_bits, gamma, seed, progress)
    figs["examples"] = examples
    lap("examples_s", t0)

    # ---- timings and sizes
    t0 = time.perf_counter()
    say("timings")
    timing = _timings(archive, fs, X, candidates, codes, q, rerank, p["timing_repeats"])
    lap("timing_s", t0)

    hasher_cmp = None
    if compare_hashers:
        t0 = time.perf_counter()
        hb = (16, 64) if quick else overlap.HASHER_BITS
        say(f"hashers compared at {list(hb)} bits")
        def usefulness(ham: np.ndarray) -> dict:
            """Section 5's scores at k = 10 for one hasher's codes (other patients' slices only)."""
            top = relevance.topk(ham, ex, USEFUL_K)
            org = relevance.organ_scores(top, q, sets, [USEFUL_K])
            mae = relevance.dose_scores(archive, {"h": top}, q, [USEFUL_K])
            return {"organ_jaccard": org["jaccard"][str(USEFUL_K)],
                    "dose_mae": mae["mae"]["h"][str(USEFUL_K)],
                    "dose_mae_pdm": mae["mae_pdm"]["h"][str(USEFUL_K)]}

        with tqdm(total=4 * len(hb), desc="hashers", unit="fit", disable=not progress) as bar:
            hasher_cmp = overlap.compare_hashers(X, q, eu, masks["included"], k_ref, bits=hb, seed=seed,
                                                 fit_rows=candidates, trained_epochs=2 if quick else 10,
                                                 progress=bar, usefulness=usefulness)
        hasher_cmp["usefulness_k"] = USEFUL_K
        lap("hashers_s", t0)

    dose_loo = None
    if dose_prediction:
        t0 = time.perf_counter()
        from ..retrieval.index import list_indexes
        from .doseloo import leave_one_out
        names = list_indexes(archive)
        loo_index = index or (names[0] if len(names) == 1 else None)
        if loo_index is None:
            raise InputError("--dose-prediction searches patients in an index: give --index NAME "
                             f"(indexes: {', '.join(names) or 'none'})")
        say(f"dose from similar patients, leave-one-patient-out (index {loo_index}, k {dose_k})")
        dose_loo = leave_one_out(archive, index=loo_index, k=dose_k, progress=progress)
        dose_loo["slice_level_euclidean_top10_pdm"] = (dose["mae_pdm"]["euclidean"].get("10")
                                                       if dose.get("mae_pdm") else None)
        lap("dose_prediction_s", t0)

    metrics = {
        "schema": SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": command,
        "archive": {"path": str(archive.path), "patients": int(len(set(patients))), "slices": int(len(archive))},
        "features": fs.describe(),
        "parameters": {"queries": int(len(q)), "seed": int(seed), "bits": bits, "ks": ks_used,
                       "ks_dropped": [k for k in ks_asked if k not in ks_used], "k_reference": k_ref,
                       "gamma": gamma, "quick": bool(quick), "rerank": rerank, "pairs": p["pairs"]},
        "queries": {"rows": q.tolist(), "patients": int(len(set(patients[q])))},
        "gamma": {"fitted": ov["gamma"], "mode": "auto" if gamma == "auto" else "given"},
        "overlap": {"summary": summary,
                    "per_query_dice": {m: {str(b): {str(k): np.round(v, 4).tolist() for k, v in by_k.items()}
                                           for b, by_k in by_b.items()} for m, by_b in ov["per_query"].items()}},
        "distances": {"gamma": hve["gamma"], "pairs": int(len(hve["euclidean"])),
                      "per_bits": {b: {"rms_deviation": d["rms_deviation"], "spearman": d["spearman"],
                                       "mean_fraction": float(np.mean(d["hamming_fraction"]))}
                                   for b, d in hve["per_bits"].items()},
                      "gamma_sweep": sweep},
        "reconstruction": recon,
        "relevance": {"bits": rel_bits, "rerank": rerank, "organ": organ, "dose": dose},
        "timing": timing,
        "dose_prediction": dose_loo,
        "hashers": hasher_cmp,
        "figures": figs,
        "elapsed_s": {**timings, "total_s": round(time.perf_counter() - t_start, 3)},
    }
    metrics = _jsonable(metrics)
    write_json_atomic(out / "metrics.json", metrics)
    from .html import write_report
    write_report(metrics, out / "report.html")
    say(f"wrote {out / 'report.html'} in {metrics['elapsed_s']['total_s']:.0f} s")
    return metrics


def _jsonable(obj):
    """Plain Python types for json (numpy scalars and arrays converted; NaN -> None)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    return obj


def _example_queries(q: np.ndarray, patients: np.ndarray, archive, sets, n: int) -> list[int]:
    """Up to ``n`` query rows of distinct patients, preferring slices with dose and structures."""
    has = archive.table()["has_dose"]
    order = sorted(range(len(q)), key=lambda j: (not has[q[j]], not sets[q[j]], j))
    chosen, seen = [], set()
    for j in order:
        if patients[q[j]] not in seen:
            chosen.append(int(q[j]))
            seen.add(patients[q[j]])
        if len(chosen) == n:
            break
    return chosen


def _reconstructions(archive, fs: FeatureSet, q, patients, out: Path, n_examples: int) -> tuple[dict, dict]:
    from ..features import load_model, read_metrics, reconstruct_arrays
    res, figs = {}, {}
    for ch, cfg in fs.models.items():
        model, config = load_model(archive, cfg["name"])
        src = archive.ct if ch == "ct" else archive.dose
        rows = q[np.argsort(-np.asarray(archive.dose[q]).reshape(len(q), -1).max(axis=1), kind="stable")] \
            if ch == "dose" else q
        picked, seen = [], set()
        for r in rows:
            if patients[r] not in seen:
                picked.append(int(r))
                seen.add(patients[r])
            if len(picked) == max(2, n_examples + 1):
                break
        picked = sorted(picked)
        inputs = np.asarray(src[picked], dtype=np.float32)
        if ch == "ct":
            inputs = np.clip(inputs, -1000, 1000)
        outputs = reconstruct_arrays(model, config, inputs)
        try:
            final = read_metrics(archive, cfg["name"])["final"]
            psnr_db, mse = final.get("held_out_psnr"), final.get("held_out_mse")
        except Exception:  # older models without metrics.json: leave the held-out figure out
            psnr_db = mse = None
        table = archive.table()
        caps = [f"{patients[r]}:{table['slice_index'][r]}" for r in picked]
        name = f"reconstruction-{ch}.png"
        figures.reconstructions(ch, inputs, outputs, caps, out / name, psnr_db=psnr_db,
                                ct=np.asarray(archive.ct[picked], dtype=np.float32))
        figs[f"reconstruction_{ch}"] = name
        res[ch] = {"model": cfg["name"], "held_out_psnr_db": psnr_db, "held_out_mse": mse,
                   "examples_mae": float(np.mean(np.abs(outputs - inputs))),
                   "unit": "HU" if ch == "ct" else "Gy"}
        if ch == "ct" or "ct" not in fs.models:
            pid = patients[q[0]]
            prow = np.flatnonzero(patients == pid)
            prow = prow[np.argsort(table["z_mm"][prow], kind="stable")]
            vol = np.asarray(src[prow], dtype=np.float32)
            if ch == "ct":
                vol = np.clip(vol, -1000, 1000)
            rec = reconstruct_arrays(model, config, vol)
            if ch == "ct":
                figures.volume_planes(vol, rec, table["z_mm"][prow],
                                      f"Patient {pid}: {len(prow)} slices, orthogonal planes, input vs "
                                      f"reconstruction ({cfg['name']})", out / "reconstruction-3d.png")
                figs["reconstruction_3d"] = "reconstruction-3d.png"
            res[ch]["volume"] = {"patient_id": pid, "slices": int(len(prow)),
                                 "mae": float(np.mean(np.abs(rec - vol)))}
    return res, figs


def _examples(archive, fs: FeatureSet, q, patients, sets, out: Path, n: int, n_bits: int, gamma, seed: int,
              progress: bool) -> list[dict]:
    """Retrieval grids (top 5 of other patients, Hamming) for CT-only and joint features."""
    from ..render import render_results
    sets_avail = {}
    for ch in ("ct", "ct+dose"):
        sets_avail[ch] = fs if fs.channel == ch else optional_feature_set(archive, ch, progress=progress)
    rows = _example_queries(q, patients, archive, sets, n)
    table = archive.table()
    out_list = []
    for ch, f in sets_avail.items():
        if f is None:
            continue
        cand = np.flatnonzero(f.valid)
        Xc = np.nan_to_num(f.X)
        h = KernelLSH(n_bits=n_bits, gamma=gamma, seed=seed).fit(Xc[cand])
        codes = h.transform(Xc)
        for j, r in enumerate(rows):
            if not f.valid[r]:
                continue
            excluded = np.ones(len(archive), dtype=bool)
            excluded[cand] = False
            excluded |= patients == patients[r]
            d = hamming_distances(codes[[r]], codes)
            top = relevance.topk(d, excluded[None, :], 5)[0]
            s = archive[r]
            panels = []
            for rank, t in enumerate(top, start=1):
                res = archive[int(t)]
                panels.append((res.ct, res.dose if res.has_dose else None,
                               f"#{rank} {res.patient_id}:{res.slice_index}\nHamming {int(d[0, t])}"))
            name = f"retrieval-{'ct' if ch == 'ct' else 'joint'}-{j + 1}.png"
            what = "CT features only" if ch == "ct" else "joint CT + dose features"
            render_results(s.ct, s.dose if s.has_dose else None,
                           f"query {s.patient_id}:{s.slice_index}\nz {s.z_mm:.1f} mm", panels, out / name,
                           suptitle=f"{what}, {n_bits} bits, top 5 of other patients", ncols=6)
            out_list.append({"file": name, "channel": ch, "query": f"{s.patient_id}:{s.slice_index}",
                             "results": [f"{patients[t]}:{table['slice_index'][t]}" for t in top]})
    return out_list


def _timings(archive, fs: FeatureSet, X, candidates, codes, q, rerank: int, repeats: int) -> dict:
    """Per-query encode and search times (ms, medians) and bytes per slice."""
    import faiss

    from ..features import encode_arrays, load_model
    from ..retrieval.index import set_search_threads
    enc = {}
    for ch, cfg in fs.models.items():
        model, config = load_model(archive, cfg["name"])
        one = np.asarray((archive.ct if ch == "ct" else archive.dose)[q[:1]], dtype=np.float32)
        enc[ch] = relevance.median_ms(lambda: encode_arrays(model, config, one), repeats)
    set_search_threads(1)
    idx = faiss.IndexBinaryFlat(codes.shape[1] * 8)
    idx.add(np.ascontiguousarray(codes[candidates]))
    Xc = np.ascontiguousarray(X[candidates], dtype=np.float32)
    sample = q[: min(len(q), 50)]
    it = iter(np.tile(sample, repeats * 4 + 8))

    def ham_search():
        idx.search(codes[[next(it)]], 10)

    def eu_search():
        v = X[next(it)]
        d = np.einsum("ij,ij->i", Xc - v, Xc - v)
        np.argpartition(d, 10)[:10]

    def rr_search():
        r = next(it)
        _, ids = idx.search(codes[[r]], rerank)
        sub = Xc[ids[0]] - X[r]
        np.argsort(np.einsum("ij,ij->i", sub, sub))[:10]

    n_bits = int(codes.shape[1] * 8)
    return {"encode_ms": enc,
            "search_ms": {"hamming_top10": relevance.median_ms(ham_search, repeats),
                          "euclidean_top10_numpy": relevance.median_ms(eu_search, repeats),
                          f"hamming_top{rerank}_rerank_top10": relevance.median_ms(rr_search, repeats)},
            "items": int(len(candidates)), "code_bits": n_bits,
            "bytes_per_slice": {"codes": n_bits // 8, "features": int(X.shape[1] * 4)},
            "note": "medians over single queries, 1 faiss thread, this machine"}


def read_metrics_json(path: str | Path) -> dict:
    """metrics.json of an evaluation."""
    return json.loads(Path(path).read_text())
