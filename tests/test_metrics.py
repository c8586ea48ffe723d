"""Metrics against cases computed by hand; ties and NaN always count against the model."""

import math

import numpy as np
import pytest

from thaw.eval.metrics import bootstrap_interval, graded_ndcg, ranking_metrics, rating_errors, target_rank


def test_rank_counts_strictly_higher_and_tied_scores_against_the_target():
    assert target_rank(0.5, np.array([0.9, 0.1, 0.2])) == 2
    assert target_rank(0.5, np.array([0.5, 0.5, 0.1])) == 3  # two ties, both against
    assert target_rank(1.0, np.array([0.1, 0.2])) == 1


def test_constant_scorer_gets_the_worst_rank_not_the_average():
    assert target_rank(0.0, np.zeros(100)) == 101
    m = ranking_metrics(101, 100)
    assert m["hit@10"] == 0.0 and m["ndcg@10"] == 0.0 and m["auc"] == 0.0
    assert m["mrr"] == pytest.approx(1 / 101)


def test_nan_scores_lose_every_comparison():
    assert target_rank(float("nan"), np.array([0.1, 0.2])) == 3
    assert target_rank(0.5, np.array([float("nan"), 0.1])) == 2


def test_ranking_metrics_by_hand():
    # rank 3 of 101: hit@1 = 0, hit@10 = 1, ndcg@10 = 1/log2(4) = 0.5, mrr = 1/3,
    # auc = 98 of 100 negatives below the target.
    m = ranking_metrics(3, 100)
    assert m == {"hit@1": 0.0, "hit@10": 1.0, "ndcg@10": pytest.approx(0.5),
                 "mrr": pytest.approx(1 / 3), "auc": pytest.approx(0.98)}
    top = ranking_metrics(1, 100)
    assert top["hit@1"] == 1.0 and top["ndcg@10"] == 1.0 and top["auc"] == 1.0
    assert ranking_metrics(11, 100)["ndcg@10"] == 0.0


def test_rating_errors_by_hand():
    e = rating_errors(np.array([3.0, 4.0, 5.0]), np.array([4.0, 4.0, 3.0]))
    assert e["mae"] == pytest.approx(1.0)
    assert e["rmse"] == pytest.approx(math.sqrt(5 / 3))
    assert math.isinf(rating_errors(np.array([np.nan]), np.array([3.0]))["mae"])


def test_graded_ndcg_by_hand():
    ratings = np.array([5.0, 3.0, 1.0])
    # Perfect order.
    assert graded_ndcg(np.array([3.0, 2.0, 1.0]), ratings, 10) == pytest.approx(1.0)
    # Reversed order: gains 31, 7, 1 placed as 1, 7, 31.
    dcg = 1 / math.log2(2) + 7 / math.log2(3) + 31 / math.log2(4)
    ideal = 31 / math.log2(2) + 7 / math.log2(3) + 1 / math.log2(4)
    assert graded_ndcg(np.array([1.0, 2.0, 3.0]), ratings, 10) == pytest.approx(dcg / ideal)
    # @1 keeps only the top slot.
    assert graded_ndcg(np.array([1.0, 2.0, 3.0]), ratings, 1) == pytest.approx(1 / 31)


def test_graded_ndcg_ties_take_the_worst_order():
    ratings = np.array([5.0, 3.0, 1.0])
    tied = graded_ndcg(np.zeros(3), ratings, 10)
    worst = graded_ndcg(np.array([1.0, 2.0, 3.0]), ratings, 10)
    assert tied == pytest.approx(worst)
    assert tied < 1.0


def test_bootstrap_interval_covers_the_mean_and_is_seeded():
    values = np.random.default_rng(1).normal(0.5, 0.1, 200)
    low, high = bootstrap_interval(values, seed=3)
    assert low < values.mean() < high
    assert (low, high) == bootstrap_interval(values, seed=3)
    assert high - low < 0.05
