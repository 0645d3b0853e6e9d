"""Tests of medhash.hashing (pca, itq, trained, registry): PCA-sign, ITQ, the trained kernel hash and the registry."""
from __future__ import annotations

import json
import pickle
import subprocess
import sys

import numpy as np
import pytest

from medhash.errors import ModelMismatchError, NotFittedError
from medhash.evaluate.metrics import dice_from_overlap, tie_aware_overlap
from medhash.hashing import (HASHERS, ITQ, Hasher, KernelLSH, PCASign, TrainedKernelHash, describe_hasher,
                             hamming_distances, load_hasher, make_hasher, unpack)

# Small training settings so that the whole file stays fast.
FAST_TRAIN = {"epochs": 4, "batch_size": 64, "n_neighbors": 30}


def clustered(n_clusters=12, per=40, d=16, spread=0.35, seed=0):
    """Gaussian blobs: centres N(0, I_d), members centre + spread * N(0, I_d)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, d))
    X = np.repeat(centres, per, axis=0) + spread * rng.standard_normal((n_clusters * per, d))
    return X.astype(np.float32)


@pytest.fixture(scope="module")
def X():
    return clustered()


def make(name, n_bits=16, seed=0):
    params = FAST_TRAIN if name == "trained" else {}
    return make_hasher(name, n_bits, seed=seed, **params)


def dice_at_k(codes, X, queries, k):
    """Mean tie-aware Dice@k of the Hamming top-k against the Euclidean top-k (query excluded)."""
    Xd = X.astype(np.float64)
    out = []
    ham = hamming_distances(codes[queries], codes).astype(np.float64)
    for j, q in enumerate(queries):
        eu = np.sqrt(((Xd - Xd[q]) ** 2).sum(axis=1))
        eu[q] = np.inf
        truth = np.argsort(eu, kind="stable")[:k]
        h = ham[j].copy()
        h[q] = np.inf
        out.append(tie_aware_overlap(h, truth, k))
    return float(np.mean(dice_from_overlap(np.array(out), k)))


# ---------------------------------------------------------------------- PCA sign
def test_pca_sign_bits_by_hand():
    X = np.array([[2.0, 0.0, 1.0], [-2.0, 0.1, 0.0], [0.0, 1.0, -1.0], [1.0, -1.0, 0.5], [-1.0, 0.5, -0.5]])
    h = PCASign(n_bits=2).fit(X)
    mean = X.mean(axis=0)
    Xc = X - mean
    _, _, Vt = np.linalg.svd(Xc, full_matrices=False)
    comps = Vt[:2] * np.sign(Vt[:2][np.arange(2), np.argmax(np.abs(Vt[:2]), axis=1)])[:, None]
    np.testing.assert_allclose(h.mean_, mean, atol=1e-12)
    np.testing.assert_allclose(h.components_, comps, atol=1e-10)
    expected = (Xc @ comps.T) > 0
    np.testing.assert_array_equal(unpack(h.transform(X), 2), expected.astype(np.uint8))
    assert h.transform(X).shape == (5, 1)
    assert h.transform(X)[:, 0].tolist() == [int("".join(map(str, r.astype(int))) + "000000", 2) for r in expected]


# ---------------------------------------------------------------------- ITQ
def test_itq_rotation_orthogonal_and_objective_non_increasing(X):
    itq = ITQ(n_bits=12, seed=3, n_iter=30).fit(X)
    R = itq.rotation_
    assert R.shape == (12, 12)
    np.testing.assert_allclose(R @ R.T, np.eye(12), atol=1e-8)
    obj = np.array(itq.objective_)
    assert len(obj) == 31
    assert np.all(np.diff(obj) <= 1e-9 * obj[0])
    assert obj[-1] < obj[0]
    # codes are the sign of the rotated centred PCA projection
    V = (X.astype(np.float64) - itq.mean_) @ itq.components_.T @ R
    np.testing.assert_array_equal(unpack(itq.transform(X), 12), (V >= 0).astype(np.uint8))


@pytest.mark.parametrize("cls", [ITQ, PCASign])
def test_too_many_bits_for_the_data(cls):
    X = np.random.default_rng(0).standard_normal((50, 8))
    with pytest.raises(ValueError, match=r"n_bits=9 .*min\(n_features, n_samples\) = min\(8, 50\) = 8"):
        cls(n_bits=9).fit(X)
    with pytest.raises(ValueError, match=r"n_bits=6 .*min\(8, 5\) = 5"):
        cls(n_bits=6).fit(X[:5])
    cls(n_bits=8).fit(X)


# ---------------------------------------------------------------------- every hasher
@pytest.mark.parametrize("name", sorted(HASHERS))
def test_deterministic_shapes_and_seed(name, X):
    a = make(name, 16, seed=0).fit(X).transform(X)
    b = make(name, 16, seed=0).fit(X).transform(X)
    assert a.shape == (len(X), 2) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    c = make(name, 16, seed=1).fit(X).transform(X)
    if name == "pca-sign":      # draws nothing
        np.testing.assert_array_equal(a, c)
    else:
        assert (a != c).any()


@pytest.mark.parametrize("name", sorted(HASHERS))
def test_padding_bits_zero(name, X):
    codes = make(name, 13).fit(X).transform(X)
    assert codes.shape == (len(X), 2)
    assert not (codes[:, 1] & 0b111).any()


@pytest.mark.parametrize("name", sorted(HASHERS))
def test_save_load_roundtrip(name, X, tmp_path):
    h = make(name, 16).fit(X)
    path = tmp_path / f"{name}.pkl"
    h.save(path)
    assert list(tmp_path.iterdir()) == [path]            # no temporary file left
    for loaded in (type(h).load(path), load_hasher(path)):
        assert type(loaded) is type(h)
        assert loaded.get_params() == h.get_params()
        np.testing.assert_array_equal(loaded.transform(X), h.transform(X))
    json.dumps(describe_hasher(load_hasher(path)))


@pytest.mark.parametrize("name", sorted(HASHERS))
def test_load_wrong_file(name, X, tmp_path):
    cls = HASHERS[name]
    other = "itq" if name != "itq" else "pca-sign"
    wrong = tmp_path / "other.pkl"
    make(other, 8).fit(X).save(wrong)
    with pytest.raises(ModelMismatchError, match="not a saved"):
        cls.load(wrong)
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(b"not a pickle at all")
    with pytest.raises(ModelMismatchError, match=rf"junk.pkl: not a saved {cls.__name__}"):
        cls.load(junk)
    with pytest.raises(ModelMismatchError, match="junk.pkl"):
        load_hasher(junk)


def test_load_hasher_rejects_unknown_format_and_version(X, tmp_path):
    p = tmp_path / "x.pkl"
    with open(p, "wb") as f:
        pickle.dump({"format": "someone.else", "version": 1, "params": {}, "fitted": {}}, f)
    with pytest.raises(ModelMismatchError, match="'someone.else'.*known: "):
        load_hasher(p)
    h = ITQ(n_bits=4).fit(X)
    h.save(p)
    with open(p, "rb") as f:
        payload = pickle.load(f)
    payload["version"] = 99
    with open(p, "wb") as f:
        pickle.dump(payload, f)
    with pytest.raises(ModelMismatchError, match="version 99"):
        load_hasher(p)
    with pytest.raises(ModelMismatchError, match="version 99"):
        ITQ.load(p)


@pytest.mark.parametrize("name", sorted(HASHERS))
def test_not_fitted(name, X):
    h = make(name)
    with pytest.raises(NotFittedError, match="not fitted"):
        h.transform(X)


@pytest.mark.parametrize("name", ["itq", "pca-sign", "trained"])
def test_feature_count_checked(name, X):
    h = make(name, 8).fit(X)
    with pytest.raises(ValueError, match=f"has 3 features, but .* fitted with {X.shape[1]} features"):
        h.transform(X[:, :3])


def test_registry_and_describe(X):
    assert set(HASHERS) == {"kernel-lsh", "itq", "pca-sign", "trained"}
    with pytest.raises(ValueError, match="unknown hasher 'lsh'; the hashers are: itq, kernel-lsh, pca-sign, trained"):
        make_hasher("lsh", 64)
    with pytest.raises(ValueError, match="takes no parameter 'epochs'"):
        make_hasher("itq", 8, epochs=3)
    h = make_hasher("trained", 8, seed=2, epochs=0, gamma=0.5)
    assert isinstance(h, TrainedKernelHash) and h.get_params()["gamma"] == 0.5 and h.seed == 2
    for name in HASHERS:
        h = make(name, 8)
        d0 = describe_hasher(h)
        assert d0["name"] == name and d0["fitted"] is False and d0["params"]["n_bits"] == 8
        d = describe_hasher(h.fit(X))
        json.dumps(d)
        assert d["fitted"] is True and d["n_features_in_"] == X.shape[1]
        if name in ("kernel-lsh", "trained"):
            assert d["gamma_"] == pytest.approx(h.gamma_)
    assert describe_hasher(make("itq", 8).fit(X))["final_objective"] > 0


# ---------------------------------------------------------------------- trained kernel hash
def test_trained_zero_epochs_is_kernel_lsh(X):
    for gamma in ("auto", 0.3):
        t = TrainedKernelHash(n_bits=70, gamma=gamma, seed=5, epochs=0).fit(X)
        k = KernelLSH(n_bits=70, gamma=gamma, seed=5).fit(X)
        np.testing.assert_array_equal(t.transform(X), k.transform(X))
        assert t.gamma_ == k.gamma_ and t.loss_ == []


def test_trained_lowers_loss_and_keeps_neighbours():
    X = clustered(n_clusters=15, per=40, d=16, spread=0.5, seed=1)
    queries = np.random.default_rng(0).choice(len(X), 60, replace=False)
    k = KernelLSH(n_bits=64, seed=0).fit(X)
    t = TrainedKernelHash(n_bits=64, seed=0, epochs=8, batch_size=64, n_neighbors=30).fit(X)
    assert len(t.loss_) == 9 and len(t.train_loss_) == 8
    assert t.loss_[-1] < t.loss_[0]
    d_k = dice_at_k(k.transform(X), X, queries, 10)
    d_t = dice_at_k(t.transform(X), X, queries, 10)
    assert d_t >= d_k - 0.01, (d_t, d_k)


def test_trained_restores_torch_settings(X):
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    TrainedKernelHash(n_bits=8, **FAST_TRAIN).fit(X)
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == before


@pytest.mark.parametrize("params, match", [({"epochs": -1}, "epochs must be"), ({"lr": 0}, "lr must be"),
                                           ({"rank_weight": -1.0}, "rank_weight must be"),
                                           ({"gamma": "big"}, "gamma must be"), ({"n_neighbors": 1}, "n_neighbors")])
def test_trained_bad_params(params, match, X):
    with pytest.raises(ValueError, match=match):
        TrainedKernelHash(n_bits=8, **params).fit(X)


# Saved archives hold these strings: they may never change.
SAVED_FORMATS = {"kernel-lsh": "medhash.hashing.KernelLSH", "itq": "medhash.hashers.ITQ",
                 "pca-sign": "medhash.hashers.PCASign", "trained": "medhash.hashers.TrainedKernelHash"}


@pytest.mark.parametrize("name", sorted(HASHERS))
def test_every_hasher_is_a_hasher_and_keeps_its_file_format(name, X, tmp_path):
    h = make(name, 8).fit(X)
    assert isinstance(h, Hasher)
    h.save(tmp_path / "h.pkl")
    with open(tmp_path / "h.pkl", "rb") as f:
        payload = pickle.load(f)
    assert (payload["format"], payload["version"]) == (SAVED_FORMATS[name], 1)
    assert payload["params"] == h.get_params() and set(payload["fitted"]) <= set(type(h)._FITTED)
    assert describe_hasher(h)["name"] == name and describe_hasher(h)["class"] == type(h).__name__


def test_describe_hasher_refuses_other_objects():
    with pytest.raises(TypeError, match="not a medhash hasher: dict"):
        describe_hasher({})


def test_importing_hashing_does_not_import_torch():
    code = "import sys, medhash.hashing; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
