"""Training losses: the sampled softmax every model uses, and CMI's three auxiliary losses
(contrastive multi-interest, orthogonality of categories, balanced routing).

Formulas follow the paper; each function's docstring states its own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

INTEREST_CHOICES = ("max", "target")


def sampled_softmax(
    interests: torch.Tensor,
    item_vectors: torch.Tensor,
    positive: torch.Tensor,
    negatives: torch.Tensor,
    temperature: float,
    interest_choice: str = "max",
) -> torch.Tensor:
    """Mean cross-entropy of the positive against the batch's shared pool of negatives.

    interests (B, K, d), item_vectors (N+1, d), positive (B,), negatives (M,) -> scalar.

    Row b's candidates are {positive[b]} U negatives; with s(b, j) the candidate's score,
    `loss_b = -log( exp(s(b, v+)/T) / sum_{j in candidates} exp(s(b, j)/T) )`, T the
    temperature. Score of a candidate j:
    - "max": `s(b, j) = max_k u_bk . e_j` (CMI: each candidate meets its best interest);
    - "target": `k* = argmax_k u_bk . e_{v+}` and `s(b, j) = u_bk* . e_j` for every
      candidate (MIND/ComiRec: the interest closest to the target is trained).
    A negative equal to the row's positive (an accidental hit) is left out of that row.
    """
    if interest_choice not in INTEREST_CHOICES:
        raise ValueError(
            f"interest_choice must be one of {INTEREST_CHOICES}, got {interest_choice!r}"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")

    positive_vectors = item_vectors[positive]  # (B, d)
    negative_vectors = item_vectors[negatives]  # (M, d)
    positive_per_interest = torch.einsum("bkd,bd->bk", interests, positive_vectors)  # (B, K)

    if interest_choice == "max":
        positive_scores = positive_per_interest.amax(dim=1)  # (B,)
        negative_scores = torch.einsum("bkd,md->bkm", interests, negative_vectors)  # (B, K, M)
        negative_scores = negative_scores.amax(dim=1)  # (B, K, M) -> (B, M)
    else:
        chosen = positive_per_interest.argmax(dim=1)  # (B,)
        rows = torch.arange(interests.shape[0], device=interests.device)
        chosen_interest = interests[rows, chosen]  # (B, K, d) -> (B, d)
        positive_scores = positive_per_interest[rows, chosen]  # (B,)
        negative_scores = chosen_interest @ negative_vectors.T  # (B, M)

    accidental_hit = negatives[None, :] == positive[:, None]  # (B, M)
    negative_scores = negative_scores.masked_fill(accidental_hit, float("-inf"))
    logits = torch.cat([positive_scores[:, None], negative_scores], dim=1) / temperature
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, target)  # logits (B, 1 + M), the positive in column 0


def contrastive_interest_loss(
    view_a: torch.Tensor, view_b: torch.Tensor, temperature: float
) -> torch.Tensor:
    """CMI's contrastive multi-interest loss between the interests of two views.

    view_a, view_b (B, K, d) -> scalar. With A and B the (B*K, d) stacks of L2-normalised
    interests (row b*K + k is user b's interest k) and `S = A B^T / temperature`:
    `L_cl = CE(S, diag) + CE(S^T, diag)`, each cross-entropy averaged over its B*K rows. The
    positive of a row is the same user's same interest in the other view; every other
    (user, interest) pair, the same user's other interests included, is a negative.
    """
    if view_a.shape != view_b.shape:
        raise ValueError(f"views must have the same shape, got {view_a.shape} and {view_b.shape}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    a = F.normalize(view_a.reshape(-1, view_a.shape[-1]), dim=-1)  # (B, K, d) -> (B*K, d)
    b = F.normalize(view_b.reshape(-1, view_b.shape[-1]), dim=-1)  # (B*K, d)
    # S^T is computed as its own product B A^T / temperature: the same numbers, but the
    # backward pass then avoids adding a transposed (B*K, B*K) gradient (measured 1.6x faster).
    similarity = (a / temperature) @ b.T  # S: (B*K, B*K)
    similarity_transposed = (b / temperature) @ a.T  # S^T: (B*K, B*K)
    diagonal = torch.arange(similarity.shape[0], device=similarity.device)
    return F.cross_entropy(similarity, diagonal) + F.cross_entropy(similarity_transposed, diagonal)


def orthogonality_loss(categories: torch.Tensor) -> torch.Tensor:
    """`L_orth = || G G^T - I ||_F^2 / K^2` for the (K, d) category matrix G.

    G is used as given: pass the L2-normalised category vectors (as CMI does), so the
    diagonal of G G^T is 1 and only the pairwise cosines count.
    """
    n_categories = categories.shape[0]
    gram = categories @ categories.T  # (K, d) -> (K, K)
    identity = torch.eye(n_categories, dtype=gram.dtype, device=gram.device)
    return ((gram - identity) ** 2).sum() / n_categories**2


def balance_loss(routing: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Coefficient of variation of the categories' mean routing weight: `std(q) / mean(q)`.

    routing (B, L, K), mask (B, L) bool -> scalar. `q_k` is the mean of `p[t, k]` over all
    real positions of the batch (padding excluded). The std is the population std (divisor
    K, not K - 1), so the loss is defined for K = 1 (where it is 0) and is 0 whenever the
    categories are used evenly.
    """
    weights = mask.to(routing.dtype)  # (B, L)
    total = torch.einsum("blk,bl->k", routing, weights)  # (K,)
    q = total / weights.sum().clamp(min=1.0)  # (K,)
    return q.std(correction=0) / q.mean().clamp(min=1e-12)
