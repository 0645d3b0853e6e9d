"""Calibrated similarity (issue 16 point 2): percentiles among random pairs of different patients, the
kernel-LSH expectation, the verdict, and the absolute score of patient search."""
import json
import shutil

import numpy as np
import pytest

from medhash import Archive, search
from medhash.cli import main
from medhash.demo import DEMO_PROVENANCE
from medhash.hashing import expected_hamming_fraction
from medhash.io.writers import write_ct_series
from medhash.retrieval import Index, Query, build_index, patient_search
from medhash.retrieval.calibration import (CALIBRATION_FILE, VERDICT_PERCENTILE, Calibration, calibration_of,
                                           compute_calibration, expected_fraction, patient_verdict_text)


# ---------------------------------------------------------------------- the numbers, by hand
def _hist(values):
    d, c = np.unique(values, return_counts=True)
    return {"distances": d.tolist(), "counts": c.tolist()}


def test_percentiles_and_quantiles_by_hand():
    c = Calibration({"items": 9, "n_bits": 64, "random": _hist([10, 20, 20, 30, 40]), "nn": _hist([2, 4, 6, 8])})
    assert c.reference_pairs == 5
    assert c.percentile([0, 10, 19, 20, 35, 64]).tolist() == [0.0, 20.0, 20.0, 60.0, 80.0, 100.0]
    three = Calibration({"items": 3, "n_bits": 8, "random": _hist([1, 2, 3]), "nn": _hist([])})
    assert three.rounded_percentile([0, 1, 2, 8]).tolist() == [0.0, 33.33, 66.67, 100.0]
    assert (c.random_quantile(50), c.random_quantile(1), c.nn_quantile(99)) == (20.0, 10.0, 8.0)
    near, far = c.summary(9), c.summary(10)          # 0 % and 20 % of random pairs at or below
    assert (near["verdict"], far["verdict"]) == ("similar", "no similar slice")
    assert far["verdict_text"].startswith("no similar slice in this archive")
    assert (far["reference_pairs"], far["random_median"], far["random_p05"], far["nn_p99"]) == (5, 20.0, 10.0, 8.0)
    assert VERDICT_PERCENTILE == 10.0


def test_expected_fraction_is_the_hashing_closed_form():
    r = np.concatenate([np.linspace(0, 3, 301), [0.7071, 0.70711, 5.0, 40.0]])
    for gamma in (0.5, 2.0, 4.13):
        assert np.abs(expected_fraction(r, gamma) - expected_hamming_fraction(r, gamma)).max() < 1e-12
    assert expected_fraction([0.0], 2.0).tolist() == [0.0]


def test_reference_pairs_are_of_different_patients_and_seeded():
    codes = np.zeros((30, 2), np.uint8)
    codes[10:] = 255                          # patient a: all 0 bits; b and c: all 1 bits
    patients = np.array(["a"] * 10 + ["b"] * 10 + ["c"] * 10)
    data = compute_calibration(codes, patients, 16, n_pairs=1000, nn_sample=30)
    assert data == compute_calibration(codes, patients, 16, n_pairs=1000, nn_sample=30)
    assert data["reference_pairs"] == 1000 and data["items"] == 30
    # a-b and a-c pairs are 16 bits apart, b-c pairs 0: never a pair within one patient (a-a would be 0 too)
    hist = dict(zip(data["random"]["distances"], data["random"]["counts"]))
    assert set(hist) == {0, 16} and 550 < hist[16] < 780        # 2/3 of different-patient pairs involve a
    # nearest other patient: a's slices are 16 from everything else; b's and c's are 0 from each other
    assert dict(zip(data["nn"]["distances"], data["nn"]["counts"])) == {0: 20, 16: 10}
    one = compute_calibration(codes[:10], patients[:10], 16, n_pairs=100)      # one patient: pairs of items
    assert one["reference_pairs"] == 100 and one["nn_sampled"] == 0


def test_patient_verdict_uses_the_median_percentile_of_the_best_patients_pairs():
    pairs = lambda *p: [{"percentile": v} for v in p]  # noqa: E731
    assert patient_verdict_text({"patient_id": "x", "absolute_score": 0.9,
                                 "pairs": pairs(1.0, 2.0, 50.0)})["verdict"] == "similar"
    far = patient_verdict_text({"patient_id": "x", "absolute_score": 0.6, "pairs": pairs(9.0, 12.0, 30.0)})
    assert far["verdict"] == "no similar patient" and "median percentile among random pairs" in far["verdict_text"]
    assert "12.0" in far["verdict_text"]


# ---------------------------------------------------------------------- on the trained demo archive
@pytest.fixture(scope="module")
def arch(trained, tmp_path_factory):
    root, a = trained
    dest = tmp_path_factory.mktemp("calib")
    shutil.copytree(a.path, dest / "arch")
    a = Archive(dest / "arch")
    build_index(a, "ct256", "ct", 256, seed=0)
    build_index(a, "itq32", "ct", 32, hasher="itq", seed=0)
    return a


def _chest(folder, n=12):
    """A chest-like phantom series (body, two lungs, a spine): an anatomy the head-and-neck demo lacks."""
    yy, xx = np.mgrid[:128, :128]
    ell = lambda cy, cx, ry, rx: ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1  # noqa: E731
    vol = np.full((n, 128, 128), -1000, np.int16)
    for k in range(n):
        vol[k][ell(64, 64, 38, 56)] = 20
        vol[k][ell(60, 40, 24, 16)] = -800
        vol[k][ell(60, 88, 24, 16)] = -800
        vol[k][ell(92, 64, 6, 6)] = 700
        vol[k][ell(55, 70, 10 + k % 3, 12)] = 40
    write_ct_series(folder, vol, pixel_spacing=(3.906, 3.906), slice_positions_mm=np.arange(n) * 2.5,
                    origin_xy_mm=(-250, -250), patient_id="CHEST", study_uid="1.2.826.0.1.3680043.8.498.91",
                    series_uid="1.2.826.0.1.3680043.8.498.92", frame_of_reference_uid="1.2.826.0.1.3680043.8.498.93",
                    provenance=DEMO_PROVENANCE)
    return vol


def test_build_writes_the_reference_and_an_index_without_it_computes_the_same(arch):
    idx = Index(arch, "ct256")
    path = idx.path / CALIBRATION_FILE
    stored = json.loads(path.read_text())
    assert stored["items"] == len(idx) and stored["reference_pairs"] == 20_000 and stored["n_bits"] == 256
    pids = arch.table()["patient_id"][idx.rows]
    assert stored == compute_calibration(np.asarray(idx.codes), pids.astype(str), 256)
    path.unlink()                                   # an index built before calibration existed
    try:
        lazy = calibration_of(Index(arch, "ct256"))
        assert lazy.data == stored and not path.exists()    # computed, never written by a search
        assert calibration_of(Index(arch, "ct256")) is lazy  # kept for the process
    finally:
        path.write_text(json.dumps(stored))


def test_each_result_carries_its_percentile_and_expected_hamming(arch):
    stored = json.loads((Index(arch, "ct256").path / CALIBRATION_FILE).read_text())
    ref = np.repeat(stored["random"]["distances"], stored["random"]["counts"])
    res = search(arch, "DEMO001:10", index="ct256", k=5, rerank=20)
    idx = Index(arch, "ct256")
    for r in res["results"]:
        count = int(np.sum(ref <= r["hamming"]))         # rounded half up to 2 decimals
        assert r["percentile"] == (20000 * count + len(ref)) // (2 * len(ref)) / 100
        want = 256 * float(expected_hamming_fraction(r["euclidean"], idx.hasher.gamma_))
        assert r["expected_hamming"] == round(want, 1)
    cal = res["calibration"]
    assert cal["reference_pairs"] == 20_000 and cal["random_median"] == float(np.percentile(ref, 50, method="inverted_cdf"))
    assert cal["verdict"] == "similar" and res["results"][0]["percentile"] < VERDICT_PERCENTILE
    itq = search(arch, "DEMO001:10", index="itq32", k=3)
    assert all("expected_hamming" not in r and 0 <= r["percentile"] <= 100 for r in itq["results"])


def test_an_unrelated_image_gets_the_verdict(arch, tmp_path):
    vol = _chest(tmp_path / "chest")
    for image in (np.zeros((128, 128), np.float32), vol[0].astype(np.float32)):    # uniform water, a chest
        res = search(arch, Query(kind="image", info={"type": "image", "file": "x"}, ct=image), index="ct256", k=3)
        assert res["results"][0]["percentile"] >= VERDICT_PERCENTILE
        assert res["calibration"]["verdict"] == "no similar slice"
        assert res["calibration"]["verdict_text"].startswith("no similar slice in this archive")


def test_patient_search_absolute_score(arch, tmp_path):
    res = patient_search(arch, patient="DEMO001", index="ct256", k=2)
    m = res["query_slices_searched"]
    for r in res["results"]:
        pct = [p["percentile"] for p in r["pairs"]]
        assert len(pct) == r["matched_slices"]
        want = (sum(pct) + 100.0 * (m - len(pct))) / m
        assert r["match_percentile"] == pytest.approx(want, abs=0.006)
        assert r["absolute_score"] == round(1 - r["match_percentile"] / 100, 4)
    # DEMO002's best patient's matched slices: median percentile 3.7 (DEMO001's: 11.9 in this 3-patient
    # archive of a one-epoch model: a real but distant neighbour)
    near = patient_search(arch, patient="DEMO002", index="ct256", k=2)
    assert near["calibration"]["verdict"] == "similar"
    _chest(tmp_path / "chest")
    far = patient_search(arch, series=tmp_path / "chest", index="ct256", k=2)
    assert far["calibration"]["verdict"] == "no similar patient"
    assert far["calibration"]["verdict_text"].startswith("no similar patient in this archive")


def test_the_command_line_prints_percentiles_and_the_verdict(arch, capsys, tmp_path):
    assert main(["search", "--archive", str(arch.path), "DEMO001:10", "--index", "ct256", "--k", "3"]) == 0
    out = capsys.readouterr().out
    head = next(line for line in out.splitlines() if line.lstrip().startswith("rank"))
    assert head.split()[-2:] == ["pct", "expected"]
    res = search(arch, "DEMO001:10", index="ct256", k=3)
    first = next(line for line in out.splitlines() if line.split()[:1] == ["1"])
    assert first.split()[-2:] == [f"{res['results'][0]['percentile']:.2f}", f"{res['results'][0]['expected_hamming']:.1f}"]
    assert f"verdict: {res['calibration']['verdict_text']}" in out
    np.save(tmp_path / "water.npy", np.zeros((128, 128), np.float32))
    assert main(["search", "--archive", str(arch.path), str(tmp_path / "water.npy"), "--index", "ct256", "--k", "3"]) == 0
    assert "verdict: no similar slice in this archive" in capsys.readouterr().out
    assert main(["search", "--archive", str(arch.path), "--patient", "DEMO002", "--index", "ct256", "--k", "2"]) == 0
    out = capsys.readouterr().out
    assert "absolute" in out and "verdict: the best patient is closer than random pairs" in out
