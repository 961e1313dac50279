"""Tests of cmi.evaluate: metrics against hand-computed values and plain-Python references,
ranking against brute force and per-interest merging, masking, chunking and the faiss path."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from cmi.evaluate import (
    category_coverage_at,
    evaluate,
    hit_rate_at,
    intra_list_diversity_at,
    ndcg_at,
    rank_top_items,
    recall_at,
)
from cmi.ragged import Ragged


def log2(x: float) -> float:
    return math.log2(x)


# --------------------------------------------------------------------------------------------
# Stand-ins


class StandInModel(nn.Module):
    """Fixed random item vectors; interests a fixed function of the history (no training)."""

    def __init__(self, n_items: int, n_interests: int = 3, dim: int = 8, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.n_interests = n_interests
        self.table = torch.randn(n_items + 1, dim, generator=generator)
        self.projections = torch.randn(n_interests, dim, dim, generator=generator)
        self.offsets = torch.randn(n_interests, dim, generator=generator)
        self.seen_histories: list[torch.Tensor] = []

    def interests(self, history: torch.Tensor) -> torch.Tensor:
        self.seen_histories.append(history.clone())
        mask = (history != 0).float().unsqueeze(-1)  # (B, L, 1)
        pooled = (self.table[history] * mask).sum(1) / mask.sum(1).clamp(min=1)  # (B, d)
        return torch.einsum("bd,kde->bke", pooled, self.projections) + self.offsets  # (B, K, d)

    def item_vectors(self) -> torch.Tensor:
        return self.table


def random_histories(n_users: int, n_items: int, max_length: int, seed: int) -> Ragged:
    rng = np.random.default_rng(seed)
    rows = [
        rng.integers(1, n_items + 1, size=rng.integers(1, max_length + 1)).tolist()
        for _ in range(n_users)
    ]
    return Ragged.from_lists(rows)


def brute_force_top(model, histories: Ragged, users, k: int, max_len: int) -> np.ndarray:
    """Python loop: score every item by max over interests, drop history and 0, sort."""
    item_vectors = model.item_vectors().numpy().astype(np.float64)
    out = []
    for user in users:
        row = histories.row(user).tolist()
        history = torch.tensor([row[-max_len:] + [0] * (max_len - len(row[-max_len:]))])
        interests = model.interests(history)[0].detach().numpy().astype(np.float64)
        scores = (interests @ item_vectors.T).max(axis=0)
        allowed = [v for v in range(1, len(item_vectors)) if v not in set(row)]
        allowed.sort(key=lambda v: -scores[v])
        out.append(allowed[:k])
    return np.array(out)


# --------------------------------------------------------------------------------------------
# Accuracy metrics by hand

TOP = np.array([[5, 3, 9, 2], [1, 4, 6, 8], [7, 1, 2, 3], [2, 3, 4, 5]])
DISTINCT = Ragged.from_lists([[3, 2, 7], [1], [], [6, 7]])
WITH_REPEATS = Ragged.from_lists([[3, 7, 3, 2, 11], [1, 1], [], [6]])


def test_distinct_metrics_by_hand():
    # User 0 hits item 3 at rank 2 and item 2 at rank 4, out of 3 targets.
    recall_2 = np.array([1 / 3, 1.0, np.nan, 0.0])
    recall_4 = np.array([2 / 3, 1.0, np.nan, 0.0])
    np.testing.assert_allclose(recall_at(TOP, DISTINCT, 2), recall_2)
    np.testing.assert_allclose(recall_at(TOP, DISTINCT, 4), recall_4)
    np.testing.assert_allclose(hit_rate_at(TOP, DISTINCT, 1), [0.0, 1.0, np.nan, 0.0])
    np.testing.assert_allclose(hit_rate_at(TOP, DISTINCT, 2), [1.0, 1.0, np.nan, 0.0])

    # IDCG@2 over min(3, 2) = 2 positions; IDCG@4 over min(3, 4) = 3 positions.
    ndcg_0_at_2 = (1 / log2(3)) / (1 + 1 / log2(3))
    ndcg_0_at_4 = (1 / log2(3) + 1 / log2(5)) / (1 + 1 / log2(3) + 1 / log2(4))
    np.testing.assert_allclose(ndcg_at(TOP, DISTINCT, 2), [ndcg_0_at_2, 1.0, np.nan, 0.0])
    np.testing.assert_allclose(ndcg_at(TOP, DISTINCT, 4), [ndcg_0_at_4, 1.0, np.nan, 0.0])
    assert ndcg_0_at_2 == pytest.approx(0.386853, abs=1e-6)

    # The average is over the three users with targets.
    assert np.nanmean(recall_at(TOP, DISTINCT, 2)) == pytest.approx((1 / 3 + 1 + 0) / 3)


def test_authors_variant_by_hand():
    # User 0 clicked 3 twice, 7, 2 and a history item 11: 5 occurrences.
    recall_2 = [2 / 5, 1.0, np.nan, 0.0]
    recall_4 = [3 / 5, 1.0, np.nan, 0.0]
    np.testing.assert_allclose(recall_at(TOP, WITH_REPEATS, 2, count_repeats=True), recall_2)
    np.testing.assert_allclose(recall_at(TOP, WITH_REPEATS, 4, count_repeats=True), recall_4)
    # Graded gains: item 3 has gain 2; the ideal list is 3 (2), then three items of gain 1.
    ndcg_0_at_2 = (2 / log2(3)) / (2 + 1 / log2(3))
    ndcg_0_at_4 = (2 / log2(3) + 1 / log2(5)) / (2 + 1 / log2(3) + 1 / log2(4) + 1 / log2(5))
    np.testing.assert_allclose(
        ndcg_at(TOP, WITH_REPEATS, 2, count_repeats=True), [ndcg_0_at_2, 1.0, np.nan, 0.0]
    )
    np.testing.assert_allclose(
        ndcg_at(TOP, WITH_REPEATS, 4, count_repeats=True), [ndcg_0_at_4, 1.0, np.nan, 0.0]
    )
    # Without repeats counted, the same lists read as distinct targets.
    np.testing.assert_allclose(recall_at(TOP, WITH_REPEATS, 4), [2 / 4, 1.0, np.nan, 0.0])


def reference_metrics(top, targets, n, count_repeats):
    """Plain Python over sets and counters, one user at a time."""
    recalls, hit_rates, ndcgs = [], [], []
    for row, target_row in zip(top.tolist(), targets):
        counts = Counter(target_row) if count_repeats else Counter(set(target_row))
        if not counts:
            recalls.append(np.nan), hit_rates.append(np.nan), ndcgs.append(np.nan)
            continue
        gains = [counts.get(item, 0) if item > 0 else 0 for item in row[:n]]
        recalls.append(sum(gains) / sum(counts.values()))
        hit_rates.append(float(any(gains)))
        dcg = sum(gain / log2(rank + 2) for rank, gain in enumerate(gains))
        ideal = sorted(counts.values(), reverse=True)[:n]
        ndcgs.append(dcg / sum(gain / log2(rank + 2) for rank, gain in enumerate(ideal)))
    return np.array(recalls), np.array(hit_rates), np.array(ndcgs)


@pytest.mark.parametrize("count_repeats", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_plain_python(count_repeats, seed):
    rng = np.random.default_rng(seed)
    n_users, n_items, k = 60, 25, 8
    top = np.stack([rng.permutation(np.arange(1, n_items + 1))[:k] for _ in range(n_users)])
    top[rng.random(top.shape) < 0.05] = -1  # a few empty slots
    target_rows = []
    for _ in range(n_users):
        size = rng.integers(0, 10)
        row = rng.integers(1, n_items + 1, size=size)
        target_rows.append(row.tolist() if count_repeats else list(dict.fromkeys(row.tolist())))
    targets = Ragged.from_lists(target_rows)
    for n in range(1, k + 1):
        expected = reference_metrics(top, target_rows, n, count_repeats)
        for function, reference in zip((recall_at, hit_rate_at, ndcg_at), expected):
            np.testing.assert_allclose(function(top, targets, n, count_repeats), reference)


def test_metric_rejects_cutoff_beyond_list():
    with pytest.raises(ValueError, match="N=5"):
        recall_at(TOP, DISTINCT, 5)


# --------------------------------------------------------------------------------------------
# Coverage and diversity

CATEGORY = np.array([-1, 0, 0, 1, -1, -1, -1, 2, 1, 2])  # item 0 (padding) is -1


def test_coverage_and_diversity_by_hand():
    top = np.array([[1, 2, 3, 4], [5, 6, 7, 8], [7, 9, 3, -1]])
    # Row 0: categories 0, 0, 1, unknown. Row 1: unknown, unknown, 2, 1. Row 2: 2, 2, 1, empty.
    # C = 3 distinct primary categories (0, 1, 2).
    np.testing.assert_allclose(category_coverage_at(top, CATEGORY, 4), [2 / 3, 2 / 3, 2 / 3])
    np.testing.assert_allclose(category_coverage_at(top, CATEGORY, 2), [1 / 2, 0 / 2, 1 / 2])
    np.testing.assert_allclose(category_coverage_at(top, CATEGORY, 4, 10), [2 / 4, 2 / 4, 2 / 4])
    # Row 0: one equal pair (1, 2) of 6. Row 1: the two unknowns are equal, 5 of 6 differ.
    # Row 2: 3 filled slots, pairs (7, 9) equal, 2 of 3 differ.
    np.testing.assert_allclose(intra_list_diversity_at(top, CATEGORY, 4), [5 / 6, 5 / 6, 2 / 3])
    np.testing.assert_allclose(intra_list_diversity_at(top, CATEGORY, 2), [0.0, 0.0, 0.0])
    np.testing.assert_allclose(intra_list_diversity_at(top, CATEGORY, 1), [np.nan] * 3)


def test_diversity_matches_pairwise_loop():
    rng = np.random.default_rng(3)
    category = np.concatenate([[-1], rng.integers(-1, 4, size=40)])
    top = np.stack([rng.permutation(np.arange(1, 41))[:10] for _ in range(30)])
    for n in (2, 5, 10):
        expected = []
        for row in top[:, :n]:
            labels = category[row]
            pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
            expected.append(np.mean([labels[i] != labels[j] for i, j in pairs]))
        np.testing.assert_allclose(intra_list_diversity_at(top, category, n), expected)


# --------------------------------------------------------------------------------------------
# Ranking


def test_ranking_equals_brute_force():
    model = StandInModel(n_items=50, n_interests=3)
    histories = random_histories(12, 50, 15, seed=1)
    users = np.array([3, 0, 11, 5])
    top = rank_top_items(model, histories, users, k=10, max_len=6)
    np.testing.assert_array_equal(top, brute_force_top(model, histories, users, 10, 6))


def test_max_over_interests_equals_merging_per_interest_lists():
    model = StandInModel(n_items=80, n_interests=4, seed=2)
    histories = random_histories(10, 80, 20, seed=2)
    users = np.arange(10)
    k, max_len = 12, 8
    top = rank_top_items(model, histories, users, k=k, max_len=max_len)

    history = torch.from_numpy(histories.padded(users, max_len, keep="last"))
    interests = model.interests(history).detach().numpy()  # (B, K, d)
    item_vectors = model.item_vectors().numpy()
    for position, user in enumerate(users):
        masked = set(histories.row(user).tolist()) | {0}
        best: dict[int, float] = {}
        for interest in interests[position]:
            scores = item_vectors @ interest
            ranked = [v for v in np.argsort(-scores) if v not in masked][:k]  # one interest
            for item in ranked:
                best[int(item)] = max(best.get(int(item), -np.inf), float(scores[item]))
        merged = sorted(best, key=lambda item: -best[item])[:k]
        assert top[position].tolist() == merged


@pytest.mark.parametrize("use_faiss", [False, True])
def test_history_and_padding_never_recommended(use_faiss):
    if use_faiss:
        pytest.importorskip("faiss", reason="faiss is not installed; the torch path is the default")
    n_items, k = 40, 10
    model = StandInModel(n_items=n_items, n_interests=2, seed=4)
    with torch.no_grad():
        # Item 0 and items 1..12 are made to beat every other item for every user.
        direction = model.interests(torch.tensor([[1]]))[0].mean(0)
        model.table[:13] = 1000 * direction / direction.norm()
    # Each user has items 1..12 early in the history, beyond the max_len=3 input window.
    rows = [list(range(1, 13)) + [20 + user, 30 + user, 25] for user in range(6)]
    histories = Ragged.from_lists(rows)
    model.seen_histories.clear()
    top = rank_top_items(model, histories, np.arange(6), k=k, max_len=3, use_faiss=use_faiss)
    for user, row in enumerate(rows):
        assert not set(top[user].tolist()) & (set(row) | {0})
    np.testing.assert_array_equal(top, brute_force_top(model, histories, np.arange(6), k, 3))
    assert model.seen_histories[0][0].tolist() == [20, 30, 25]  # last max_len items only


def test_users_with_too_few_items_get_empty_slots():
    model = StandInModel(n_items=6)
    histories = Ragged.from_lists([[1, 2, 3, 4], [5]])
    top = rank_top_items(model, histories, np.array([0, 1]), k=4, max_len=10)
    assert sorted(top[0, :2].tolist()) == [5, 6] and top[0, 2:].tolist() == [-1, -1]
    assert -1 not in top[1]
    with pytest.raises(ValueError, match="exceeds"):
        rank_top_items(model, histories, np.array([0]), k=7, max_len=10)


@pytest.mark.parametrize("batch_users, item_chunk", [(1, None), (4, 7), (100, 1), (3, 200)])
def test_chunking_gives_identical_lists(batch_users, item_chunk):
    model = StandInModel(n_items=120, n_interests=4, seed=5)
    histories = random_histories(25, 120, 40, seed=5)
    users = np.arange(25)[::-1].copy()
    reference = rank_top_items(model, histories, users, k=15, max_len=10)
    chunked = rank_top_items(
        model, histories, users, 15, 10, batch_users=batch_users, item_chunk=item_chunk
    )
    np.testing.assert_array_equal(chunked, reference)


@pytest.mark.parametrize("tile_rows, tile_items", [(4, 7), (12, 16), (8, 1)])
def test_cpu_tiles_give_the_brute_force_lists(monkeypatch, tile_rows, tile_items):
    """Many small tiles (users x items) give the same lists as one product per user."""
    import cmi.evaluate

    monkeypatch.setattr(cmi.evaluate, "TILE_ROWS", tile_rows)
    monkeypatch.setattr(cmi.evaluate, "TILE_ITEMS", tile_items)
    model = StandInModel(n_items=90, n_interests=4, seed=9)
    histories = random_histories(23, 90, 30, seed=9)
    users = np.arange(23)
    top = rank_top_items(model, histories, users, k=12, max_len=8)
    np.testing.assert_array_equal(top, brute_force_top(model, histories, users, 12, 8))


def test_faiss_path_equals_torch_path():
    pytest.importorskip("faiss", reason="faiss is not installed; the torch path is the default")
    model = StandInModel(n_items=300, n_interests=4, dim=16, seed=6)
    histories = random_histories(40, 300, 60, seed=6)
    users = np.arange(40)
    reference = rank_top_items(model, histories, users, k=20, max_len=20)
    with_faiss = rank_top_items(model, histories, users, 20, 20, batch_users=16, use_faiss=True)
    np.testing.assert_array_equal(with_faiss, reference)
    # Empty slots agree too.
    small = StandInModel(n_items=6)
    few = Ragged.from_lists([[1, 2, 3, 4], [5]])
    np.testing.assert_array_equal(
        rank_top_items(small, few, np.array([0, 1]), 4, 10, use_faiss=True),
        rank_top_items(small, few, np.array([0, 1]), 4, 10),
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_ranking_equals_cpu():
    model = StandInModel(n_items=500, n_interests=4, dim=16, seed=8)
    histories = random_histories(64, 500, 50, seed=8)
    users = np.arange(64)
    reference = rank_top_items(model, histories, users, 20, 20)
    model.table, model.projections, model.offsets = (
        tensor.cuda() for tensor in (model.table, model.projections, model.offsets)
    )
    on_cuda = rank_top_items(model, histories, users, 20, 20, item_chunk=128, device="cuda")
    np.testing.assert_array_equal(on_cuda, reference)


def test_model_mode_is_restored():
    model = StandInModel(n_items=10)
    model.train()
    rank_top_items(model, Ragged.from_lists([[1]]), np.array([0]), 3, 5)
    assert model.training


# --------------------------------------------------------------------------------------------
# evaluate() on a stand-in dataset


@dataclass
class StandInDataset:
    """The attributes of cmi.data.PreparedDataset that evaluate() reads."""

    n_items: int
    max_history: int
    item_primary_category: np.ndarray
    item_categories: Ragged
    train_history: Ragged
    test_history: Ragged
    split_targets: dict

    def history(self, split: str) -> Ragged:
        return self.train_history if split == "valid" else self.test_history

    def targets(self, split: str, variant: str = "distinct") -> Ragged:
        return self.split_targets[(split, variant)]


def make_dataset(n_users=30, n_items=60, seed=7) -> StandInDataset:
    rng = np.random.default_rng(seed)
    train = random_histories(n_users, n_items, 12, seed)
    valid_day = random_histories(n_users, n_items, 4, seed + 1)
    test_history = train.concat(valid_day)
    split_targets = {}
    for split, history in (("valid", train), ("test", test_history)):
        distinct, repeats = [], []
        for user in range(n_users):
            clicks = rng.integers(1, n_items + 1, size=rng.integers(0, 6)).tolist()
            repeats.append(clicks)
            seen = set(history.row(user).tolist())
            distinct.append([v for v in dict.fromkeys(clicks) if v not in seen])
        split_targets[(split, "distinct")] = Ragged.from_lists(distinct)
        split_targets[(split, "authors")] = Ragged.from_lists(repeats)
    category = np.concatenate([[-1], rng.integers(-1, 5, size=n_items)]).astype(np.int32)
    categories = Ragged.from_lists([[]] + [[c] if c >= 0 else [] for c in category[1:]])
    return StandInDataset(n_items, 8, category, categories, train, test_history, split_targets)


@pytest.mark.parametrize("variant", ["distinct", "authors"])
def test_evaluate_matches_its_parts(variant):
    dataset = make_dataset()
    model = StandInModel(n_items=dataset.n_items, seed=7)
    result = evaluate(model, dataset, split="test", ks=(5, 10), target_variant=variant)

    targets = dataset.targets("test", variant)
    users = np.flatnonzero(targets.lengths > 0)
    assert result.metrics["n_users"] == len(users) == len(result.per_user)
    np.testing.assert_array_equal(result.per_user["user"], users)
    expected_top = rank_top_items(model, dataset.test_history, users, 10, dataset.max_history)
    np.testing.assert_array_equal(result.top_items, expected_top)

    target_rows = [targets.row(u).tolist() for u in users]
    for n in (5, 10):
        expected = reference_metrics(expected_top, target_rows, n, variant == "authors")
        for name, values in zip(("recall", "hit_rate", "ndcg"), expected):
            np.testing.assert_allclose(result.per_user[f"{name}@{n}"], values)
            assert result.metrics[f"{name}@{n}"] == pytest.approx(values.mean())
        coverage = category_coverage_at(expected_top, dataset.item_primary_category, n)
        assert result.metrics[f"coverage@{n}"] == pytest.approx(coverage.mean())
        assert f"diversity@{n}" in result.metrics
    assert isinstance(result.per_user, pd.DataFrame)


def test_evaluate_rejects_bad_arguments():
    dataset = make_dataset(n_users=5)
    model = StandInModel(n_items=dataset.n_items)
    with pytest.raises(ValueError, match="split"):
        evaluate(model, dataset, split="train")
    with pytest.raises(ValueError, match="target_variant"):
        evaluate(model, dataset, target_variant="all")
