"""The geometry channel end to end: medhash train --channel geometry, the feature cache, geometry and
ct+geometry indexes, archive / DICOM / image queries, patient search and pictures."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from medhash import search
from medhash.cli import main
from medhash.errors import IndexConfigError, InputError
from medhash.features import archive_features, encode_arrays, load_model
from medhash.features.preprocess import preprocessing_constants
from medhash.geometry.slices import archive_geometry_images
from medhash.retrieval import Index, build_index, parse_query, patient_search


@pytest.fixture(scope="module")
def geo(trained):
    """(root, archive) with a geometry model trained by the CLI (1 epoch, latent 32) and two indexes:
    ``geo`` (geometry, 256 bits) and ``ctgeo`` (ct+geometry, 256 bits, geometry weight 2)."""
    root, arch = trained
    a = str(arch.path)
    assert main(["train", "--archive", a, "--channel", "geometry", "--epochs", "1", "--latent-dim", "32",
                 "--no-progress", "--json"]) == 0
    assert main(["index", "--archive", a, "--name", "geo", "--channel", "geometry", "--bits", "256",
                 "--no-progress"]) == 0
    assert main(["index", "--archive", a, "--name", "ctgeo", "--channel", "ct+geometry", "--bits", "256",
                 "--geometry-weight", "2", "--no-progress", "--json"]) == 0
    build_index(arch, "ct256", "ct", 256, seed=0)
    return root, arch


def unique_slice(arch, patient: str) -> int:
    """The slice_index of a slice of ``patient`` with a target whose geometry image no other row shares."""
    table = arch.table()
    images = archive_geometry_images(arch, table["row"])
    flat = images.reshape(len(images), -1)
    for r in np.flatnonzero(table["patient_id"] == patient):
        if (images[r] > 0.9).any() and (np.abs(flat - flat[r]).max(axis=1) > 0).sum() == len(flat) - 1:
            return int(table["slice_index"][r])
    raise AssertionError(f"no slice of {patient} with a unique geometry image")


def test_trained_model_and_feature_cache_encode_geometry_images(geo, capsys):
    _, arch = geo
    model, config = load_model(arch, "geometry-shallow")
    assert config["channel"] == "geometry" and config["latent_dim"] == 32
    assert config["preprocessing"] == preprocessing_constants("geometry")
    assert config["n_train_slices"] + config["n_val_slices"] == len(arch)        # every row, as for ct
    cached = np.asarray(archive_features(arch, "geometry-shallow", progress=False))
    assert cached.shape == (len(arch), 32) and np.isfinite(cached).all()
    rows = np.array([0, 17, 60, len(arch) - 1])
    direct = encode_arrays(model, config, archive_geometry_images(arch, rows))
    np.testing.assert_allclose(cached[rows], direct, rtol=1e-4, atol=1e-5)
    # the ct model's features are a ct model's, not the geometry images'
    ct_model, ct_config = load_model(arch, "ct-shallow")
    np.testing.assert_allclose(np.asarray(archive_features(arch, "ct-shallow", progress=False))[rows],
                               encode_arrays(ct_model, ct_config, np.asarray(arch.ct[rows], np.float32)),
                               rtol=1e-4, atol=1e-5)
    man = json.loads((arch.path / "indexes" / "ctgeo" / "manifest.json").read_text())
    assert set(man["models"]) == {"ct", "geometry"} and man["feature_dim"] == 64
    assert man["weights"] == {"ct": 1.0, "geometry": 2.0} and man["channel"] == "ct+geometry"
    assert Index(arch, "geo").manifest["models"]["geometry"]["name"] == "geometry-shallow"


@pytest.mark.parametrize("index", ["geo", "ctgeo"])
def test_archive_slice_finds_itself_first(geo, index, capsys):
    _, arch = geo
    k = unique_slice(arch, "DEMO002")
    res = search(arch, f"DEMO002:{k}", index=index, k=3, same_patient=True)
    assert (res["results"][0]["patient_id"], res["results"][0]["slice_index"]) == ("DEMO002", k)
    assert res["results"][0]["hamming"] == 0 and res["channel"] == ("geometry" if index == "geo" else "ct+geometry")
    capsys.readouterr()
    assert main(["search", "--archive", str(arch.path), f"DEMO002:{k}", "--index", index, "--k", "2",
                 "--include-same-patient", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["results"][0]["patient_id"], out["results"][0]["slice_index"], out["results"][0]["hamming"]) == \
        ("DEMO002", k, 0)
    # by default the query's own patient is left out
    assert all(r["patient_id"] != "DEMO002" for r in search(arch, f"DEMO002:{k}", index=index, k=5)["results"])


def test_dicom_series_query_reads_its_contours(geo):
    root, arch = geo
    folder = root / "demo" / "DEMO002"
    k = unique_slice(arch, "DEMO002")
    q = parse_query(arch, folder, slice_index=k, geometry=True)
    row = arch.get("DEMO002", k).row
    np.testing.assert_allclose(q.geometry, archive_geometry_images(arch, [row])[0], atol=1e-6)
    assert parse_query(arch, folder, slice_index=k).geometry is None        # a ct query reads no contours
    by_file = search(arch, folder, index="geo", slice_index=k, k=3, same_patient=True)
    by_name = search(arch, f"DEMO002:{k}", index="geo", k=3, same_patient=True)
    assert by_file["query"]["type"] == "dicom"
    assert by_file["results"][0] == by_name["results"][0]
    assert (by_file["results"][0]["patient_id"], by_file["results"][0]["slice_index"]) == ("DEMO002", k)


def test_queries_without_contours_are_refused(geo, tmp_path, capsys):
    root, arch = geo
    bare = tmp_path / "ct-only"
    bare.mkdir()
    for f in (root / "demo" / "DEMO001").glob("CT_*.dcm"):
        shutil.copy(f, bare / f.name)
    for index in ("geo", "ctgeo"):
        with pytest.raises(InputError, match="geometry index needs the contours") as err:
            search(arch, bare, index=index, slice_index=10, k=2)
        assert err.value.param == "query" and "no RTSTRUCT" in str(err.value)
    one = sorted(bare.glob("CT_*.dcm"))[10]
    with pytest.raises(InputError, match="single CT file") as err:
        search(arch, one, index="geo", k=2)
    assert err.value.param == "query"
    np.save(tmp_path / "q.npy", arch.get("DEMO001", 10).ct)
    with pytest.raises(InputError, match="picture and has none") as err:
        search(arch, tmp_path / "q.npy", index="ctgeo", k=2)
    assert err.value.param == "query"
    # the command line: a clear message and exit code 1; the same folder still searches a ct index
    assert main(["search", "--archive", str(arch.path), str(bare), "--slice", "10", "--index", "geo"]) == 1
    assert "needs the contours" in capsys.readouterr().err
    assert main(["search", "--archive", str(arch.path), str(bare), "--slice", "10", "--index", "ct256",
                 "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["results"]) == 10


def test_patient_search_and_picture_with_a_geometry_index(geo, tmp_path, capsys):
    root, arch = geo
    res = patient_search(arch, patient="DEMO001", index="ctgeo", k=2)
    assert [r["rank"] for r in res["results"]] == [1, 2] and res["channel"] == "ct+geometry"
    assert {r["patient_id"] for r in res["results"]} == {"DEMO002", "DEMO003"}
    # a DICOM series folder with its RTSTRUCT, its archive patient kept: the archive's own copy comes first
    folder = patient_search(arch, series=root / "demo" / "DEMO001", index="geo", k=3, same_patient=True)
    assert folder["query"]["type"] == "dicom" and folder["results"][0]["patient_id"] == "DEMO001"
    assert folder["results"][0]["patient_score"] > 0.9
    assert main(["search", "--archive", str(arch.path), "--patient", "DEMO003", "--index", "geo", "--k", "2",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["channel"] == "geometry" and len(out["results"]) == 2
    png = tmp_path / "grid.png"
    assert main(["search", "--archive", str(arch.path), "DEMO001:20", "--index", "geo", "--k", "3", "--png",
                 str(png)]) == 0
    assert png.stat().st_size > 10_000 and "picture:" in capsys.readouterr().out


def test_model_of_another_channel_is_refused(geo):
    _, arch = geo
    with pytest.raises(IndexConfigError, match="is a ct model, not a geometry model"):
        build_index(arch, "bad", "geometry", 64, models={"geometry": "ct-shallow"})


def test_archive_slice_search_of_a_geometry_index_loads_no_model_stack(geo):
    _, arch = geo
    heavy = ("torch", "scipy.ndimage", "pydicom", "matplotlib.pyplot")
    code = ("import sys, io, contextlib, json\nimport medhash.cli\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            f"    rc = medhash.cli.main(['search', '--archive', {str(arch.path)!r}, 'DEMO001:12', '--index', 'ctgeo',"
            " '--k', '3', '--json'])\n"
            f"print(json.dumps([rc, [m for m in {heavy!r} if m in sys.modules]]))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [0, []]
