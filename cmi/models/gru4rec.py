"""GRU4Rec: a recurrent network reads the history; its last state is the user vector.

Balazs Hidasi, Alexandros Karatzoglou, Linas Baltrunas, Domonkos Tikk, "Session-based
Recommendations with Recurrent Neural Networks", ICLR 2016.
"""

from __future__ import annotations

import torch
from torch import nn

from cmi.layers import history_lengths, item_embedding_table, last_gru_state
from cmi.models.base import Recommender


class GRU4Rec(Recommender):
    """Item embeddings -> one GRU layer over the real items -> state at the last item."""

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
        # NOTE: the paper feeds one-hot items and trains session-parallel mini-batches with a
        # ranking loss (BPR/TOP1); here an embedding layer feeds the GRU, whole histories are
        # batched, and the shared sampled softmax over the same item table is the loss.
        self.item_embedding = item_embedding_table(self.n_items, self.dim)
        self.gru = nn.GRU(self.dim, self.dim, num_layers=1, batch_first=True)

    def item_vectors(self) -> torch.Tensor:
        return self.item_embedding.weight  # (N + 1, d)

    def interests(self, history: torch.Tensor) -> torch.Tensor:
        history = self.prepare_history(history)  # (B, L)
        embedded = self.item_embedding(history)  # (B, L, d)
        state = last_gru_state(self.gru, embedded, history_lengths(history))  # (B, d)
        return state[:, None, :]  # (B, 1, d)
