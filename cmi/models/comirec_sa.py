"""ComiRec-SA: multi-interest extraction by multi-head self-attentive pooling.

Yukuo Cen, Jianwei Zhang, Xu Zou, Chang Zhou, Hongxia Yang, Jie Tang, "Controllable
Multi-Interest Framework for Recommendation", KDD 2020 (the SA variant; the controllable
aggregation module for diversity is not used, as for every model of this study).
"""

from __future__ import annotations

import torch
from torch import nn

from cmi.layers import LearnedPositions, item_embedding_table, padding_mask
from cmi.models.base import Recommender


class ComiRecSA(Recommender):
    """K attention heads over the history: A = softmax_t(W2 tanh(W1 H)), u_k = sum_t A_tk h_t."""

    interest_choice = "target"  # train the interest closest to the target, serve the max

    def __init__(
        self,
        *,
        n_items: int,
        dim: int = 64,
        max_len: int = 100,
        n_interests: int = 4,
        temperature: float = 1.0,
        attention_dim: int | None = None,
    ) -> None:
        super().__init__(
            n_items=n_items,
            dim=dim,
            max_len=max_len,
            temperature=temperature,
            n_interests=n_interests,
        )
        attention_dim = 4 * self.dim if attention_dim is None else attention_dim
        if attention_dim < 1:
            raise ValueError(f"attention_dim must be positive, got {attention_dim!r}")
        self.item_embedding = item_embedding_table(self.n_items, self.dim)
        self.positions = LearnedPositions(self.max_len, self.dim)  # the paper's trainable ones
        self.hidden = nn.Linear(self.dim, attention_dim)  # W1 (d_a x d)
        self.heads = nn.Linear(attention_dim, self.n_interests, bias=False)  # W2 (K x d_a)

    def item_vectors(self) -> torch.Tensor:
        return self.item_embedding.weight  # (N + 1, d)

    def interests(self, history: torch.Tensor) -> torch.Tensor:
        history = self.prepare_history(history)  # (B, L)
        items = self.item_embedding(history)  # (B, L, d)
        keys = items + self.positions(history.shape[1])[None]  # (B, L, d)
        head_scores = self.heads(torch.tanh(self.hidden(keys)))  # (B, L, d_a) -> (B, L, K)
        # A large finite negative instead of -inf keeps an empty history finite (it then
        # attends evenly to padding); any history with items gives padding weight 0.
        head_scores = head_scores.masked_fill(~padding_mask(history)[..., None], -1e9)
        attention = head_scores.softmax(dim=1)  # (B, L, K), softmax over positions
        # NOTE: positions enter the attention scores only; the pooled values are the plain
        # item embeddings, so interests live in the space they are scored in. The paper adds
        # positions to the input embeddings without saying which of the two uses them.
        return torch.einsum("blk,bld->bkd", attention, items)  # (B, K, d)
