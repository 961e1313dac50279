"""SASRec: causal self-attention over the history; the last real position is the user.

Wang-Cheng Kang, Julian McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cmi.layers import LearnedPositions, gather_last, history_lengths, item_embedding_table
from cmi.models.base import Recommender


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention in which position t attends to positions 0..t only."""

    def __init__(self, dim: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.dropout = dropout
        self.query_key_value = nn.Linear(dim, 3 * dim)
        self.output = nn.Linear(dim, dim)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        """(B, L, d) -> (B, L, d)."""
        batch, length, dim = states.shape
        heads = self.query_key_value(states)  # (B, L, 3d)
        heads = heads.view(batch, length, 3, self.n_heads, dim // self.n_heads)
        query, key, value = heads.permute(2, 0, 3, 1, 4)  # 3 x (B, H, L, d/H)
        attended = F.scaled_dot_product_attention(
            query,
            key,
            value,
            dropout_p=self.dropout if self.training else 0.0,  # dropout on attention weights
            is_causal=True,
        )  # (B, H, L, d/H)
        return self.output(attended.transpose(1, 2).reshape(batch, length, dim))


class SelfAttentionBlock(nn.Module):
    """Causal self-attention then a position-wise feed-forward network, each with a residual
    connection and layer normalisation before it."""

    def __init__(self, dim: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(dim)
        self.attention = CausalSelfAttention(dim, n_heads, dropout)
        self.feed_forward_norm = nn.LayerNorm(dim)
        self.feed_forward = nn.Sequential(
            nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(dim, dim)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        """(B, L, d) -> (B, L, d)."""
        states = states + self.dropout(self.attention(self.attention_norm(states)))
        return states + self.dropout(self.feed_forward(self.feed_forward_norm(states)))


class SASRec(Recommender):
    """Item + learned position embeddings -> causal Transformer blocks -> last real state."""

    def __init__(
        self,
        *,
        n_items: int,
        dim: int = 64,
        max_len: int = 100,
        n_interests: int = 1,
        temperature: float = 1.0,
        n_layers: int = 2,
        n_heads: int = 1,
        dropout: float = 0.2,
    ) -> None:
        # n_interests is accepted for a uniform constructor; the model has one interest.
        super().__init__(n_items=n_items, dim=dim, max_len=max_len, temperature=temperature)
        if n_layers < 1 or n_heads < 1 or dim % n_heads != 0:
            raise ValueError(
                f"need n_layers >= 1 and n_heads >= 1 dividing dim, got n_layers={n_layers}, "
                f"n_heads={n_heads}, dim={dim}"
            )
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.item_embedding = item_embedding_table(self.n_items, self.dim)
        self.positions = LearnedPositions(self.max_len, self.dim)
        self.input_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            SelfAttentionBlock(self.dim, n_heads, dropout) for _ in range(n_layers)
        )
        self.final_norm = nn.LayerNorm(self.dim)

    def item_vectors(self) -> torch.Tensor:
        # The paper shares the input item embedding with the prediction layer; so do we.
        return self.item_embedding.weight  # (N + 1, d)

    def interests(self, history: torch.Tensor) -> torch.Tensor:
        history = self.prepare_history(history)  # (B, L)
        length = history.shape[1]
        states = self.item_embedding(history) * self.dim**0.5  # (B, L, d)
        states = self.input_dropout(states + self.positions(length)[None])  # (B, L, d)

        # Left alignment + causality: a real position only sees earlier real positions, so
        # no key-padding mask is needed (padding outputs are never read).
        # NOTE: positions count from the oldest item of the (capped) history; the paper pads
        # on the left so that position L-1 is always the most recent item.
        # NOTE: pre-norm blocks (LayerNorm before attention and feed-forward, keys and values
        # normalised too); the original implementation normalises only the queries.
        for block in self.blocks:
            states = block(states)  # (B, L, d)
        states = self.final_norm(states)
        return gather_last(states, history_lengths(history))[:, None, :]  # (B, 1, d)
