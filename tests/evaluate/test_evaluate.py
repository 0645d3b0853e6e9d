"""medhash evaluate: the pieces on hand-made data, and the whole report on a tiny archive."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from medhash import Archive
from medhash.ingest import ingest
from medhash.cli import main
from medhash.demo import write_demo_cohort
from medhash.evaluate import distances, evaluate, overlap, relevance
from medhash.evaluate.data import feature_set
from medhash.evaluate.metrics import jaccard_from_dice
from medhash.evaluate.ranking import hamming_lists
from medhash.hashing import ITQ, KernelLSH, hamming_distances, make_hasher
from medhash.retrieval import Index, build_index

SCHEMA_DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics-schema.md"


# ------------------------------------------------------------------ overlap on hand-made data
def test_overlap_table_hand_made():
    # 1 query (row 0) over 6 items; Euclidean order 1, 2, 3, 4, 5; Hamming: 1 and 3 at 0, 2/4/5 tied at 1
    eu = np.array([[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]])
    ham = np.array([[0, 0, 1, 0, 1, 1]])
    excluded = np.zeros((1, 6), dtype=bool)
    excluded[0, 0] = True                                  # the query itself
    d = overlap.overlap_table(eu, ham, excluded, [1, 2, 3])
    # k=1: truth {1}; Hamming ties {1, 3} at 0 for one slot -> expected overlap 1/2
    assert d[1][0] == pytest.approx(0.5)
    # k=2: truth {1, 2}; Hamming top-2 = {1, 3} exactly -> overlap 1 -> Dice 1/2
    assert d[2][0] == pytest.approx(0.5)
    # k=3: truth {1, 2, 3}; {1, 3} sure + 1 slot among {2, 4, 5} -> 2 + 1/3
    assert d[3][0] == pytest.approx((2 + 1 / 3) / 3)
    assert jaccard_from_dice(d[3][0]) == pytest.approx((7 / 9) / (2 - 7 / 9))


def test_exclusion_masks_and_usable_ks():
    patients = np.array(["a", "a", "a", "b", "b", "c"])
    queries = np.array([0, 3])
    candidates = np.array([0, 1, 2, 3, 4])                 # row 5 has no features
    m = overlap.exclusion_masks(patients, queries, candidates)
    assert m["included"][0].tolist() == [True, False, False, False, False, True]
    assert m["excluded"][0].tolist() == [True, True, True, False, False, True]
    assert m["excluded"][1].tolist() == [False, False, False, True, True, True]
    # query 0 has 2 other-patient candidates (3, 4): k = 5 cannot be filled
    assert overlap.usable_ks([1, 2, 5], m) == [1, 2]


def test_mean_ci():
    s = overlap.mean_ci(np.array([0.0, 1.0, 0.0, 1.0]))
    assert s["mean"] == 0.5
    half = 1.96 * np.std([0, 1, 0, 1], ddof=1) / 2
    assert s["ci95"] == pytest.approx([0.5 - half, 0.5 + half])


# ------------------------------------------------------------------ distances and gamma
def test_scatter_follows_the_closed_form():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 8)).astype(np.float32)
    out = distances.hamming_vs_euclidean(X, np.arange(300), [512, 4096], seed=1, n_pairs=400)
    dev512 = out["per_bits"]["512"]["rms_deviation"]
    dev4096 = out["per_bits"]["4096"]["rms_deviation"]
    # binomial spread around the expectation: about sqrt(0.25 / n)
    assert dev4096 < 0.015 < dev512 < 0.04
    assert out["per_bits"]["4096"]["spearman"] > 0.8


def test_gamma_regimes_from_the_closed_form():
    r = np.linspace(1.0, 3.0, 50)
    assert distances.regime(1e4, r, 256) == "flat"
    assert distances.regime(1e-8, r, 256) == "all ties"
    assert distances.regime(4 / 4.0, r, 256) == "useful"


def test_gamma_sweep_shows_both_regimes():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((200, 6)).astype(np.float32)
    q = np.arange(0, 200, 10)
    eu = overlap.euclidean_distances(X, q)
    ex = np.zeros((len(q), 200), dtype=bool)
    ex[np.arange(len(q)), q] = True
    sw = distances.gamma_sweep(X, np.arange(200), q, eu, ex, [1e-7, 1.0, 1e4], n_bits=256, k=10, seed=0,
                               n_pairs=300)
    tiny, auto, huge = sw["points"]
    assert tiny["regime"] == "all ties" and tiny["tied_fraction"] > 0.9
    assert huge["regime"] == "flat" and abs(huge["mean_fraction"] - distances.SATURATION) < 0.03
    assert auto["dice"] > max(tiny["dice"], huge["dice"]) + 0.2


# ------------------------------------------------------------------ relevance
def test_topk_ties_by_row_and_rerank():
    d = np.array([[3.0, 1.0, 1.0, 0.0, 1.0]])
    ex = np.zeros((1, 5), dtype=bool)
    assert relevance.topk(d, ex, 3)[0].tolist() == [3, 1, 2]
    ex[0, 3] = True
    assert relevance.topk(d, ex, 2)[0].tolist() == [1, 2]
    eu = np.array([[0.5, 9.0, 0.1, 0.0, 0.2]])
    # Hamming top-3 among allowed = {1, 2, 4}; by Euclidean: 2, 4, 1
    assert relevance.rerank_depth(ex, 2, 3) == 3 and relevance.rerank_depth(ex, 2, 9) == 4
    assert relevance.reranked(relevance.topk(d, ex, 3), eu, 2)[0].tolist() == [2, 4]


def test_hamming_lists_rank_as_the_product_does():
    """The evaluation's Hamming lists (medhash.retrieval.hamming_topk) equal a brute-force ranking: allowed
    rows only, nearest first, ties by row."""
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 4, (60, 1)).astype(np.uint8)          # 2 bits used: many ties
    q = np.array([0, 7, 33])
    ex = rng.random((3, 60)) < 0.3
    ex[np.arange(3), q] = True
    d = hamming_distances(codes[q], codes)
    assert np.array_equal(hamming_lists(codes, q, ex, 12), relevance.topk(d, ex, 12))


def test_organ_scores_hand_made():
    sets = [frozenset({"PTV70", "SpinalCord"}), frozenset({"PTV70"}), frozenset({"SpinalCord", "PTV70"}),
            frozenset(), frozenset({"Brainstem"})]
    lists = np.array([[2, 1, 4], [0, 2, 1]])
    s = relevance.organ_scores(lists, np.array([0, 3]), sets, [1, 3])   # query 3 has no structure: left out
    assert s["n_queries"] == 1
    assert s["jaccard"]["1"] == 1.0
    assert s["jaccard"]["3"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert s["precision"]["3"] == pytest.approx(2 / 3)                 # Jaccard >= 0.5: rows 2 and 1


# ------------------------------------------------------------------ a tiny archive
@pytest.fixture(scope="module")
def tiny(trained):
    """The conftest's trained demo archive (3 patients, CT and dose models)."""
    return trained


def test_dose_from_neighbours_is_exact(tiny):
    _, arch = tiny
    rows = np.flatnonzero(arch.table()["has_dose"])[[3, 40, 90]]
    # a list made of the query itself predicts its dose exactly; predicting 0 scores the mean dose in the body
    lists = {"self": np.repeat(rows[:, None], 4, axis=1)}
    d = relevance.dose_scores(arch, lists, rows, [1, 4])
    assert d["n_queries"] == 3 and d["possible_dose_mask_queries"] == 0
    assert d["mae"]["self"]["1"] == pytest.approx(0.0) and d["mae"]["self"]["4"] == pytest.approx(0.0)
    body = np.asarray(arch.ct[rows]) > -500
    zero = np.mean([np.asarray(arch.dose[r])[m].mean() for r, m in zip(rows, body)])
    assert d["zero"] == pytest.approx(zero, rel=1e-6)
    # the mean of two other slices' doses, by hand
    other = np.array([[rows[1], rows[2]], [rows[0], rows[2]], [rows[0], rows[1]]])
    d2 = relevance.dose_scores(arch, {"m": other}, rows, [2])
    want = np.mean([np.abs((arch.dose[o[0]] + arch.dose[o[1]]) / 2 - arch.dose[r])[m].mean()
                    for r, o, m in zip(rows, other, body)])
    assert d2["mae"]["m"]["2"] == pytest.approx(want, rel=1e-6)


def _stable(m: dict) -> dict:
    m = json.loads(json.dumps(m))
    for key in ("created", "elapsed_s", "timing", "command"):
        m.pop(key)
    return m


def test_evaluate_quick_writes_every_file(tiny, tmp_path):
    _, arch = tiny
    out = tmp_path / "report"
    assert main(["evaluate", "--archive", str(arch.path), "--quick", "--out", str(out), "--no-progress"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    html = (out / "report.html").read_text()
    pngs = sorted(p.name for p in out.glob("*.png"))
    for need in ("overlap-violins.png", "overlap-vs-k.png", "hamming-vs-euclidean.png", "gamma-sweep.png",
                 "reconstruction-ct.png", "reconstruction-3d.png", "relevance.png", "retrieval-ct-1.png",
                 "retrieval-joint-1.png"):
        assert need in pngs
    for p in pngs:                                      # each PNG is shown in the report and is an image
        assert f'src="{p}"' in html
        assert (out / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (out / p).stat().st_size > 10_000
    assert m["schema"] == "medhash-evaluate/1"
    assert m["parameters"]["quick"] and m["parameters"]["queries"] == 40
    # Dice grows with the code length; every value is a probability
    d = m["overlap"]["summary"]["included"]["dice"]
    k = str(m["parameters"]["k_reference"])
    assert d["1"][k]["mean"] < d["1000"][k]["mean"]
    assert all(0 <= v <= 1 for by_k in m["overlap"]["per_query_dice"]["excluded"].values()
               for vals in by_k.values() for v in vals)
    # the documented schema names every top-level key and every section key
    doc = SCHEMA_DOC.read_text()
    for key in m:
        assert f"`{key}`" in doc, key
    for sec in ("parameters", "features", "overlap", "distances", "relevance", "timing", "reconstruction"):
        for key in m[sec]:
            if not re.fullmatch(r"ct|dose|ct\+dose", key):
                assert f"`{key}`" in doc, f"{sec}.{key}"
    # deterministic for a seed
    out2 = tmp_path / "again"
    assert main(["evaluate", "--archive", str(arch.path), "--quick", "--out", str(out2), "--no-progress"]) == 0
    assert _stable(json.loads((out2 / "metrics.json").read_text())) == _stable(m)


def test_evaluate_an_index_and_errors(tiny, tmp_path, capsys):
    _, arch = tiny
    build_index(arch, "joint64", "ct+dose", 64, seed=0)
    out = tmp_path / "joint"
    assert main(["evaluate", "--archive", str(arch.path), "--index", "joint64", "--queries", "10", "--bits", "8,64",
                 "--k", "1,5,1000", "--out", str(out), "--no-progress"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["features"]["channel"] == "ct+dose" and m["features"]["index"] == "joint64"
    assert m["relevance"]["bits"] == 64 and m["parameters"]["ks_dropped"] == [1000]
    assert m["relevance"]["dose"]["dose_in_features"] is True
    assert "not a fair forecast" in (out / "report.html").read_text()
    capsys.readouterr()
    assert main(["evaluate", "--archive", str(arch.path), "--index", "joint64", "--channel", "ct",
                 "--out", str(out)]) == 1
    assert "not both" in capsys.readouterr().err
    assert main(["evaluate", "--archive", str(arch.path), "--bits", "0,10", "--out", str(out)]) == 1
    assert "the code lengths must be between 1 and 16384" in capsys.readouterr().err


def test_evaluate_without_a_model_says_what_to_do(tmp_path, capsys):
    write_demo_cohort(tmp_path / "demo", n_patients=2, rows=64, seed=3)
    arch = Archive(tmp_path / "arch", create=True)
    ingest(arch, [tmp_path / "demo"])
    assert main(["evaluate", "--archive", str(arch.path), "--quick", "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert "medhash train" in err


def test_dose_prediction_leave_one_patient_out(tiny, tmp_path):
    from medhash.evaluate.doseloo import leave_one_out, patient_truth
    from medhash.dose.scores import dose_score
    _, arch = tiny
    build_index(arch, "ct32", "ct", 32, seed=0)
    res = leave_one_out(arch, index="ct32", k=1, rerank=50, progress=False)
    assert res["patients"] == ["DEMO001", "DEMO002", "DEMO003"]
    zero = np.mean([dose_score(t["dose"], 0 * t["dose"], t["mask"])
                    for t in (patient_truth(arch, p) for p in res["patients"])])
    assert res["methods"]["predict 0 Gy"]["dose_score"] == pytest.approx(zero)
    for name, v in res["methods"].items():
        assert set(v["per_patient"]) == set(res["patients"]) and v["dvh_score"] >= 0
        assert np.isfinite(v["dose_score"]) and v["dose_score"] >= 0
    out = tmp_path / "r"
    m = evaluate(
        arch, out, index="ct32", quick=True, progress=False, dose_prediction=True, dose_k=1)
    assert m["dose_prediction"]["k"] == 1
    assert "Dose from similar patients" in (out / "report.html").read_text()


def test_compare_hashers_quick(tiny, tmp_path):
    _, arch = tiny
    m = evaluate(arch, tmp_path / "h", channel="ct", quick=True, progress=False, compare_hashers=True)
    H = m["hashers"]
    assert H["bits"] == [16, 64] and set(H["hashers"]) == {"kernel-lsh", "pca-sign", "itq", "trained"}
    assert H["hashers"]["itq"]["dice"]["64"] is None                  # 32 features: at most 32 bits
    assert 0 <= H["hashers"]["itq"]["dice"]["16"] <= 1 and H["hashers"]["trained"]["fit_s"]["64"] > 0
    assert "Hashers compared" in (tmp_path / "h" / "report.html").read_text()
    # usefulness per hasher: null exactly where the hasher cannot give the bits; real scores elsewhere
    assert H["usefulness_k"] == 10
    for name, r in H["hashers"].items():
        for b in ("16", "64"):
            u = r["usefulness"][b]
            assert (u is None) == (r["dice"][b] is None), (name, b)
            if u is not None:
                assert 0 <= u["organ_jaccard"] <= 1
                # the other patients' doses predict the query's better than 0 Gy does
                assert 0 <= u["dose_mae"] <= 100  # Gy; whether it beats 0 Gy depends on the archive
    assert "J@10 / dose MAE@10" in (tmp_path / "h" / "report.html").read_text()


def test_compare_hashers_usefulness_sees_each_hashers_own_distances():
    """The usefulness hook gets exactly the Hamming distances of that hasher's codes (same seed, fit)."""
    from medhash.evaluate.overlap import compare_hashers
    rng = np.random.default_rng(5)
    X = rng.normal(size=(120, 8)).astype(np.float32)
    q = np.arange(10)
    eu = np.linalg.norm(X[q, None] - X[None], axis=2)
    seen = []
    out = compare_hashers(X, q, eu, np.zeros_like(eu, dtype=bool), 5, bits=(16,), seed=3, trained_epochs=1,
                          usefulness=lambda ham: seen.append(ham) or {"mean": float(ham.mean())})
    h = make_hasher("kernel-lsh", 16, seed=3).fit(X)
    expected = hamming_distances(h.transform(X[q]), h.transform(X))
    assert np.array_equal(seen[0], expected)
    assert out["hashers"]["kernel-lsh"]["usefulness"]["16"] == {"mean": float(expected.mean())}
    assert out["hashers"]["itq"]["usefulness"]["16"] is None  # 8 features: ITQ gives at most 8 bits


def test_evaluating_an_itq_index_measures_that_index(tiny, tmp_path):
    """evaluate(index=NAME) of an ITQ index reports the Dice and the relevance of that index's own codes
    (its fitted ITQ), not those of kernel LSH fitted on the same features."""
    _, arch = tiny
    build_index(arch, "itq16", "ct", 16, seed=0, hasher="itq")
    m = evaluate(arch, tmp_path / "itq", index="itq16", queries=12, bits=[16], ks=[1, 5, 10], quick=True,
                 progress=False)
    hasher = Index(arch, "itq16").hasher
    assert isinstance(hasher, ITQ)
    # the same features, queries and masks as the evaluation
    fs = feature_set(arch, index="itq16", progress=False)
    X, q, ks = np.nan_to_num(fs.X), np.array(m["queries"]["rows"]), m["parameters"]["ks"]
    masks = overlap.exclusion_masks(arch.table()["patient_id"].astype(str), q, np.flatnonzero(fs.valid))
    eu = overlap.euclidean_distances(X, q)

    def dice(codes):
        ham = hamming_distances(codes[q], codes)
        return {mode: {k: float(v.mean()) for k, v in overlap.overlap_table(eu, ham, ex, ks).items()}
                for mode, ex in masks.items()}

    itq_codes = hasher.transform(X)
    lsh = dice(KernelLSH(n_bits=16, seed=0).fit(X[fs.valid]).transform(X))
    itq = dice(itq_codes)
    assert lsh != itq                                   # the two hashers can be told apart here
    got = m["overlap"]["index"]
    assert (got["name"], got["bits"], got["hasher"]["class"]) == ("itq16", 16, "ITQ")
    for mode in ("included", "excluded"):
        for k in ks:
            assert got["summary"][mode]["dice"]["16"][str(k)]["mean"] == pytest.approx(itq[mode][k], abs=1e-12)
    # the relevance section's Hamming results are the ITQ codes' nearest other-patient slices
    top = relevance.topk(hamming_distances(itq_codes[q], itq_codes), masks["excluded"], max(ks))
    want = relevance.organ_scores(top, q, relevance.organ_sets(arch), ks)["jaccard"]
    assert m["relevance"]["organ"]["methods"]["hamming"]["jaccard"] == pytest.approx(want)
    assert m["relevance"]["bits"] == 16 and m["timing"]["code_bits"] == 16
    assert "ITQ hasher (16 bits)" in (tmp_path / "itq" / "report.html").read_text()
