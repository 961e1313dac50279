"""Tests of cmi.losses against direct, loop-based or hand computations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cmi.losses import (
    balance_loss,
    contrastive_interest_loss,
    orthogonality_loss,
    sampled_softmax,
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors gain nothing from threads, and the machine's cores are shared."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def direct_sampled_softmax(interests, items, positive, negatives, temperature, choice):
    """One row and one candidate at a time, in plain Python arithmetic."""
    total = 0.0
    for b in range(interests.shape[0]):
        per_interest = [
            float(interests[b, k] @ items[positive[b]]) for k in range(len(interests[b]))
        ]
        chosen = max(range(len(per_interest)), key=per_interest.__getitem__)

        def candidate_score(item, b=b, chosen=chosen):
            if choice == "max":
                return max(float(interests[b, k] @ items[item]) for k in range(interests.shape[1]))
            return float(interests[b, chosen] @ items[item])

        candidates = [int(positive[b])] + [int(n) for n in negatives if int(n) != int(positive[b])]
        logits = [candidate_score(item) / temperature for item in candidates]
        log_normaliser = math.log(sum(math.exp(value) for value in logits))
        total += log_normaliser - logits[0]
    return total / interests.shape[0]


@pytest.mark.parametrize("choice", ["max", "target"])
def test_sampled_softmax_matches_direct_computation(choice):
    torch.manual_seed(0)
    interests = torch.randn(5, 3, 4, dtype=torch.float64)
    items = torch.randn(12, 4, dtype=torch.float64)
    positive = torch.tensor([1, 2, 3, 4, 5])
    negatives = torch.tensor([6, 2, 7, 5, 5, 9])  # 2 and 5 are accidental hits for rows 1, 4
    expected = direct_sampled_softmax(interests, items, positive, negatives, 0.5, choice)
    got = sampled_softmax(interests, items, positive, negatives, 0.5, choice)
    assert float(got) == pytest.approx(expected, rel=1e-10)


def test_sampled_softmax_masks_accidental_hits():
    interests = torch.ones(1, 1, 2)
    items = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    # The only negatives equal the positive: the row's loss is -log(1) = 0.
    got = sampled_softmax(interests, items, torch.tensor([1]), torch.tensor([1, 1]), 1.0)
    assert float(got) == pytest.approx(0.0, abs=1e-7)
    # One hit masked, one real negative with the same score: log 2 (log 3 if unmasked).
    got = sampled_softmax(interests, items, torch.tensor([1]), torch.tensor([1, 2]), 1.0)
    assert float(got) == pytest.approx(math.log(2.0), rel=1e-6)  # scores 1 and 1


def test_sampled_softmax_rejects_unknown_choice():
    with pytest.raises(ValueError, match="interest_choice"):
        sampled_softmax(
            torch.ones(1, 1, 2), torch.ones(3, 2), torch.tensor([1]), torch.tensor([2]), 1.0, "mean"
        )


def test_contrastive_loss_matches_loops():
    torch.manual_seed(1)
    view_a = torch.randn(3, 2, 5, dtype=torch.float64)
    view_b = torch.randn(3, 2, 5, dtype=torch.float64)
    temperature = 0.3
    rows_a = [F.normalize(v, dim=0) for v in view_a.reshape(6, 5)]
    rows_b = [F.normalize(v, dim=0) for v in view_b.reshape(6, 5)]
    similarity = [[float(a @ b) / temperature for b in rows_b] for a in rows_a]
    n = len(rows_a)
    a_to_b = (
        sum(
            math.log(sum(math.exp(similarity[i][j]) for j in range(n))) - similarity[i][i]
            for i in range(n)
        )
        / n
    )
    b_to_a = (
        sum(
            math.log(sum(math.exp(similarity[j][i]) for j in range(n))) - similarity[i][i]
            for i in range(n)
        )
        / n
    )
    got = contrastive_interest_loss(view_a, view_b, temperature)
    assert float(got) == pytest.approx(a_to_b + b_to_a, rel=1e-10)


def test_contrastive_loss_small_for_identical_separated_views():
    interests = torch.eye(4).reshape(2, 2, 4) * 3.0  # four orthogonal interests
    low = contrastive_interest_loss(interests, interests, 0.05)
    high = contrastive_interest_loss(interests, interests.flip(0), 0.05)
    assert float(low) < 1e-6 < float(high)


def test_orthogonality_loss_zero_for_orthonormal_rows():
    torch.manual_seed(2)
    categories = torch.empty(4, 8)
    torch.nn.init.orthogonal_(categories)
    assert float(orthogonality_loss(categories)) == pytest.approx(0.0, abs=1e-10)


def test_orthogonality_loss_two_by_two_by_hand():
    # G G^T - I = [[0, 0.6], [0.6, 0]]: squared Frobenius norm 0.72, divided by K^2 = 4.
    categories = torch.tensor([[1.0, 0.0], [0.6, 0.8]], dtype=torch.float64)
    assert float(orthogonality_loss(categories)) == pytest.approx(0.18, rel=1e-12)


def test_balance_loss_zero_for_even_routing():
    routing = torch.full((2, 3, 4), 0.25)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    assert float(balance_loss(routing, mask)) == pytest.approx(0.0, abs=1e-7)


def test_balance_loss_by_hand_ignores_padding():
    routing = torch.tensor(
        [[[0.8, 0.2], [0.6, 0.4], [0.0, 1.0]]], dtype=torch.float64
    )  # the last position is padding and must not count
    mask = torch.tensor([[True, True, False]])
    # q = (0.7, 0.3); mean 0.5; population std 0.2; loss 0.4.
    assert float(balance_loss(routing, mask)) == pytest.approx(0.4, rel=1e-12)


def test_balance_loss_one_category_is_zero():
    routing = torch.ones(2, 3, 1)
    assert float(balance_loss(routing, torch.ones(2, 3, dtype=torch.bool))) == 0.0
