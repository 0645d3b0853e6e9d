"""``medhash evaluate``: every measurement of the report, its figures, metrics.json and report.html.

    from medhash import Archive
    from medhash.evaluate import evaluate
    metrics = evaluate(Archive("archive"), "report", channel="ct", queries=400, seed=0)

Deterministic for a seed: queries, hashers, pairs and baselines are all drawn from it. The schema of
``metrics.json`` is documented in ``docs/metrics-schema.md``. With an index named, the Hamming method of
the relevance section, the retrieval examples and the timings use that index's own fitted hasher (the
codes the index holds), ranked by the product's search (:mod:`.ranking`), and ``overlap.index`` gives that
hasher's Dice; the overlap sweep over code lengths and section 2 study kernel LSH on the same features.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..errors import InputError
from ..retrieval import list_indexes
from ..store.durable import write_json_atomic
from . import distances as dist_mod
from . import figures, overlap, relevance
from .data import FeatureSet, draw_queries, feature_set
from .doseloo import leave_one_out
from .doseplan import planned_leave_one_out
from .doseslices import slice_level_transfer
from .examples import examples, jsonable, reconstructions, timings
from .html import write_dose_report, write_report
from .ranking import hamming_lists, method_hasher

SCHEMA = "medhash-evaluate/1"
DEFAULT_BITS = (1, 10, 100, 1000, 10000)
DEFAULT_KS = (1, 5, 10, 20, 50, 100)
SCATTER_BITS = (512, 4096)
USEFUL_K = 10
"""k of the per-hasher usefulness scores (organ-set Jaccard, dose MAE) of section 7."""
QUICK = {"queries": 40, "bits": (1, 10, 100, 1000), "ks": (1, 5, 10, 20), "pairs": 500,
         "gamma_factors": tuple(4.0 ** e for e in range(-8, 4, 2)) + (4.0, 64.0), "examples": 1, "timing_repeats": 5}
FULL = {"pairs": 2000, "gamma_factors": tuple(2.0 ** e for e in range(-16, 7)), "examples": 3, "timing_repeats": 20}
_WHAT = {"bits": "the code lengths", "ks": "the numbers of neighbours"}


def _k_ref(ks: list[int]) -> int:
    """The k of the violin plots and the gamma sweep: 50 as in mission.md where possible."""
    below = [k for k in ks if k <= 50]
    return 50 if 50 in ks else (max(below) if below else min(ks))


def _parse_list(values, param: str, low: int, high: int | None = None) -> list[int]:
    """Sorted distinct whole numbers of ``values`` in [low, high]; InputError about ``param`` otherwise."""
    try:
        out = sorted({int(v) for v in values})
    except (TypeError, ValueError):
        raise InputError(f"{_WHAT[param]} must be a list of whole numbers, e.g. 1,10,100; got {values!r}",
                         param=param) from None
    if not out or out[0] < low or (high is not None and out[-1] > high):
        raise InputError(f"{_WHAT[param]} must be between {low} and {high or 'the archive size'}; got {values!r}",
                         param=param)
    return out


@dataclass
class Run:
    """What every section of one evaluation works on (made by :func:`_prepare`)."""

    archive: object
    out: Path
    p: dict
    fs: FeatureSet
    X: np.ndarray
    q: np.ndarray
    candidates: np.ndarray
    patients: np.ndarray
    masks: dict
    ks_asked: list[int]
    ks: list[int]
    k_ref: int
    eu: np.ndarray
    bits: list[int]
    gamma: float | str
    seed: int
    rerank: int
    progress: bool
    timings: dict = field(default_factory=dict)

    def say(self, msg: str) -> None:
        if self.progress:
            tqdm.write(f"evaluate: {msg}", file=sys.stderr)

    def bar(self, total: int, desc: str, unit: str):
        return tqdm(total=total, desc=desc, unit=unit, disable=not self.progress)

    def lap(self, name: str, t0: float) -> None:
        self.timings[name] = round(time.perf_counter() - t0, 3)


def _prepare(archive, out: Path, *, index, channel, queries, bits, ks, seed, gamma, rerank, quick,
             progress) -> Run:
    """Check the arguments, read the features, draw the queries, their masks and Euclidean distances."""
    p = QUICK if quick else FULL
    n_queries = int(queries if queries is not None else (QUICK["queries"] if quick else 400))
    bits = _parse_list(bits if bits is not None else (QUICK["bits"] if quick else DEFAULT_BITS), "bits", 1, 16384)
    ks_asked = _parse_list(ks if ks is not None else (QUICK["ks"] if quick else DEFAULT_KS), "ks", 1)
    if n_queries < 2:
        raise InputError(f"the number of queries must be at least 2, not {n_queries}", param="queries")
    if len(archive) < 3:
        raise InputError(f"archive {archive.path} has {len(archive)} slices; an evaluation needs more")
    t0 = time.perf_counter()
    if progress:
        tqdm.write("evaluate: features", file=sys.stderr)
    fs = feature_set(archive, channel=channel, index=index, progress=progress)
    patients = archive.table()["patient_id"].astype(str)
    candidates = np.flatnonzero(fs.valid)
    q = draw_queries(candidates, n_queries, seed)
    masks = overlap.exclusion_masks(patients, q, candidates)
    ks_used = overlap.usable_ks(ks_asked, masks)
    if not ks_used:
        raise InputError(f"no k in {ks_asked} fits: some query has fewer candidate slices of other patients "
                         f"than the smallest k; use a larger archive or smaller numbers of neighbours", param="ks")
    X = np.nan_to_num(fs.X)
    run = Run(archive, out, p, fs, X, q, candidates, patients, masks, ks_asked, ks_used, _k_ref(ks_used),
              overlap.euclidean_distances(X, q), bits, gamma, seed, max(int(rerank), max(ks_used)), progress)
    run.lap("features_s", t0)
    return run


def _overlap_section(r: Run, figs: dict) -> dict:
    """Section 1: kernel-LSH Dice over the code lengths, and the named index's own hasher's Dice."""
    t0 = time.perf_counter()
    r.say(f"overlap of Hamming and Euclidean k-NN: {len(r.q)} queries, {len(r.bits)} code lengths, k {r.ks}")
    with r.bar(len(r.bits), "code lengths", "length") as bar:
        ov = overlap.hamming_overlap(r.X, r.q, r.eu, r.masks, r.bits, r.ks, gamma=r.gamma, seed=r.seed,
                                     fit_rows=r.candidates, progress=bar)
    summary = overlap.summarise(ov["per_query"])
    figs["violins"] = figures.violins(ov["per_query"], r.bits, r.k_ref, r.out / "overlap-violins.png").name
    figs["overlap_vs_k"] = figures.overlap_vs_k(summary, r.bits, r.ks, r.out / "overlap-vs-k.png").name
    index = None
    if r.fs.hasher is not None:
        r.say(f"overlap of index {r.fs.index}'s own codes ({type(r.fs.hasher).__name__}, {r.fs.index_bits} bits)")
        index = overlap.index_overlap(r.fs.hasher, r.fs.index, r.X, r.q, r.eu, r.masks, r.ks)
    r.lap("overlap_s", t0)
    return {"gamma": ov["gamma"], "summary": summary, "per_query_dice": overlap.rounded(ov["per_query"]),
            "index": index}


def _distances_section(r: Run, figs: dict) -> dict:
    """Section 2: Hamming against Euclidean distance, and the gamma sweep."""
    t0 = time.perf_counter()
    r.say("Hamming against Euclidean distance; gamma sweep")
    hve = dist_mod.hamming_vs_euclidean(r.X, r.candidates, list(SCATTER_BITS), gamma=r.gamma, seed=r.seed,
                                        n_pairs=r.p["pairs"])
    figs["scatter"] = figures.hamming_scatter(hve, r.out / "hamming-vs-euclidean.png").name
    with r.bar(len(r.p["gamma_factors"]), "gamma sweep", "gamma") as bar:
        sweep = dist_mod.gamma_sweep(r.X, r.candidates, r.q, r.eu, r.masks["included"], list(r.p["gamma_factors"]),
                                     n_bits=256, k=r.k_ref, seed=r.seed, n_pairs=r.p["pairs"], progress=bar)
    figs["gamma"] = figures.gamma_sweep(sweep, r.out / "gamma-sweep.png").name
    r.lap("distances_s", t0)
    return {"gamma": hve["gamma"], "pairs": int(len(hve["euclidean"])),
            "per_bits": {b: {"rms_deviation": d["rms_deviation"], "spearman": d["spearman"],
                             "mean_fraction": float(np.mean(d["hamming_fraction"]))}
                         for b, d in hve["per_bits"].items()},
            "gamma_sweep": sweep}


def _relevance_section(r: Run, figs: dict, sets: list) -> tuple[dict, np.ndarray]:
    """Section 5: organ-set and dose relevance of Euclidean, Hamming, re-ranked and random lists; also
    returns the codes of every archive row (the Hamming method's)."""
    t0 = time.perf_counter()
    rel_bits = r.fs.index_bits or 256
    r.say(f"cross-patient relevance and dose from neighbours ({rel_bits} bits, re-rank depth {r.rerank})")
    codes = method_hasher(r.fs, r.X, r.candidates, rel_bits, r.gamma, r.seed).transform(r.X)
    ex = r.masks["excluded"]
    kmax = max(r.ks)
    short = hamming_lists(codes, r.q, ex, relevance.rerank_depth(ex, kmax, r.rerank))
    lists = {"euclidean": relevance.topk(r.eu, ex, kmax), "hamming": short[:, :kmax],
             "rerank": relevance.reranked(short, r.eu, kmax), "random": relevance.random_topk(ex, kmax, r.seed)}
    organ = {"relevant_jaccard": relevance.RELEVANT_JACCARD, "n_queries": 0, "methods": {}}
    for m, L in lists.items():
        s = relevance.organ_scores(L, r.q, sets, r.ks)
        organ["n_queries"] = s["n_queries"]
        organ["methods"][m] = {"jaccard": s["jaccard"], "precision": s["precision"]}
    dose = relevance.dose_scores(r.archive, lists, r.q, r.ks)
    dose["dose_in_features"] = "dose" in r.fs.models
    figs["relevance"] = figures.relevance(organ, dose, r.ks, r.out / "relevance.png").name
    r.lap("relevance_s", t0)
    return {"bits": rel_bits, "rerank": r.rerank, "organ": organ, "dose": dose}, codes


def _hashers_section(r: Run, sets: list, quick: bool) -> dict:
    """Section 7: Dice@k, fit time and usefulness of every hasher at a few code lengths."""
    t0 = time.perf_counter()
    hb = (16, 64) if quick else overlap.HASHER_BITS
    r.say(f"hashers compared at {list(hb)} bits")
    ex = r.masks["excluded"]

    def usefulness(ham: np.ndarray) -> dict:
        """Section 5's scores at k = 10 for one hasher's codes (other patients' slices only)."""
        top = relevance.topk(ham, ex, USEFUL_K)
        org = relevance.organ_scores(top, r.q, sets, [USEFUL_K])
        mae = relevance.dose_scores(r.archive, {"h": top}, r.q, [USEFUL_K])
        return {"organ_jaccard": org["jaccard"][str(USEFUL_K)], "dose_mae": mae["mae"]["h"][str(USEFUL_K)],
                "dose_mae_pdm": mae["mae_pdm"]["h"][str(USEFUL_K)]}

    with r.bar(4 * len(hb), "hashers", "fit") as bar:
        cmp = overlap.compare_hashers(r.X, r.q, r.eu, r.masks["included"], r.k_ref, bits=hb, seed=r.seed,
                                      fit_rows=r.candidates, trained_epochs=2 if quick else 10, progress=bar,
                                      usefulness=usefulness)
    cmp["usefulness_k"] = USEFUL_K
    r.lap("hashers_s", t0)
    return cmp


def _dose_loo_section(r: Run, index: str | None, dose_k: int, slice_dose: dict) -> dict:
    """Section 6: dose from similar patients, leave-one-patient-out, in the named (or only) index."""
    t0 = time.perf_counter()
    names = list_indexes(r.archive)
    loo_index = index or (names[0] if len(names) == 1 else None)
    if loo_index is None:
        raise InputError("dose prediction searches patients in an index: name one of the indexes "
                         f"(indexes: {', '.join(names) or 'none'})", param="index")
    r.say(f"dose from similar patients, leave-one-patient-out (index {loo_index}, k {dose_k})")
    loo = leave_one_out(r.archive, index=loo_index, k=dose_k, progress=r.progress)
    loo["slice_level_euclidean_top10_pdm"] = (slice_dose["mae_pdm"]["euclidean"].get("10")
                                              if slice_dose.get("mae_pdm") else None)
    r.say("planning-time dose (geometry, neighbours, dose model), leave-one-patient-out")
    loo["planned"] = planned_leave_one_out(r.archive, k=dose_k, index=loo_index, seed=r.seed, figures=r.out,
                                           progress=r.progress)
    r.lap("dose_prediction_s", t0)
    return loo


def evaluate_dose(archive, out: str | Path, *, index: str | None = None, k: int = 10, folds: int = 5, seed: int = 0,
                  progress: bool = True, command: str | None = None) -> dict:
    """``medhash evaluate --dose-only``: the dose-prediction section alone, no auto-encoder needed.

    Planning-time methods (:mod:`.doseplan`) always; with an index (``index``, else the archive's only
    one, else none) also the slice-pasting methods (:mod:`.doseloo`), neighbours by CT and the slice-level
    comparison of :mod:`.doseslices`. Writes
    ``metrics.json``, ``report.html`` and the figures into ``out``; returns the metrics."""
    t_start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = list_indexes(archive)
    index = index or (names[0] if len(names) == 1 else None)
    section = leave_one_out(archive, index=index, k=k, progress=progress) if index else {"k": k, "patients": []}
    section["planned"] = planned_leave_one_out(archive, k=k, folds=folds, index=index, seed=seed, figures=out,
                                               progress=progress)
    if index:
        section["slice_level"] = slice_level_transfer(archive, index, k=k, seed=seed, progress=progress)
    metrics = jsonable({"schema": SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": command,
                        "archive": {"path": str(archive.path), "patients": len(archive.patients()),
                                    "slices": int(len(archive))},
                        "dose_prediction": section, "elapsed_s": {"total_s": round(time.perf_counter() - t_start, 3)}})
    write_json_atomic(out / "metrics.json", metrics)
    write_dose_report(metrics, out / "report.html")
    return metrics


def evaluate(archive, out: str | Path, *, index: str | None = None, channel: str | None = None,
             queries: int | None = None, bits=None, ks=None, seed: int = 0, gamma: float | str = "auto",
             rerank: int = 500, quick: bool = False, progress: bool = True, command: str | None = None,
             dose_prediction: bool = False, dose_k: int = 10, compare_hashers: bool = False) -> dict:
    """Run the evaluation and write ``report.html``, ``metrics.json`` and the PNGs into ``out``.

    Parameters
    ----------
    archive : an open :class:`~medhash.store.Archive` with trained model(s).
    out : output folder (created).
    index : evaluate this index: its features (models, scales and weights) and its own fitted hasher ...
    channel : ... or the features of the newest model(s) of ``"ct"``, ``"dose"`` or ``"ct+dose"`` (default ct).
    queries : number of query slices (default 400; quick 40), drawn with ``seed``.
    bits : code lengths of the overlap analysis (default 1, 10, 100, 1000, 10000).
    ks : numbers of neighbours (default 1, 5, 10, 20, 50, 100); those larger than some query's
        candidates are dropped (reported under ``parameters.ks_dropped``).
    gamma : kernel width of every kernel-LSH hasher, or ``"auto"`` (4 / median squared distance of pairs).
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
    r = _prepare(archive, out, index=index, channel=channel, queries=queries, bits=bits, ks=ks, seed=seed,
                 gamma=gamma, rerank=rerank, quick=quick, progress=progress)
    figs: dict = {}
    ov = _overlap_section(r, figs)
    dist = _distances_section(r, figs)
    t0 = time.perf_counter()
    r.say("reconstructions")
    recon, recon_figs = reconstructions(archive, r.fs, r.q, r.patients, out, r.p["examples"])
    figs.update(recon_figs)
    r.lap("reconstructions_s", t0)
    sets = relevance.organ_sets(archive)
    rel, codes = _relevance_section(r, figs, sets)          # before 4: the examples reuse its hasher
    t0 = time.perf_counter()
    r.say("retrieval examples")
    figs["examples"] = examples(archive, r.fs, r.q, r.patients, sets, out, r.p["examples"], rel["bits"], gamma,
                                seed, r.progress)
    r.lap("examples_s", t0)
    t0 = time.perf_counter()
    r.say("timings")
    timing = timings(archive, r.fs, r.X, r.candidates, codes, r.q, r.rerank, r.p["timing_repeats"])
    r.lap("timing_s", t0)
    hasher_cmp = _hashers_section(r, sets, quick) if compare_hashers else None
    dose_loo = _dose_loo_section(r, index, dose_k, rel["dose"]) if dose_prediction else None
    metrics = jsonable({
        "schema": SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": command,
        "archive": {"path": str(archive.path), "patients": int(len(set(r.patients))), "slices": int(len(archive))},
        "features": r.fs.describe(),
        "parameters": {"queries": int(len(r.q)), "seed": int(seed), "bits": r.bits, "ks": r.ks,
                       "ks_dropped": [k for k in r.ks_asked if k not in r.ks], "k_reference": r.k_ref,
                       "gamma": gamma, "quick": bool(quick), "rerank": r.rerank, "pairs": r.p["pairs"]},
        "queries": {"rows": r.q.tolist(), "patients": int(len(set(r.patients[r.q])))},
        "gamma": {"fitted": ov.pop("gamma"), "mode": "auto" if gamma == "auto" else "given"},
        "overlap": ov, "distances": dist, "reconstruction": recon, "relevance": rel, "timing": timing,
        "dose_prediction": dose_loo, "hashers": hasher_cmp, "figures": figs,
        "elapsed_s": {**r.timings, "total_s": round(time.perf_counter() - t_start, 3)}})
    write_json_atomic(out / "metrics.json", metrics)
    write_report(metrics, out / "report.html")
    r.say(f"wrote {out / 'report.html'} in {metrics['elapsed_s']['total_s']:.0f} s")
    return metrics
