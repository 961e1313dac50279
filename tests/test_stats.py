"""Tests of cmi.stats against hand computations and known properties."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from cmi.stats import (
    adjusted_rand_index,
    mean_and_interval,
    normalized_mutual_information,
    paired_test,
    summarise_runs,
)


def test_mean_and_interval_by_hand():
    # mean 2.5, s = sqrt(5 / 3), t_{0.975, 3} = 3.182446 (from a t table).
    interval = mean_and_interval([1.0, 2.0, 3.0, 4.0])
    half_width = 3.182446 * math.sqrt(5 / 3) / 2
    assert interval.mean == 2.5 and interval.n == 4
    assert interval.half_width == pytest.approx(half_width, rel=1e-6)
    assert interval.lower == pytest.approx(2.5 - half_width, rel=1e-6)
    assert interval.upper == pytest.approx(2.5 + half_width, rel=1e-6)
    # A 90% interval is narrower: t_{0.95, 3} = 2.353363.
    narrow = mean_and_interval([1.0, 2.0, 3.0, 4.0], confidence=0.90)
    assert narrow.half_width == pytest.approx(2.353363 * math.sqrt(5 / 3) / 2, rel=1e-6)


def test_mean_and_interval_single_value_and_nan():
    single = mean_and_interval([0.3])
    assert single.mean == 0.3 and single.n == 1
    assert math.isnan(single.lower) and math.isnan(single.upper) and math.isnan(single.half_width)
    assert mean_and_interval([1.0, np.nan, 3.0]).n == 2
    with pytest.raises(ValueError):
        mean_and_interval([])


def test_paired_test_known_t():
    a = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    b = np.array([0.0, 2.0, 1.0, 1.0, 2.0])
    # d = [1, 0, 2, 3, 3]: mean 1.8, sample variance 6.8 / 4 = 1.7.
    t = 1.8 / (math.sqrt(1.7) / math.sqrt(5))
    result = paired_test(a, b)
    assert result.n == 5 and result.mean_difference == pytest.approx(1.8)
    assert result.t_statistic == pytest.approx(t) and t == pytest.approx(3.08697, abs=1e-5)
    assert result.t_pvalue == pytest.approx(scipy_stats.ttest_rel(a, b).pvalue)
    # Non-zero differences 1, 2, 3, 3 are all positive: W- = 0.
    assert result.wilcoxon_statistic == 0.0
    assert 0 < result.wilcoxon_pvalue < 0.2


def test_paired_test_aligns_series_on_user_ids():
    a = pd.Series([1.0, 2.0, 3.0, 4.0, 5.0, 9.0], index=[10, 11, 12, 13, 14, 99])
    b = pd.Series([2.0, 1.0, 1.0, 2.0, 0.0], index=[14, 13, 12, 11, 10])  # shuffled order
    result = paired_test(a, b)
    assert result.n == 5 and result.mean_difference == pytest.approx(1.8)


def test_paired_test_degenerate_differences():
    same = paired_test(np.ones(8), np.ones(8))
    assert same.t_pvalue == 1.0 and same.wilcoxon_pvalue == 1.0 and same.mean_difference == 0
    constant = paired_test(np.full(8, 2.0), np.ones(8))
    assert constant.t_statistic == math.inf and constant.t_pvalue == 0.0
    with pytest.raises(ValueError, match="equal-length"):
        paired_test(np.ones(3), np.ones(4))


def test_clustering_scores_perfect_and_permuted():
    labels = np.repeat(np.arange(5), 20)
    permuted = np.array([3, 0, 4, 1, 2])[labels]  # same partition, other names
    for other in (labels, permuted, permuted.astype(str)):
        assert normalized_mutual_information(labels, other) == pytest.approx(1.0)
        assert adjusted_rand_index(labels, other) == pytest.approx(1.0)


def test_clustering_scores_independent():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 6, size=20_000)
    b = rng.integers(0, 8, size=20_000)
    assert abs(adjusted_rand_index(a, b)) < 0.05
    assert normalized_mutual_information(a, b) < 0.01


def test_clustering_scores_by_hand():
    a = [0, 0, 0, 1, 1, 1]
    b = [0, 0, 1, 1, 2, 2]
    # Contingency [[2, 1, 0], [0, 1, 2]]: sum C(n_ij) = 2, sum C(a_i) = 6, sum C(b_j) = 3,
    # C(6) = 15, expected = 6 * 3 / 15 = 1.2, maximum = 4.5.
    assert adjusted_rand_index(a, b) == pytest.approx((2 - 1.2) / (4.5 - 1.2))
    # I = 4 * (2/6) log(6 * 2 / (3 * 2)) / 2 ... = (2/3) log 2; H(A) = log 2, H(B) = log 3.
    expected_nmi = (2 / 3) * math.log(2) / ((math.log(2) + math.log(3)) / 2)
    assert normalized_mutual_information(a, b) == pytest.approx(expected_nmi)
    assert expected_nmi == pytest.approx(0.515803, abs=1e-6)


def test_summarise_runs():
    frame = pd.DataFrame(
        {
            "model": ["cmi"] * 3 + ["pop"] * 2 + ["one"],
            "seed": [0, 1, 2, 0, 1, 0],
            "recall@50": [0.20, 0.22, 0.24, 0.15, 0.15, 0.3],
        }
    )
    summary = summarise_runs(frame, ["model"], ["recall@50"]).set_index("model")
    cmi = mean_and_interval([0.20, 0.22, 0.24])
    assert summary.loc["cmi", "recall@50_mean"] == pytest.approx(0.22)
    assert summary.loc["cmi", "recall@50_half_width"] == pytest.approx(cmi.half_width)
    assert summary.loc["pop", "recall@50_half_width"] == pytest.approx(0.0)
    assert summary.loc["cmi", "n_runs"] == 3
    assert math.isnan(summary.loc["one", "recall@50_lower"])
    with pytest.raises(ValueError, match="ndcg"):
        summarise_runs(frame, ["model"], ["ndcg@50"])
