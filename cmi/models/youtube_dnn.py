"""YouTube DNN: a user vector from the mean of the history's item embeddings and an MLP.

Paul Covington, Jay Adams, Emre Sargin, "Deep Neural Networks for YouTube Recommendations",
RecSys 2016 (the candidate-generation network).
"""

from __future__ import annotations

import torch
from torch import nn

from cmi.layers import item_embedding_table, masked_mean, padding_mask
from cmi.models.base import Recommender


class YouTubeDNN(Recommender):
    """Mean-pooled watch history -> ReLU tower -> one user vector, scored by dot product."""

    def __init__(
        self,
        *,
        n_items: int,
        dim: int = 64,
        max_len: int = 100,
        n_interests: int = 1,
        temperature: float = 1.0,
    ) -> None:
        # n_interests is accepted for a uniform constructor; the model has one interest.
        super().__init__(n_items=n_items, dim=dim, max_len=max_len, temperature=temperature)
        # NOTE: one item table serves as input embedding and softmax weight (as in ComiRec's
        # reimplementations of the baselines); the paper learns them separately.
        self.item_embedding = item_embedding_table(self.n_items, self.dim)
        # NOTE: the paper concatenates search tokens, geography, age, gender and example age
        # with the watch vector; the study's data is item sequences only, so the tower reads
        # the watch vector alone. Its last layer is linear so the user vector can point
        # anywhere (a ReLU output would be confined to the positive orthant).
        self.tower = nn.Sequential(
            nn.Linear(self.dim, self.dim), nn.ReLU(), nn.Linear(self.dim, self.dim)
        )

    def item_vectors(self) -> torch.Tensor:
        return self.item_embedding.weight  # (N + 1, d)

    def interests(self, history: torch.Tensor) -> torch.Tensor:
        history = self.prepare_history(history)  # (B, L)
        watched = masked_mean(self.item_embedding(history), padding_mask(history))  # (B, d)
        return self.tower(watched)[:, None, :]  # (B, d) -> (B, 1, d)
