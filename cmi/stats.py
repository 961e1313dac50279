"""Statistics for the book's tables: intervals over seeds, paired per-user tests, and
agreement between two clusterings (learned interests against true categories).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats


@dataclass(frozen=True)
class Interval:
    """A mean with a two-sided t confidence interval."""

    mean: float
    lower: float
    upper: float
    half_width: float
    n: int  # number of values used (NaN values are ignored)


def mean_and_interval(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> Interval:
    """Mean of `values` (one per seed) with a Student t interval.

    `half_width = t_{(1 + confidence) / 2, n - 1} * s / sqrt(n)` with `s` the sample standard
    deviation (ddof = 1); the interval is `mean ± half_width`. NaN values are ignored. With one
    value the spread is unknown: `lower`, `upper` and `half_width` are NaN (not zero), so a
    single seed is never shown as an exact result.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    array = np.asarray(values, dtype=np.float64).ravel()
    array = array[~np.isnan(array)]
    n = len(array)
    if n == 0:
        raise ValueError("mean_and_interval needs at least one non-NaN value")
    mean = float(array.mean())
    if n == 1:
        return Interval(mean, math.nan, math.nan, math.nan, 1)
    quantile = scipy_stats.t.ppf((1 + confidence) / 2, df=n - 1)
    half_width = float(quantile * array.std(ddof=1) / math.sqrt(n))
    return Interval(mean, mean - half_width, mean + half_width, half_width, n)


@dataclass(frozen=True)
class PairedTest:
    """Per-user comparison of two models on one metric (a - b)."""

    mean_difference: float
    t_statistic: float
    t_pvalue: float  # two-sided paired t-test
    wilcoxon_statistic: float
    wilcoxon_pvalue: float  # two-sided Wilcoxon signed-rank test, zero differences dropped
    n: int  # users compared


def _aligned(a, b) -> tuple[np.ndarray, np.ndarray]:
    """Pair the values of a and b: by index for two Series, by position otherwise."""
    if isinstance(a, pd.Series) and isinstance(b, pd.Series):
        if a.index.has_duplicates or b.index.has_duplicates:
            raise ValueError("paired_test: the user ids (Series index) must be unique")
        a, b = a.align(b, join="inner")
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if len(a) != len(b):
        raise ValueError(
            f"paired_test: arrays have {len(a)} and {len(b)} values; pass equal-length arrays "
            "in the same user order, or two Series indexed by user id"
        )
    keep = ~(np.isnan(a) | np.isnan(b))
    return a[keep], b[keep]


def paired_test(a: pd.Series | np.ndarray, b: pd.Series | np.ndarray) -> PairedTest:
    """Paired t-test and Wilcoxon signed-rank test of per-user differences `d = a - b`.

    Two Series are aligned on their index (user ids; users in only one are dropped); arrays
    are paired by position. Pairs with a NaN are dropped. `t = mean(d) / (s_d / sqrt(n))` with
    n - 1 degrees of freedom. When every difference is zero both p-values are 1; when all
    differences are equal but not zero, t is ±inf and its p-value 0. With fewer than two pairs
    the p-values are NaN.
    """
    a, b = _aligned(a, b)
    differences = a - b
    n = len(differences)
    if n == 0:
        raise ValueError("paired_test: no user has a value in both inputs")
    mean_difference = float(differences.mean())
    if n < 2:
        return PairedTest(mean_difference, math.nan, math.nan, math.nan, math.nan, n)
    if not differences.any():
        return PairedTest(0.0, 0.0, 1.0, 0.0, 1.0, n)

    spread = differences.std(ddof=1)
    if spread == 0:
        t_statistic, t_pvalue = math.copysign(math.inf, mean_difference), 0.0
    else:
        t_statistic = mean_difference / (spread / math.sqrt(n))
        t_pvalue = float(2 * scipy_stats.t.sf(abs(t_statistic), df=n - 1))
    wilcoxon = scipy_stats.wilcoxon(differences, zero_method="wilcox")
    return PairedTest(
        mean_difference,
        float(t_statistic),
        t_pvalue,
        float(wilcoxon.statistic),
        float(wilcoxon.pvalue),
        n,
    )


def _contingency(labels_a, labels_b) -> np.ndarray:
    """Counts n_ij of items with label i in a and label j in b (labels are any hashables)."""
    labels_a = np.asarray(labels_a).ravel()
    labels_b = np.asarray(labels_b).ravel()
    if len(labels_a) != len(labels_b):
        raise ValueError(f"label arrays differ in length: {len(labels_a)} and {len(labels_b)}")
    if len(labels_a) == 0:
        raise ValueError("label arrays are empty")
    _, codes_a = np.unique(labels_a, return_inverse=True)
    _, codes_b = np.unique(labels_b, return_inverse=True)
    n_b = codes_b.max() + 1
    counts = np.bincount(codes_a * n_b + codes_b, minlength=(codes_a.max() + 1) * n_b)
    return counts.reshape(-1, n_b).astype(np.float64)


def _entropy(counts: np.ndarray) -> float:
    probabilities = counts[counts > 0] / counts.sum()
    return float(-(probabilities * np.log(probabilities)).sum())


def normalized_mutual_information(labels_a, labels_b) -> float:
    """NMI with arithmetic-mean normalisation: `I(A; B) / ((H(A) + H(B)) / 2)`.

    From the contingency table n_ij (n items, row sums a_i, column sums b_j):
    `I = sum_ij (n_ij / n) log(n n_ij / (a_i b_j))`, `H(A) = -sum_i (a_i / n) log(a_i / n)`.
    The logarithm base cancels. If both labelings have a single cluster, NMI is 1 (they agree).
    """
    table = _contingency(labels_a, labels_b)
    n = table.sum()
    rows, columns = table.sum(axis=1), table.sum(axis=0)
    entropy_a, entropy_b = _entropy(rows), _entropy(columns)
    if entropy_a == 0 and entropy_b == 0:
        return 1.0
    i, j = np.nonzero(table)
    joint = table[i, j]
    mutual_information = float((joint / n * np.log(n * joint / (rows[i] * columns[j]))).sum())
    return max(0.0, mutual_information / ((entropy_a + entropy_b) / 2))


def adjusted_rand_index(labels_a, labels_b) -> float:
    """Adjusted Rand index (Hubert and Arabie): pair agreement corrected for chance.

    With `C(x) = x (x - 1) / 2`, `index = sum_ij C(n_ij)`, `sa = sum_i C(a_i)`,
    `sb = sum_j C(b_j)`, `expected = sa * sb / C(n)`, `maximum = (sa + sb) / 2`:
    `ARI = (index - expected) / (maximum - expected)`. It is 1 for identical partitions (up to
    relabelling) and 0 in expectation for independent ones. If the denominator is zero (both
    labelings all one cluster, or all singletons), the partitions are identical and ARI is 1.
    """
    table = _contingency(labels_a, labels_b)
    n = table.sum()

    def pairs(x):
        return x * (x - 1) / 2

    index = pairs(table).sum()
    sum_a = pairs(table.sum(axis=1)).sum()
    sum_b = pairs(table.sum(axis=0)).sum()
    expected = sum_a * sum_b / pairs(n) if n > 1 else 0.0
    maximum = (sum_a + sum_b) / 2
    if maximum == expected:
        return 1.0
    return float((index - expected) / (maximum - expected))


def summarise_runs(
    frame: pd.DataFrame,
    group_cols: Sequence[str],
    metric_cols: Sequence[str],
    confidence: float = 0.95,
) -> pd.DataFrame:
    """One row per group (e.g. model, setting) of runs (e.g. seeds), with each metric's
    mean and t interval: columns `<metric>_mean`, `_lower`, `_upper`, `_half_width`, and
    `n_runs` (rows in the group). See `mean_and_interval`: NaN values are ignored, one run
    gives NaN bounds, and a metric with no value in a group gives NaN throughout.
    """
    missing = [name for name in [*group_cols, *metric_cols] if name not in frame.columns]
    if missing:
        raise ValueError(f"summarise_runs: columns {missing} not in the frame {list(frame)}")
    records = []
    for key, group in frame.groupby(list(group_cols), sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        record = dict(zip(group_cols, key))
        record["n_runs"] = len(group)
        for metric in metric_cols:
            values = group[metric].to_numpy(dtype=np.float64)
            if np.isnan(values).all():
                interval = Interval(math.nan, math.nan, math.nan, math.nan, 0)
            else:
                interval = mean_and_interval(values, confidence)
            record[f"{metric}_mean"] = interval.mean
            record[f"{metric}_lower"] = interval.lower
            record[f"{metric}_upper"] = interval.upper
            record[f"{metric}_half_width"] = interval.half_width
        records.append(record)
    return pd.DataFrame.from_records(records)
