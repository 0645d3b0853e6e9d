"""medhash.features: preprocessing, auto-encoders, training, checkpoints and the feature cache.

Small synthetic archives only (three demo phantoms at 96 x 96, about 150 slices): every training
run here is one or two epochs of the shallow model.
"""
import json
import shutil

import numpy as np
import pytest
import torch

from medhash import Archive, MedhashError, NotFoundError
from medhash.ingest import ingest
from medhash.demo import write_demo_cohort
from medhash.errors import ModelMismatchError
from medhash.features import (TrainingDataError, archive_features, build_model, count_parameters, encode_arrays,
                              list_models, load_model, postprocess, preprocess, psnr, read_metrics,
                              reconstruct_arrays, split_patients, train_model)
from medhash.features import checkpoints, encode as encode_mod

from conftest import make_openkbp_patient

FAST = dict(epochs=2, progress=False)


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def demo_src(tmp_path_factory):
    """Four demo patients as DICOM; the base archive holds the first three."""
    root = tmp_path_factory.mktemp("demo")
    folders = write_demo_cohort(root / "demo", n_patients=4, rows=96)
    return folders


@pytest.fixture(scope="module")
def base_archive(demo_src, tmp_path_factory):
    path = tmp_path_factory.mktemp("base") / "arch"
    arch = Archive(path, create=True)
    ingest(arch, demo_src[:3])
    assert len(arch.patients()) == 3 and len(arch) > 100
    arch.close()
    return path


@pytest.fixture(scope="module")
def trained(base_archive, tmp_path_factory):
    """A copy of the base archive with a 2-epoch shallow CT model ``ct-shallow`` (seed 0)."""
    path = tmp_path_factory.mktemp("trained") / "arch"
    shutil.copytree(base_archive, path)
    arch = Archive(path)
    result = train_model(arch, "ct", "shallow", **FAST)
    return arch, result


def _copy(src, dst):
    shutil.copytree(src, dst)
    return Archive(dst)


# ---------------------------------------------------------------- preprocessing
def test_preprocess_values_and_inverse():
    hu = np.zeros((1, 128, 128), np.int16)
    hu[0, 0, :5] = [-1000, 0, 2000, -3000, 500]
    x = preprocess("ct", hu)
    assert x.shape == (1, 1, 128, 128) and x.dtype == np.float32
    np.testing.assert_array_equal(x[0, 0, 0, :5], [-1, 0, 1, -1, 0.5])
    gy = np.zeros((128, 128), np.float32)                       # one slice is accepted too
    gy[0, :4] = [40, 0, 100, -1]
    d = preprocess("dose", gy)
    assert d.shape == (1, 1, 128, 128)
    np.testing.assert_array_equal(d[0, 0, 0, :4], [0.5, 0, 1, 0])
    np.testing.assert_array_equal(postprocess("ct", x)[0, 0, :5], [-1000, 0, 1000, -1000, 500])
    np.testing.assert_array_equal(postprocess("dose", d)[0, 0, :4], [40, 0, 80, 0])
    assert psnr("ct", 0.04) == pytest.approx(20.0) and psnr("dose", 0.01) == pytest.approx(20.0)
    with pytest.raises(ValueError, match="unknown channel 'mri'"):
        preprocess("mri", hu)
    with pytest.raises(ValueError, match=r"shape \(n, 128, 128\).*got shape \(2, 64, 64\)"):
        preprocess("ct", np.zeros((2, 64, 64)))


# ---------------------------------------------------------------- architectures
@pytest.mark.parametrize("arch", ["shallow", "deep"])
def test_architecture_shapes(arch):
    torch.manual_seed(0)
    model = build_model(arch, latent_dim=32).eval()
    x = torch.zeros(3, 1, 128, 128)
    with torch.no_grad():
        assert model(x).shape == (3, 1, 128, 128)
        z = model.encode(x)
    assert z.shape == (3, 32) and z.dtype == torch.float32
    assert model.decode(z).shape == (3, 1, 128, 128)
    assert count_parameters(model) > 100_000
    with pytest.raises(ValueError, match="unknown architecture 'resnet'"):
        build_model("resnet")


def test_split_patients_is_seeded_disjoint_and_keeps_one_for_validation():
    pids = [f"p{i}" for i in range(10)]
    tr, va = split_patients(pids[::-1], 0.15, seed=3)
    assert (tr, va) == split_patients(pids, 0.15, seed=3)
    assert len(va) == 2 and not set(tr) & set(va) and sorted(tr + va) == pids
    assert split_patients(["a", "b"], 0.01, 0) [1] != []      # at least one validation patient
    assert split_patients(["a"], 0.15, 0) == (["a"], [])
    assert split_patients(pids, 0.15, seed=3) != split_patients(pids, 0.15, seed=4)


# ---------------------------------------------------------------- training
def test_training_writes_a_checkpoint_and_reduces_the_loss(trained):
    arch, r = trained
    d = arch.path / "models" / "ct-shallow"
    assert sorted(p.name for p in d.iterdir()) == ["config.json", "metrics.json", "model.pt"]
    config = json.loads((d / "config.json").read_text())
    assert config["sha256"] == checkpoints.sha256_file(d / "model.pt") == r["sha256"]
    assert config["name"] == "ct-shallow" and config["channel"] == "ct" and config["arch"] == "shallow"
    assert config["latent_dim"] == 128 and config["epochs_run"] == 2 and config["torch_version"] == torch.__version__
    assert config["preprocessing"]["min"] == -1000 and config["preprocessing"]["range"] == 2
    metrics = read_metrics(arch, "ct-shallow")
    ep = metrics["epochs"]
    assert len(ep) == 2 and ep[1]["train_mse"] < ep[0]["train_mse"]
    assert set(ep[0]) == {"epoch", "train_mse", "val_mse", "val_psnr", "seconds"}
    best = min(e["val_mse"] for e in ep)
    assert metrics["final"]["held_out_mse"] == best == r["held_out_mse"]
    assert r["held_out_psnr"] == pytest.approx(psnr("ct", best))
    # validation by patient: disjoint, complete, and the slice counts add up
    tr, va = set(config["train_patients"]), set(config["val_patients"])
    assert va and not tr & va and tr | va == set(arch.patients())
    assert config["validation"] == "held-out patients"
    assert config["n_train_slices"] + config["n_val_slices"] == len(arch)
    t = arch.table()
    assert config["n_val_slices"] == int(np.isin(t["patient_id"], list(va)).sum())
    assert [c["name"] for c in list_models(arch)] == ["ct-shallow"]
    model, cfg = load_model(arch, "ct-shallow")
    assert not model.training and cfg == config


def test_training_leaves_global_torch_state_alone(base_archive, tmp_path):
    arch = _copy(base_archive, tmp_path / "a")
    rng, threads = torch.random.get_rng_state(), torch.get_num_threads()
    det = torch.are_deterministic_algorithms_enabled()
    train_model(arch, "ct", "shallow", epochs=1, progress=False, max_slices=40)
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert torch.get_num_threads() == threads and torch.are_deterministic_algorithms_enabled() == det


def test_same_seed_gives_identical_weights_and_features(trained, base_archive, tmp_path):
    arch, r = trained
    other = _copy(base_archive, tmp_path / "b")
    r2 = train_model(other, "ct", "shallow", **FAST)
    assert r2["sha256"] == r["sha256"]                            # the same bytes on disk
    m1, _ = load_model(arch, "ct-shallow")
    m2, _ = load_model(other, "ct-shallow")
    for (k, a), (_, b) in zip(m1.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), k
    np.testing.assert_array_equal(archive_features(arch, "ct-shallow", progress=False),
                                  archive_features(other, "ct-shallow", progress=False))
    r3 = train_model(other, "ct", "shallow", epochs=1, seed=1, progress=False, name="s1")
    assert r3["sha256"] != r["sha256"]


def test_failed_save_keeps_the_previous_checkpoint(trained, tmp_path, monkeypatch):
    arch = _copy(trained[0].path, tmp_path / "a")
    before = {p.name: p.read_bytes() for p in (arch.path / "models" / "ct-shallow").iterdir()}
    real = checkpoints.write_json_atomic

    def crash(path, data):
        if path.name == "config.json":
            raise KeyboardInterrupt("killed while saving")
        real(path, data)

    monkeypatch.setattr(checkpoints, "write_json_atomic", crash)
    with pytest.raises(KeyboardInterrupt):
        train_model(arch, "ct", "shallow", epochs=1, seed=5, progress=False, max_slices=40)
    after = {p.name: p.read_bytes() for p in (arch.path / "models" / "ct-shallow").iterdir()}
    assert after == before
    assert [p.name for p in (arch.path / "models").iterdir()] == ["ct-shallow"]   # no temporary left
    load_model(arch, "ct-shallow")


# ---------------------------------------------------------------- loading
def test_tampered_or_missing_model(trained, tmp_path):
    arch = _copy(trained[0].path, tmp_path / "a")
    with open(arch.path / "models" / "ct-shallow" / "model.pt", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ModelMismatchError, match="sha256"):
        load_model(arch, "ct-shallow")
    with pytest.raises(ModelMismatchError):
        archive_features(arch, "ct-shallow", progress=False)
    with pytest.raises(NotFoundError, match="'ct-deep' is not in the archive.*available models: ct-shallow"):
        load_model(arch, "ct-deep")
    with pytest.raises(ValueError, match="invalid model name"):
        load_model(arch, "../x")


def test_checkpoint_of_another_architecture_revision_is_refused(trained, tmp_path):
    arch = _copy(trained[0].path, tmp_path / "a")
    path = arch.path / "models" / "ct-shallow" / "config.json"
    config = json.loads(path.read_text())
    config.pop("arch_revision")                     # written before revisions: shallow 1 (ReLU)
    path.write_text(json.dumps(config))
    with pytest.raises(ModelMismatchError, match="revision 1 of the shallow architecture"):
        load_model(arch, "ct-shallow")


# ---------------------------------------------------------------- encoding
def test_encode_arrays_is_deterministic_and_matches_the_cache(trained):
    arch, r = trained
    model, config = load_model(arch, "ct-shallow")
    hu = np.asarray(arch.ct[:40])
    f1 = encode_arrays(model, config, hu)
    assert f1.shape == (40, 128) and f1.dtype == np.float32 and np.isfinite(f1).all()
    np.testing.assert_array_equal(f1, encode_arrays(model, config, hu))
    np.testing.assert_allclose(encode_arrays(model, config, hu, batch_size=7), f1, rtol=1e-5, atol=1e-5)
    one = encode_arrays(model, config, hu[3].astype(np.float32))       # one (128, 128) slice
    np.testing.assert_allclose(one[0], f1[3], rtol=1e-5, atol=1e-5)
    cache = archive_features(arch, "ct-shallow", progress=False)
    np.testing.assert_array_equal(cache[:40], encode_arrays(model, config, hu, batch_size=256))
    rec = reconstruct_arrays(model, config, hu[:2])
    assert rec.shape == (2, 128, 128) and rec.min() >= -1000 and rec.max() <= 1000
    with pytest.raises(ValueError, match="got shape"):
        encode_arrays(model, config, np.zeros((2, 100, 100)))


def test_archive_features_incremental(trained, demo_src, tmp_path, monkeypatch):
    arch = _copy(trained[0].path, tmp_path / "a")
    f0 = archive_features(arch, "ct-shallow", progress=False, batch_size=64)
    n0 = len(arch)
    assert f0.shape == (n0, 128) and f0.dtype == np.float32 and not f0.flags.writeable
    meta = json.loads((arch.path / "features" / "ct-shallow.json").read_text())
    assert meta["rows"] == n0 and meta["dim"] == 128 and meta["model_sha256"] == trained[1]["sha256"]
    first = f0[:n0].copy()
    # junk left by a killed run past the committed rows is cut off
    with open(arch.path / "features" / "ct-shallow.f32", "ab") as f:
        f.write(b"\xff" * 1000)
    ingest(arch, [demo_src[3]])
    n1 = len(arch)
    assert n1 > n0
    seen = []
    real = encode_mod.preprocess
    monkeypatch.setattr(encode_mod, "preprocess", lambda ch, a: (seen.append(len(a)), real(ch, a))[1])
    f1 = archive_features(arch, "ct-shallow", progress=False, batch_size=64)
    assert sum(seen) == n1 - n0                                 # only the new rows were encoded
    assert f1.shape == (n1, 128)
    np.testing.assert_array_equal(f1[:n0], first)
    assert (arch.path / "features" / "ct-shallow.f32").stat().st_size == n1 * 128 * 4
    seen.clear()
    assert archive_features(arch, "ct-shallow", progress=False).shape == (n1, 128) and seen == []
    # equal to a fresh full encoding
    monkeypatch.undo()
    model, config = load_model(arch, "ct-shallow")
    np.testing.assert_allclose(f1, encode_arrays(model, config, arch.ct), rtol=1e-6, atol=1e-6)
    # a new checkpoint under the same name: the cache is rebuilt from scratch
    r = train_model(arch, "ct", "shallow", epochs=1, seed=9, progress=False, max_slices=40)
    f2 = archive_features(arch, "ct-shallow", progress=False)
    model, config = load_model(arch, "ct-shallow")
    assert json.loads((arch.path / "features" / "ct-shallow.json").read_text())["model_sha256"] == r["sha256"]
    np.testing.assert_array_equal(f2, encode_arrays(model, config, arch.ct))


# ---------------------------------------------------------------- dose channel
def test_dose_model_and_nan_rows_without_dose(tmp_path):
    root = tmp_path / "train-pats"
    root.mkdir()
    make_openkbp_patient(root, "pt_7")
    make_openkbp_patient(root, "pt_12", dose=False, body_slices=range(30, 50))
    arch = Archive(tmp_path / "arch", create=True)
    ingest(arch, [root])
    has = arch.table()["has_dose"]
    assert has.any() and not has.all()
    r = train_model(arch, "dose", "shallow", epochs=1, progress=False)
    # one patient with dose: no one to hold out, validation on the training set, and said so
    assert r["train_patients"] == ["pt_7"] and r["val_patients"] == []
    assert r["validation"] == "training set (single patient)" and r["n_train_slices"] == int(has.sum())
    assert r["name"] == "dose-shallow" and r["preprocessing"]["max"] == 80
    f = archive_features(arch, "dose-shallow", progress=False, batch_size=16)
    assert f.shape == (len(arch), 128)
    np.testing.assert_array_equal(np.isnan(f).all(axis=1), ~has)
    assert np.isfinite(f[has]).all()
    model, config = load_model(arch, "dose-shallow")
    np.testing.assert_allclose(f[has], encode_arrays(model, config, arch.dose[has]), rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------- errors
def test_training_errors(tmp_path, trained):
    arch = trained[0]
    with pytest.raises(ValueError, match="unknown channel 'pet'"):
        train_model(arch, "pet")
    with pytest.raises(ValueError, match="unknown architecture 'vit'"):
        train_model(arch, "ct", "vit")
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        train_model(arch, "ct", epochs=0)
    with pytest.raises(ValueError, match="invalid model name"):
        train_model(arch, "ct", name="a/b")
    empty = Archive(tmp_path / "empty", create=True)
    with pytest.raises(TrainingDataError, match="has no slices"):
        train_model(empty, "ct", progress=False)
    assert isinstance(TrainingDataError("x"), MedhashError)
    root = tmp_path / "train-pats"
    root.mkdir()
    make_openkbp_patient(root, "pt_3", dose=False, body_slices=range(40, 45))
    nodose = Archive(tmp_path / "nodose", create=True)
    ingest(nodose, [root])
    with pytest.raises(TrainingDataError, match="none with dose"):
        train_model(nodose, "dose", progress=False)
    assert list_models(empty) == []
    with pytest.raises(NotFoundError, match="available models: none"):
        archive_features(empty, "ct-shallow")
