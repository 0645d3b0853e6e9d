import numpy as np
import pytest

from medhash.evaluate import dice_from_overlap, jaccard_from_dice, set_jaccard, tie_aware_overlap


def test_overlap_without_ties():
    d = np.array([0.1, 0.5, 0.2, 0.9, 0.3])
    assert tie_aware_overlap(d, np.array([0, 2, 4]), 3) == 3.0
    assert tie_aware_overlap(d, np.array([1, 3, 4]), 3) == 1.0


def test_overlap_with_ties_is_the_expectation():
    # hamming distances: item 0 at 1, items 1..4 tied at 2; k = 3 -> 2 slots among 4 tied items
    d = np.array([1, 2, 2, 2, 2, 5], dtype=float)
    truth = np.array([0, 1, 5])
    # item 0 surely in; item 1 in with probability 2/4; item 5 never
    assert tie_aware_overlap(d, truth, 3) == pytest.approx(1.5)
    # brute force over all tie-breaks
    import itertools
    vals = [len({0, *c} & set(truth)) for c in itertools.combinations([1, 2, 3, 4], 2)]
    assert np.mean(vals) == pytest.approx(1.5)


def test_one_bit_codes_give_a_meaningful_score():
    d = np.array([0] * 6 + [1] * 4, dtype=float)  # 1-bit codes: two distance values
    truth = np.arange(3)
    assert tie_aware_overlap(d, truth, 3) == pytest.approx(3 * 3 / 6)


def test_excluded_items_and_k_bounds():
    d = np.array([np.inf, 1.0, 2.0])
    assert tie_aware_overlap(d, np.array([1, 2]), 2) == 2.0
    with pytest.raises(ValueError, match="between 1 and the 2 candidates"):
        tie_aware_overlap(d, np.array([1, 2, 0]), 3)


def test_dice_jaccard_and_sets():
    assert dice_from_overlap(25, 50) == 0.5
    assert jaccard_from_dice(0.5) == pytest.approx(1 / 3)
    assert jaccard_from_dice(1.0) == 1.0
    assert set_jaccard(frozenset(), frozenset()) == 1.0
    assert set_jaccard({"a", "b"}, {"b", "c"}) == pytest.approx(1 / 3)
    assert set_jaccard({"a"}, set()) == 0.0
