"""KernelLSH: the closed form of Raginsky & Lazebnik, the estimator contract, packed codes, errors."""
from __future__ import annotations

import math
import pickle

import faiss
import numpy as np
import pytest
from scipy import integrate, stats

import medhash.hashing.kernel_lsh as hashing
from medhash.errors import ModelMismatchError, NotFittedError
from medhash.hashing import MAX_BITS, KernelLSH, expected_hamming_fraction, hamming_distances, unpack


@pytest.fixture(scope="module")
def X():
    return np.random.default_rng(42).standard_normal((300, 12))


def pair_at(rng, d, r):
    """Two points at Euclidean distance exactly r, in a random direction."""
    x = rng.standard_normal(d)
    u = rng.standard_normal(d)
    return x, x + r * u / np.linalg.norm(u)


# ---------------------------------------------------------------------------------- closed form
def test_closed_form_matches_simulation():
    """d = 32, gamma = 0.5, 16384 bits: mean empirical fraction over 10 independent hashers (one
    random pair each) within 0.005 of the closed form (std of that mean <= 0.0013); each single
    pair within 0.02 (> 5 std of one pair)."""
    d, gamma, n_bits, radii = 32, 0.5, 16384, [0.5, 1.0, 2.0, 10.0]
    rng = np.random.default_rng(7)
    fractions = []
    for seed in range(10):
        pts = np.vstack([p for r in radii for p in pair_at(rng, d, r)])
        codes = KernelLSH(n_bits, gamma=gamma, seed=seed).fit(pts).transform(pts)
        fractions.append([hamming_distances(codes[2 * k:2 * k + 1], codes[2 * k + 1:2 * k + 2])[0, 0] / n_bits
                          for k in range(len(radii))])
    fractions = np.array(fractions)
    expected = expected_hamming_fraction(radii, gamma)
    np.testing.assert_allclose(expected, [0.0889, 0.1723, 0.3049, 0.4053], atol=1e-4)  # mission.md
    np.testing.assert_allclose(fractions.mean(axis=0), expected, atol=0.005)
    assert np.abs(fractions - expected).max() < 0.02


def test_closed_form_limits():
    gamma = 0.7
    assert expected_hamming_fraction(0.0, gamma) == 0.0
    np.testing.assert_allclose(expected_hamming_fraction([50.0, 1e3, np.inf], gamma), 4 / np.pi ** 2, rtol=1e-12)
    r = np.array([1e-6, 1e-4, 1e-3])
    slope = expected_hamming_fraction(r, gamma) / (math.sqrt(gamma) * r)
    np.testing.assert_allclose(slope, math.sqrt(2) / np.pi ** 1.5, rtol=1e-6)
    assert abs(math.sqrt(2) / np.pi ** 1.5 - 0.254) < 5e-4
    rising = np.diff(expected_hamming_fraction(np.linspace(0, 4, 2001), gamma))
    assert np.all(rising > 0)
    assert np.all(np.diff(expected_hamming_fraction(np.linspace(4, 50, 2001), gamma)) >= 0)


@pytest.mark.parametrize("s", [0.01, 0.3, 0.9999999, 1.0, 1.5, 2.5, 4.0])
def test_closed_form_equals_numerical_integral(s):
    """The fraction is (2/pi) E|sin(delta/2)|, delta ~ N(0, s^2), s = sqrt(gamma) r: checked by
    quadrature on both sides of the switch between the Dawson form and the series (s = 1)."""
    gamma = 2.0
    r = s / math.sqrt(gamma)

    def f(x):
        return (2 / np.pi) * abs(np.sin(x / 2)) * np.exp(-x * x / (2 * s * s)) / (s * math.sqrt(2 * np.pi))

    kinks = [2 * np.pi * k for k in range(1, int(12 * s / (2 * np.pi)) + 1)]
    ref = 2 * integrate.quad(f, 0, 12 * s, points=kinks or None, limit=200, epsabs=1e-14)[0]
    assert float(expected_hamming_fraction(r, gamma)) == pytest.approx(ref, abs=1e-9)


def test_closed_form_shape_and_errors():
    out = expected_hamming_fraction(np.ones((2, 3)), 1.0)
    assert out.shape == (2, 3) and out.dtype == np.float64
    with pytest.raises(ValueError, match="r must hold distances >= 0"):
        expected_hamming_fraction([-1.0], 1.0)
    with pytest.raises(ValueError, match="gamma must be a finite number > 0, got 0"):
        expected_hamming_fraction(1.0, 0)
    with pytest.raises(ValueError, match="terms must be an integer >= 1"):
        expected_hamming_fraction(1.0, 1.0, terms=0)


# ---------------------------------------------------------------------------------- the draws
def test_fit_attributes(X):
    h = KernelLSH(n_bits=100, gamma=0.3, seed=5)
    assert h.fit(X) is h
    assert h.random_weights_.shape == (100, 12) and h.random_weights_.dtype == np.float64
    assert h.random_offset_.shape == (100,) and h.threshold_.shape == (100,)
    assert h.gamma_ == 0.3 and isinstance(h.gamma_, float) and h.n_features_in_ == 12
    assert np.all(np.abs(h.random_offset_) <= np.pi) and np.all(np.abs(h.threshold_) <= 1)
    # a big draw has the documented distributions
    big = KernelLSH(n_bits=MAX_BITS, gamma=4.0, seed=1).fit(np.zeros((1, 32)))
    assert big.random_weights_.std() == pytest.approx(2.0, rel=0.01)
    assert abs(big.random_weights_.mean()) < 0.01
    assert big.random_offset_.std() == pytest.approx(np.pi / math.sqrt(3), rel=0.02)
    assert big.threshold_.std() == pytest.approx(1 / math.sqrt(3), rel=0.02)


def test_init_stores_arguments_only():
    h = KernelLSH(n_bits=-3, gamma="big", seed=1.5, n_pairs=0)  # validated in fit, not here
    assert h.get_params() == {"n_bits": -3, "gamma": "big", "seed": 1.5, "n_pairs": 0}
    assert not hasattr(h, "gamma_")
    assert repr(KernelLSH(64)) == "KernelLSH(n_bits=64, gamma='auto', seed=0, n_pairs=2000)"


def test_same_seed_same_codes_other_seed_other_codes(X):
    a = KernelLSH(256, seed=3).fit_transform(X)
    b = KernelLSH(256, seed=3).fit(X).transform(X)
    c = KernelLSH(256, seed=4).fit_transform(X)
    np.testing.assert_array_equal(a, b)
    assert (a != c).mean() > 0.3


def test_codes_nest_across_n_bits(X):
    """The first k bits of an n-bit hasher are the k-bit hasher with the same seed."""
    long = KernelLSH(1000, seed=9).fit(X)
    short = KernelLSH(77, seed=9).fit(X)
    np.testing.assert_array_equal(long.random_weights_[:77], short.random_weights_)
    np.testing.assert_array_equal(unpack(long.transform(X), 1000)[:, :77], unpack(short.transform(X), 77))


def test_auto_and_numeric_gamma_share_directions(X):
    auto = KernelLSH(64, seed=2).fit(X)
    fixed = KernelLSH(64, gamma=1.0, seed=2).fit(X)
    np.testing.assert_allclose(auto.random_weights_, fixed.random_weights_ * math.sqrt(auto.gamma_), rtol=1e-12)
    np.testing.assert_array_equal(auto.random_offset_, fixed.random_offset_)
    np.testing.assert_array_equal(auto.threshold_, fixed.threshold_)


def test_gamma_auto_is_the_documented_rule():
    """Skewed data (mean and median of the squared distances differ by far more than the
    tolerance), so a mean instead of a median, or another constant than 4, fails."""
    rng = np.random.default_rng(0)
    Y = rng.exponential(size=(40, 3)) ** 2
    n = len(Y)
    # exactly the documented pairs
    h = KernelLSH(8, seed=11, n_pairs=500).fit(Y)
    r = np.random.default_rng(11)
    i = r.integers(0, n, 500)
    j = (i + r.integers(1, n, 500)) % n
    assert np.all(i != j)
    assert h.gamma_ == pytest.approx(4 / np.median(((Y[i] - Y[j]) ** 2).sum(axis=1)), rel=1e-12)
    # and, with many pairs, the median over all pairs
    iu = np.triu_indices(n, 1)
    sq_all = ((Y[:, None, :] - Y[None, :, :]) ** 2).sum(axis=2)[iu]
    assert abs(np.mean(sq_all) / np.median(sq_all) - 1) > 0.3
    h = KernelLSH(8, seed=0, n_pairs=200_000).fit(Y)
    assert h.gamma_ == pytest.approx(4 / np.median(sq_all), rel=0.02)


# ---------------------------------------------------------------------------------- transform
@pytest.mark.parametrize("n_bits", [1, 7, 8, 9, 256, MAX_BITS])
def test_code_shape_and_zero_padding(X, n_bits):
    codes = KernelLSH(n_bits, seed=0).fit_transform(X[:20])
    assert codes.shape == (20, math.ceil(n_bits / 8)) and codes.dtype == np.uint8
    all_bits = np.unpackbits(codes, axis=1)
    assert not all_bits[:, n_bits:].any()
    if n_bits >= 8:
        assert all_bits.any() and not all_bits.all()


def test_one_bit_code():
    Y = np.linspace(-3, 3, 200)[:, None]
    h = KernelLSH(1, gamma=1.0, seed=0).fit(Y)
    bits = unpack(h.transform(Y), 1)[:, 0]
    assert set(np.unique(bits)) == {0, 1}
    w, b, t = h.random_weights_[0, 0], h.random_offset_[0], h.threshold_[0]
    np.testing.assert_array_equal(bits, np.cos(w * Y[:, 0] + b) + t > 0)


def test_transform_is_the_defining_formula(X):
    h = KernelLSH(300, seed=1).fit(X)
    bits = np.cos(X @ h.random_weights_.T + h.random_offset_) + h.threshold_ > 0
    np.testing.assert_array_equal(h.transform(X), np.packbits(bits, axis=1))


def test_transform_rows_independent_of_chunking(X, monkeypatch):
    h = KernelLSH(512, seed=1).fit(X)
    whole = h.transform(X)
    np.testing.assert_array_equal(h.transform(X[17:18]), whole[17:18])
    monkeypatch.setattr(hashing, "_CHUNK_ELEMENTS", 3 * 512 + 5)   # 3 rows a product
    monkeypatch.setattr(hashing, "_CACHE_ELEMENTS", 2 * 512)        # 2 rows a block
    np.testing.assert_array_equal(h.transform(X), whole)
    X32 = X.astype(np.float32)
    np.testing.assert_array_equal(h.transform(X32), h.transform(X32.astype(np.float64)))
    assert h.transform(X[:0]).shape == (0, 64)


def test_save_load_and_pickle(X, tmp_path):
    h = KernelLSH(100, seed=8).fit(X)
    path = tmp_path / "hasher.pkl"
    h.save(path)
    loaded = KernelLSH.load(path)
    assert loaded.get_params() == h.get_params() and loaded.gamma_ == h.gamma_
    np.testing.assert_array_equal(loaded.transform(X), h.transform(X))
    clone = pickle.loads(pickle.dumps(h))
    np.testing.assert_array_equal(clone.transform(X), h.transform(X))
    assert [p.name for p in tmp_path.iterdir()] == ["hasher.pkl"]          # no temporary left
    unfitted = tmp_path / "unfitted.pkl"
    KernelLSH(64).save(unfitted)
    with pytest.raises(NotFittedError):
        KernelLSH.load(unfitted).transform(X)


def test_load_refuses_a_future_format_version(tmp_path):
    # other files and junk are refused for every hasher, KernelLSH included: tests/hashing/test_hashers.py
    future = tmp_path / "future.pkl"
    future.write_bytes(pickle.dumps({"format": "medhash.hashing.KernelLSH", "version": 99, "params": {},
                                     "fitted": {}}))
    with pytest.raises(ModelMismatchError, match="format version 99"):
        KernelLSH.load(future)


# ---------------------------------------------------------------------------------- Hamming
def test_hamming_distances_hand_case():
    A = np.array([[0b10000000, 0b00000000], [0xFF, 0xF0]], dtype=np.uint8)
    B = np.array([[0, 0], [0xFF, 0xFF], [0b10000000, 0b10000000]], dtype=np.uint8)
    np.testing.assert_array_equal(hamming_distances(A, B), [[1, 15, 1], [12, 4, 10]])
    assert hamming_distances(A, B).dtype == np.int32
    assert hamming_distances(A[:0], B).shape == (0, 3)


@pytest.mark.parametrize("n_bits", [13, 64, 200])
def test_hamming_distances_brute_force_and_faiss(X, n_bits):
    """Non-multiples of 8 and of 64 bits: padding never changes a distance; faiss agrees."""
    codes = KernelLSH(n_bits, seed=4).fit_transform(X)
    A, B = codes[:25], codes[25:]
    D = hamming_distances(A, B)
    bits_a, bits_b = unpack(A, n_bits), unpack(B, n_bits)
    brute = (bits_a[:, None, :] != bits_b[None, :, :]).sum(axis=2)
    np.testing.assert_array_equal(D, brute)
    index = faiss.IndexBinaryFlat(8 * codes.shape[1])
    index.add(B)
    k = 10
    Df, If = index.search(A, k)
    np.testing.assert_array_equal(Df, np.sort(D, axis=1)[:, :k])          # same distances at each rank
    np.testing.assert_array_equal(np.take_along_axis(D, If, axis=1), Df)  # ties may be ordered otherwise


def test_unpack():
    codes = np.array([[0b10100000, 0b11000000]], dtype=np.uint8)
    np.testing.assert_array_equal(unpack(codes, 10), [[1, 0, 1, 0, 0, 0, 0, 0, 1, 1]])
    with pytest.raises(ValueError, match="codes of 10 bits take 2 bytes a row, got 1"):
        unpack(codes[:, :1], 10)
    with pytest.raises(ValueError, match="2-D uint8"):
        unpack(codes.astype(np.int64), 10)


# ---------------------------------------------------------------------------------- behaviour
def test_hamming_increases_with_euclidean_distance():
    rng = np.random.default_rng(3)
    d = 4
    data = rng.standard_normal((2000, d))
    h = KernelLSH(1024, seed=0).fit(data)
    r_typical = math.sqrt(4 / h.gamma_)           # sqrt of the median squared distance
    radii = rng.uniform(0, 1.5 * r_typical, 300)
    pairs = [pair_at(rng, d, r) for r in radii]
    ca = h.transform(np.array([p[0] for p in pairs]))
    cb = h.transform(np.array([p[1] for p in pairs]))
    frac = np.array([hamming_distances(ca[k:k + 1], cb[k:k + 1])[0, 0] for k in range(len(pairs))]) / 1024
    assert stats.spearmanr(radii, frac).statistic > 0.9
    np.testing.assert_allclose(frac.mean(), expected_hamming_fraction(radii, h.gamma_).mean(), atol=0.01)
    # gamma far too large: every pair looks far, the scatter is flat (the talk's Figure 12)
    flat = KernelLSH(1024, gamma=1000 * h.gamma_, seed=0).fit(data)
    ca, cb = flat.transform(np.array([p[0] for p in pairs])), flat.transform(np.array([p[1] for p in pairs]))
    frac_flat = np.array([hamming_distances(ca[k:k + 1], cb[k:k + 1])[0, 0] for k in range(len(pairs))]) / 1024
    far = radii > 0.1 * r_typical
    assert np.abs(frac_flat[far] - 4 / np.pi ** 2).max() < 0.07


# ---------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("n_bits", [0, -1, MAX_BITS + 1, 2.5, True, "8"])
def test_bad_n_bits(X, n_bits):
    with pytest.raises(ValueError, match=rf"n_bits must be an integer in \[1, {MAX_BITS}\], got "):
        KernelLSH(n_bits=n_bits).fit(X)


@pytest.mark.parametrize("gamma", [0, -1, float("nan"), float("inf"), "big", True])
def test_bad_gamma(X, gamma):
    with pytest.raises(ValueError, match=r"gamma must be 'auto' or a finite number > 0, got "):
        KernelLSH(gamma=gamma).fit(X)


@pytest.mark.parametrize("param, value, match", [("seed", -1, "seed must be an integer >= 0"),
                                                 ("seed", 1.5, "seed must be an integer >= 0"),
                                                 ("n_pairs", 0, "n_pairs must be an integer >= 1")])
def test_bad_seed_and_n_pairs(X, param, value, match):
    with pytest.raises(ValueError, match=match):
        KernelLSH(**{param: value}).fit(X)


def test_transform_before_fit(X):
    with pytest.raises(NotFittedError, match=r"not fitted yet; call fit\(X\)"):
        KernelLSH().transform(X)


def test_wrong_feature_count(X):
    h = KernelLSH(16).fit(X)
    with pytest.raises(ValueError, match="X has 11 features, but this KernelLSH was fitted with 12 features"):
        h.transform(X[:, :11])


def test_bad_X(X):
    bad = X.copy()
    bad[5, 3] = np.nan
    bad[9, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or infinity in 2 row"):
        KernelLSH().fit(bad)
    h = KernelLSH(16).fit(X)
    with pytest.raises(ValueError, match="first row 5"):
        h.transform(bad)
    with pytest.raises(ValueError, match=r"2-D array .* got shape \(12,\); use X.reshape\(1, -1\)"):
        h.transform(X[0])
    with pytest.raises(ValueError, match="X has 0 rows"):
        KernelLSH().fit(np.empty((0, 4)))
    with pytest.raises(ValueError, match="must be a numeric array"):
        KernelLSH().fit(np.array([["a", "b"]]))


def test_identical_rows_need_a_numeric_gamma():
    same = np.ones((50, 3))
    with pytest.raises(ValueError, match="median squared distance of 2000 random pairs of rows is 0.*numeric gamma"):
        KernelLSH().fit(same)
    with pytest.raises(ValueError, match="at least 2 rows"):
        KernelLSH().fit(same[:1])
    codes = KernelLSH(32, gamma=1.0).fit_transform(same)
    assert (codes == codes[0]).all()
