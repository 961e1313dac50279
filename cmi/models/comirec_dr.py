"""ComiRec-DR: multi-interest extraction by dynamic routing with per-pair bilinear maps.

Yukuo Cen, Jianwei Zhang, Xu Zou, Chang Zhou, Hongxia Yang, Jie Tang, "Controllable
Multi-Interest Framework for Recommendation", KDD 2020 (the DR variant; the controllable
aggregation module for diversity is not used, as for every model of this study).
"""

from __future__ import annotations

import torch
from torch import nn

from cmi.layers import item_embedding_table, padding_mask, squash
from cmi.models.base import Recommender


class ComiRecDR(Recommender):
    """Capsule routing where position t and interest k have their own map W_tk."""

    interest_choice = "target"  # train the interest closest to the target, serve the max

    def __init__(
        self,
        *,
        n_items: int,
        dim: int = 64,
        max_len: int = 100,
        n_interests: int = 4,
        temperature: float = 1.0,
        routing_iterations: int = 3,
    ) -> None:
        super().__init__(
            n_items=n_items,
            dim=dim,
            max_len=max_len,
            temperature=temperature,
            n_interests=n_interests,
        )
        if routing_iterations < 1:
            raise ValueError(f"routing_iterations must be >= 1, got {routing_iterations!r}")
        self.routing_iterations = int(routing_iterations)
        self.item_embedding = item_embedding_table(self.n_items, self.dim)
        # W_tk: (max_len, K, d_out, d_in), one bilinear map per (position, interest) pair.
        self.maps = nn.Parameter(
            torch.randn(self.max_len, self.n_interests, self.dim, self.dim) * self.dim**-0.5
        )

    def item_vectors(self) -> torch.Tensor:
        return self.item_embedding.weight  # (N + 1, d)

    def interests(self, history: torch.Tensor) -> torch.Tensor:
        """Routing from zero logits: c = softmax_k(b) (0 at padding),
        s_k = sum_t c_kt W_tk e_t, u_k = squash(s_k), b_kt += (W_tk e_t) . u_k."""
        history = self.prepare_history(history)  # (B, L)
        length = history.shape[1]
        mask = padding_mask(history)[:, None, :].to(torch.float32)  # (B, 1, L)
        items = self.item_embedding(history)  # (B, L, d)
        # The per-pair maps make the (B, L, K, d) predictions unavoidable; built once.
        predictions = torch.einsum("lkde,ble->blkd", self.maps[:length], items)  # (B, L, K, d)
        logits = torch.zeros(history.shape[0], self.n_interests, length, device=items.device)
        for iteration in range(self.routing_iterations):
            last = iteration == self.routing_iterations - 1
            # NOTE: as in the authors' public code, gradients flow only through the last
            # iteration; earlier ones only set the coupling coefficients.
            behaviours = predictions if last else predictions.detach()  # (B, L, K, d)
            coupling = logits.softmax(dim=1) * mask  # (B, K, L), softmax over interests
            capsules = squash(torch.einsum("bkl,blkd->bkd", coupling, behaviours))  # (B, K, d)
            if not last:
                logits = logits + torch.einsum("blkd,bkd->bkl", behaviours, capsules)
        return capsules
