"""Exact, deterministic kNN of the index (no model needed: the flat engine on hand-made codes)."""
import numpy as np
import pytest

from medhash.retrieval.blocks import block_scale, combine
from medhash.retrieval.engines import Engine, FlatEngine
from medhash.retrieval.topk import hamming_topk


def _faiss_binary(codes):
    """The exact engine over codes, one shard."""
    return FlatEngine(codes, shards=1)


def brute_hamming(codes, q):
    return np.unpackbits(codes ^ q[None, :], axis=1).sum(axis=1)


def reference_topk(codes, q, k, keys, excluded=None):
    d = brute_hamming(codes, q)
    items = np.arange(len(codes))
    if excluded is not None:
        items = items[~excluded]
    order = np.lexsort((keys[items], d[items]))[:k]
    return d[items][order], items[order]


def test_hand_built_ties_are_broken_by_key():
    # 3-bit codes padded to one byte: distances to q = 000 are 0,1,1,1,2,1
    bits = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 0]], dtype=np.uint8)
    codes = np.packbits(bits, axis=1)
    q = np.packbits(np.zeros((1, 3), dtype=np.uint8), axis=1)
    index = _faiss_binary(codes)
    keys = np.array([50, 40, 30, 20, 10, 0])  # tie-break key: the archive row
    D, I = hamming_topk(index, q, 3, keys)
    assert D[0].tolist() == [0, 1, 1]
    assert I[0].tolist() == [0, 5, 3]  # among distance 1 the smallest keys first: 0 (item 5), 20 (item 3)
    # excluding item 0 and 5
    ex = np.zeros(6, bool)
    ex[[0, 5]] = True
    D, I = hamming_topk(index, q, 4, keys, [ex])
    assert D[0].tolist() == [1, 1, 1, 2] and I[0].tolist() == [3, 2, 1, 4]


def test_massive_ties_match_brute_force():
    rng = np.random.default_rng(0)
    # 1-bit codes: everything ties; faiss alone would return an arbitrary subset
    codes = np.packbits(rng.integers(0, 2, size=(500, 1), dtype=np.uint8), axis=1)
    keys = rng.permutation(500).astype(np.int64)
    index = _faiss_binary(codes)
    for qbit in (0, 1):
        q = np.packbits(np.array([[qbit]], dtype=np.uint8), axis=1)
        D, I = hamming_topk(index, q, 10, keys)
        rd, ri = reference_topk(codes, q[0], 10, keys)
        assert D[0].tolist() == rd.tolist() and I[0].tolist() == ri.tolist()


def test_random_codes_with_exclusion_match_brute_force():
    rng = np.random.default_rng(1)
    codes = np.packbits(rng.integers(0, 2, size=(2000, 20), dtype=np.uint8), axis=1)  # 20 bits: many ties
    keys = np.arange(2000, dtype=np.int64) * 3
    index = _faiss_binary(codes)
    qs = codes[:5] ^ np.uint8(1)
    excluded = [rng.random(2000) < 0.3 for _ in range(5)]
    D, I = hamming_topk(index, qs, 25, keys, excluded)
    for j in range(5):
        rd, ri = reference_topk(codes, qs[j], 25, keys, excluded[j])
        assert D[j].tolist() == rd.tolist() and I[j].tolist() == ri.tolist()


def test_fewer_items_than_k():
    codes = np.packbits(np.eye(8, dtype=np.uint8)[:3], axis=1)
    D, I = hamming_topk(_faiss_binary(codes), codes[:1], 5, np.arange(3))
    assert I[0].tolist()[:3] == [0, 1, 2] and I[0].tolist()[3:] == [-1, -1] and D[0][3] == -1


def test_combine_normalises_blocks():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(100, 8)).astype(np.float32) * 100.0
    b = rng.normal(size=(100, 4)).astype(np.float32) * 0.01
    b[5] = np.nan
    scales = {"ct": block_scale(a), "dose": block_scale(b)}
    X = combine({"ct": a, "dose": b}, scales, {"ct": 1.0, "dose": 1.0})
    ok = np.isfinite(X).all(axis=1)
    assert ok.sum() == 99 and not ok[5]
    ms_ct = np.mean(np.sum(X[ok, :8] ** 2, axis=1))
    ms_dose = np.mean(np.sum(X[ok, 8:] ** 2, axis=1))
    assert ms_ct == pytest.approx(1.0, rel=0.05) and ms_dose == pytest.approx(1.0, rel=0.05)
    X2 = combine({"ct": a, "dose": b}, scales, {"ct": 1.0, "dose": 3.0})
    np.testing.assert_allclose(X2[ok, 8:], 3 * X[ok, 8:], rtol=1e-5)


def test_single_query_fast_path_matches_brute_force():
    rng = np.random.default_rng(4)
    codes = np.packbits(rng.integers(0, 2, size=(3000, 12), dtype=np.uint8), axis=1)  # 12 bits: heavy ties
    keys = rng.permutation(3000).astype(np.int64)
    index = _faiss_binary(codes)
    for j in range(20):
        q = codes[j:j + 1] ^ np.uint8(j % 7)
        D, I = hamming_topk(index, q, 15, keys)
        rd, ri = reference_topk(codes, q[0], 15, keys)
        assert D[0].tolist() == rd.tolist() and I[0].tolist() == ri.tolist()


def test_flat_engine_is_an_exact_engine():
    engine = _faiss_binary(np.zeros((3, 2), np.uint8))
    assert isinstance(engine, Engine) and engine.exact and engine.ntotal == 3
    D, I = engine.range_search(np.zeros((1, 2), np.uint8), 1)
    assert sorted(I.tolist()) == [0, 1, 2] and D.tolist() == [0, 0, 0]


def test_thread_policy_per_call_pattern_and_per_thread():
    import os
    import threading

    import faiss

    from medhash import threads
    assert os.environ["OMP_WAIT_POLICY"]                       # set (or kept) before faiss started OpenMP
    assert threads.faiss_threads("single") == 1
    assert threads.faiss_threads("batch") == threads.faiss_threads("build") == threads.cpu_count()
    with pytest.raises(ValueError, match="call pattern"):
        threads.faiss_threads("bulk")
    assert threads.search_threads(1) == 1 and faiss.omp_get_max_threads() == 1
    seen = []
    t = threading.Thread(target=lambda: seen.append(threads.set_faiss_threads(3) and faiss.omp_get_max_threads()))
    t.start()
    t.join()
    assert seen == [3] and faiss.omp_get_max_threads() == 1    # another thread's setting is its own
    threads.search_threads(5)
    assert faiss.omp_get_max_threads() == threads.cpu_count()
