"""medhash evaluate --dose-only on the three demo patients: every method scored, k-fold, figures written."""
import json

import numpy as np
from PIL import Image

from medhash.cli import main
from medhash.dose import dose_score


def test_dose_only_scores_every_planning_method_and_draws_the_figures(trained, tmp_path, capsys):
    root, arch = trained
    out = tmp_path / "dose-report"
    assert main(["evaluate", "--archive", str(root / "arch"), "--dose-only", "--folds", "3", "--dose-k", "2",
                 "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "planning-time dose (CT and contours only)" in printed
    m = json.loads((out / "metrics.json").read_text())
    P = m["dose_prediction"]["planned"]
    assert P["patients"] == arch.patients() and P["folds"] == 3
    methods = P["methods"]
    assert {"neighbours by geometry", "model (k-fold by patient)", "predict 0 Gy",
            "geometry mapping, all other patients"} <= set(methods)
    # predicting 0 Gy scores the mean real dose inside the scoring mask, computed here by hand
    for pid, score in methods["predict 0 Gy"]["per_patient"].items():
        rows = np.flatnonzero(arch.table()["patient_id"] == pid)
        body = np.asarray(arch.ct[rows]) > -500
        assert score == np.round(dose_score(np.asarray(arch.dose[rows]), 0 * body, body), 4)
    # the error by band of real dose, for 0 Gy: the mean real dose of the band, over every scored voxel
    t = arch.table()
    rows = np.flatnonzero(t["has_dose"])
    real = np.asarray(arch.dose[rows])[np.asarray(arch.ct[rows]) > -500]
    bands = methods["predict 0 Gy"]["error_by_dose_gy"]
    inside = real[(real >= 20) & (real < 30)]
    assert bands["20-30"]["mae"] == round(float(inside.mean()), 3)
    assert bands["20-30"]["share"] == round(len(inside) / len(real), 4)
    assert abs(sum(b["share"] for b in bands.values()) - 1) < 1e-3
    for name in ("neighbours by geometry", "model (k-fold by patient)"):
        assert methods[name]["dose_score"] < methods["predict 0 Gy"]["dose_score"] / 2
        assert any(k.startswith("D95 ") for k in methods[name]["dvh_errors"])
    figures = P["figures"]
    assert {"dvh best", "dose best", "dvh worst"} <= set(figures)
    for name in figures.values():
        img = Image.open(out / name)
        assert img.size[0] > 500 and len(img.convert("RGB").getcolors(1 << 20)) > 50
    html = (out / "report.html").read_text()
    assert "Planning-time dose" in html and "model (k-fold by patient)" in html


def test_slice_level_transfer_scores_both_rules_on_other_patients_slices(trained):
    from medhash.evaluate.doseslices import slice_level_transfer
    from medhash.retrieval import build_index

    _, arch = trained
    build_index(arch, "ct64", channel="ct", n_bits=64, progress=False)
    r = slice_level_transfer(arch, "ct64", queries=12, k=3, progress=False)
    assert r["queries"] == 12 and r["k"] == 3
    assert 0 < r["anatomy_mae"] < min(r["zero_mae"], r["pixels_mae"])   # 7.8 against 11.7 and 12.7 Gy here


def test_evaluate_reads_the_geometry_channel(trained, tmp_path):
    from medhash.features import train_model

    root, arch = trained
    train_model(arch, "geometry", "shallow", epochs=1, latent_dim=32, seed=0, progress=False)
    out = tmp_path / "geo-report"
    assert main(["evaluate", "--archive", str(root / "arch"), "--channel", "ct+geometry", "--quick", "--out", str(out),
                 "--no-progress"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["features"]["channel"] == "ct+geometry" and m["features"]["dim"] == 64
    assert set(m["features"]["models"]) == {"ct", "geometry"}
