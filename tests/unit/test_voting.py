from __future__ import annotations

import numpy as np
import pytest

from medsegflow.prompts.voting import average_vote, majority_vote, staple_vote, vote


def test_average_and_majority_differ_on_a_constructed_example():
    # pixel (0, 0): one confident yes, two weak no -> mean 0.6 > 0.5 but 1 of 3 votes
    # pixel (0, 1): two weak yes, one confident no -> mean 0.4 but 2 of 3 votes
    probs = np.array(
        [
            [[0.90, 0.55, 0.0]],
            [[0.45, 0.55, 0.0]],
            [[0.45, 0.10, 1.0]],
        ]
    )
    masks = probs > 0.5
    np.testing.assert_array_equal(average_vote(probs), [[True, False, False]])
    np.testing.assert_array_equal(majority_vote(masks), [[False, True, False]])
    np.testing.assert_array_equal(vote("average", masks_ryx=masks, probs_ryx=probs), [[1, 0, 0]])
    np.testing.assert_array_equal(vote("majority", masks_ryx=masks), [[0, 1, 0]])


def test_majority_tie_is_background_and_one_mask_is_itself():
    masks = np.array([[[1, 1, 0]], [[1, 0, 0]]], dtype=bool)
    np.testing.assert_array_equal(majority_vote(masks), [[True, False, False]])
    single = np.array([[[0, 1, 1]]], dtype=bool)
    for rule in ("average", "majority", "staple"):
        out = vote(rule, masks_ryx=single, probs_ryx=single.astype(float) * 0.9)
        np.testing.assert_array_equal(out, single[0])


def test_staple_recovers_the_consensus_of_noisy_raters():
    truth = np.zeros((40, 40), dtype=bool)
    truth[10:30, 12:28] = True
    rng = np.random.default_rng(0)
    raters = []
    for _ in range(5):
        rater = truth.copy()
        flip = rng.random(truth.shape) < 0.08  # 8 % of pixels wrong per rater
        rater[flip] = ~rater[flip]
        raters.append(rater)
    raters = np.array(raters)
    consensus = staple_vote(raters)
    assert consensus.dtype == bool and consensus.shape == (40, 40)
    errors = int((consensus != truth).sum())
    # about 128 wrong pixels per rater; only where 3 of 5 err together (~7 expected) may
    # the consensus be wrong
    assert (raters != truth).sum(axis=(1, 2)).min() > 100
    assert errors <= 12 and errors <= (majority_vote(raters) != truth).sum() + 2


def test_staple_weights_raters_by_their_estimated_reliability():
    # one exact rater and two noisy ones: majority follows the noisy pair where both err,
    # STAPLE learns that the first rater is reliable and follows it
    truth = np.zeros((40, 40), dtype=bool)
    truth[10:30, 12:28] = True
    rng = np.random.default_rng(1)
    raters = [truth.copy()]
    for _ in range(2):
        rater = truth.copy()
        flip = rng.random(truth.shape) < 0.1
        rater[flip] = ~rater[flip]
        raters.append(rater)
    raters = np.array(raters)
    assert (majority_vote(raters) != truth).sum() > 10
    np.testing.assert_array_equal(staple_vote(raters), truth)


def test_staple_degenerate_inputs():
    empty = np.zeros((3, 8, 8), dtype=bool)
    np.testing.assert_array_equal(staple_vote(empty), np.zeros((8, 8), dtype=bool))
    full = np.ones((2, 8, 8), dtype=bool)
    np.testing.assert_array_equal(staple_vote(full), np.ones((8, 8), dtype=bool))


def test_vote_errors():
    masks = np.zeros((2, 4, 4), dtype=bool)
    with pytest.raises(ValueError, match="probability"):
        vote("average", masks_ryx=masks)
    with pytest.raises(ValueError, match="not one of"):
        vote("median", masks_ryx=masks)
    with pytest.raises(ValueError, match=r"\(R, H, W\)"):
        majority_vote(np.zeros((4, 4), dtype=bool))
