"""training_code/class_prior.py: which class mix a job corrects its answers to, and the importance weights that
score a sample at that mix."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "training_code"))

import class_prior  # noqa: E402
from class_prior import ABID_CLASS_COUNTS, importance_weights, parse_counts, resolve_prior  # noqa: E402

TRAIN = np.array([20.0, 20, 20, 20, 20])  # a balanced quick-run sample


def test_auto_is_the_population_given_else_abids_never_the_training_split():
    population = parse_counts("100,200,300,200,100")
    given = resolve_prior("auto", TRAIN, population)
    assert given.source == "population" and np.allclose(given.weights, [1 / 9, 2 / 9, 3 / 9, 2 / 9, 1 / 9])
    alone = resolve_prior(None, TRAIN)
    assert alone.source == "abid" and np.allclose(alone.weights, np.array(ABID_CLASS_COUNTS) / sum(ABID_CLASS_COUNTS))


def test_explicit_values_keep_their_meaning_whatever_the_population():
    population = parse_counts("1,1,1,1,9")
    assert resolve_prior("train", np.array([10.0, 30, 30, 20, 10]), population).weights[1] == pytest.approx(0.3)
    assert resolve_prior("uniform", TRAIN, population).source == "uniform"
    assert resolve_prior("study", TRAIN, population).source == "abid"
    explicit = resolve_prior("1,1,1,1,8", TRAIN, population)
    assert explicit.source == "explicit" and explicit.weights[4] == pytest.approx(8 / 12)
    assert explicit.as_dict() == {"source": "explicit", "weights": [0.083333, 0.083333, 0.083333, 0.083333, 0.666667]}


@pytest.mark.parametrize("text", ["1,2,3", "0,1,1,1,1", "a,b,c,d,e", "-1,1,1,1,1", "zipf", "nan,1,1,1,1"])
def test_a_bad_class_prior_or_population_is_a_clear_error(text):
    with pytest.raises(ValueError, match="prior"):
        resolve_prior(text, TRAIN)
    with pytest.raises(ValueError, match="prior"):
        parse_counts(text)


def test_no_population_given_is_none():
    assert parse_counts(None) is None and parse_counts(" ") is None


def test_importance_weights_turn_a_balanced_sample_into_the_target_mix():
    y = np.repeat(np.arange(5), [4, 4, 4, 4, 4])
    target = np.array([0.1, 0.2, 0.4, 0.2, 0.1])
    weights = importance_weights(y, target)
    assert weights.mean() == pytest.approx(1.0)
    shares = np.array([weights[y == k].sum() for k in range(5)]) / weights.sum()
    assert np.allclose(shares, target)
    assert np.allclose(importance_weights(y, class_prior.mix(y)), 1.0)  # already at the mix: nothing moves
