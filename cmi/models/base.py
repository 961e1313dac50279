"""The interface every recommender of the study implements (see /work/brief.md).

A model maps a left-aligned history (B, L) to K interest vectors (B, K, d) and exposes the
(N + 1, d) item vectors they are scored against; an item's score is the max over interests.
Training goes through `loss_terms` (named, unweighted) and `total_loss` (weighted sum).
"""

from __future__ import annotations

import torch
from torch import nn

from cmi.batch import TrainBatch
from cmi.layers import trim_padding
from cmi.losses import sampled_softmax


class Recommender(nn.Module):
    """Base class: validation of common hyperparameters, scoring and the default loss."""

    n_interests: int = 1  # K (1 for single-interest models)
    needs_views: bool = False  # True when the sampler must fill TrainBatch.view_a / view_b
    trainable: bool = True  # False for Pop: the trainer skips optimisation
    interest_choice: str = "max"  # how the sampled softmax scores candidates (see losses.py)

    def __init__(
        self, *, n_items: int, dim: int, max_len: int, temperature: float, n_interests: int = 1
    ) -> None:
        super().__init__()
        for name, value in (
            ("n_items", n_items),
            ("dim", dim),
            ("max_len", max_len),
            ("n_interests", n_interests),
        ):
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature!r}")
        self.n_items = int(n_items)
        self.dim = int(dim)
        self.max_len = int(max_len)
        self.temperature = float(temperature)
        self.n_interests = int(n_interests)

    # --- what each model defines -------------------------------------------------------

    def interests(self, history: torch.Tensor) -> torch.Tensor:
        """(B, L) long history -> (B, K, d) interest vectors."""
        raise NotImplementedError

    def item_vectors(self) -> torch.Tensor:
        """The (N + 1, d) vectors items are scored with (row 0 is padding)."""
        raise NotImplementedError

    # --- shared behaviour --------------------------------------------------------------

    def prepare_history(self, history: torch.Tensor) -> torch.Tensor:
        """Check a (B, L) history and drop its all-padding columns: -> (B, L')."""
        if history.dim() != 2:
            raise ValueError(f"history must be a (B, L) tensor, got shape {tuple(history.shape)}")
        if history.dtype != torch.long:
            raise ValueError(f"history must be a long tensor, got {history.dtype}")
        if history.shape[1] > self.max_len:
            raise ValueError(f"history has {history.shape[1]} columns, max_len={self.max_len}")
        return trim_padding(history)

    def score(self, history: torch.Tensor) -> torch.Tensor:
        """(B, L) -> (B, N + 1): `max_k interests_k . item_vectors` for every item."""
        interests = self.interests(history)  # (B, K, d)
        items = self.item_vectors()  # (N + 1, d)
        # One interest at a time keeps memory at (B, N + 1) instead of (B, K, N + 1).
        scores = interests[:, 0] @ items.T  # (B, N + 1)
        for k in range(1, interests.shape[1]):
            scores = torch.maximum(scores, interests[:, k] @ items.T)
        return scores

    def loss_terms(self, batch: TrainBatch) -> dict[str, torch.Tensor]:
        """Unweighted loss terms; the default is the sampled softmax alone ("rec")."""
        interests = self.interests(batch.history)  # (B, K, d)
        rec = sampled_softmax(
            interests,
            self.item_vectors(),
            batch.positive,
            batch.negative,
            self.temperature,
            self.interest_choice,
        )
        return {"rec": rec}

    def loss_weights(self) -> dict[str, float]:
        """Weight of each loss term in `total_loss`."""
        return {"rec": 1.0}

    def total_loss(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """Weighted sum of the terms `loss_terms` returned."""
        weights = self.loss_weights()
        unknown = set(terms) - set(weights)
        if unknown:
            raise ValueError(f"loss terms {sorted(unknown)} have no weight in {weights}")
        return sum(weights[name] * term for name, term in terms.items())
