"""MIND: multi-interest extraction by behaviour-to-interest (B2I) dynamic routing.

Chao Li, Zhiyuan Liu, Mengmeng Wu, Yuchi Xu, Pipei Huang, Huan Zhao, Guoliang Kang, Qiwei
Chen, Wei Li, Dik Lun Lee, "Multi-Interest Network with Dynamic Routing for Recommendation at
Tmall", CIKM 2019.
"""

from __future__ import annotations

import torch
from torch import nn

from cmi.batch import TrainBatch
from cmi.layers import item_embedding_table, padding_mask, squash
from cmi.losses import sampled_softmax
from cmi.models.base import Recommender


class MIND(Recommender):
    """Capsule routing with one shared bilinear map; label-aware attention in training."""

    interest_choice = "target"  # unused in training (label-aware attention), kept for clarity

    def __init__(
        self,
        *,
        n_items: int,
        dim: int = 64,
        max_len: int = 100,
        n_interests: int = 4,
        temperature: float = 1.0,
        routing_iterations: int = 3,
        pow_p: int = 2,
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
        if pow_p < 0 or not float(pow_p).is_integer():
            # A fractional power of a negative dot product is undefined (NaN).
            raise ValueError(f"pow_p must be a non-negative integer, got {pow_p!r}")
        # NOTE: the paper adapts the number of interests to the history length,
        # K_u = max(1, min(K, log2 |history|)); the study uses a fixed K for every user so
        # that all multi-interest models are compared at the same K.
        self.routing_iterations = int(routing_iterations)
        self.pow_p = int(pow_p)
        self.item_embedding = item_embedding_table(self.n_items, self.dim)
        self.bilinear = nn.Linear(self.dim, self.dim, bias=False)  # S, shared by all pairs
        # NOTE: the paper draws the initial routing logits b_kt from a Gaussian for every
        # user; here they are drawn once and stored, so serving is deterministic.
        self.register_buffer("initial_logits", torch.randn(self.n_interests, self.max_len))
        # NOTE: the paper passes the capsules with user-profile features through ReLU layers;
        # the study has no profile features, so the squashed capsules are the interests.

    def item_vectors(self) -> torch.Tensor:
        return self.item_embedding.weight  # (N + 1, d)

    def interests(self, history: torch.Tensor) -> torch.Tensor:
        """B2I routing: c = softmax_k(b) (0 at padding), s_k = sum_t c_kt S e_t,
        u_k = squash(s_k), b_kt += (S e_t) . u_k; (B, L) -> (B, K, d)."""
        history = self.prepare_history(history)  # (B, L)
        mask = padding_mask(history)[:, None, :].to(torch.float32)  # (B, 1, L)
        mapped = self.bilinear(self.item_embedding(history))  # (B, L, d): S e_t
        logits = self.initial_logits[:, : history.shape[1]].expand(history.shape[0], -1, -1)
        for iteration in range(self.routing_iterations):
            last = iteration == self.routing_iterations - 1
            # NOTE: as in ComiRec's public implementation of MIND, gradients flow only through
            # the last iteration; earlier ones only set the coupling coefficients.
            behaviours = mapped if last else mapped.detach()  # (B, L, d)
            coupling = logits.softmax(dim=1) * mask  # (B, K, L), softmax over interests
            capsules = squash(torch.einsum("bkl,bld->bkd", coupling, behaviours))  # (B, K, d)
            if not last:
                logits = logits + torch.einsum("bld,bkd->bkl", behaviours, capsules)
        return capsules

    def loss_terms(self, batch: TrainBatch) -> dict[str, torch.Tensor]:
        """Label-aware attention: the user vector for the target v+ is
        `sum_k softmax_k((u_k . e_{v+})^p) u_k`, trained with the shared sampled softmax.

        NOTE: as in the paper, the power is applied to the raw dot product, so with an even p
        an interest pointing away from the target also weighs heavily. At serving (score)
        the max over interests is used, the limit p -> infinity for positive scores.
        """
        interests = self.interests(batch.history)  # (B, K, d)
        items = self.item_vectors()
        target_scores = torch.einsum("bkd,bd->bk", interests, items[batch.positive])  # (B, K)
        attention = target_scores.pow(self.pow_p).softmax(dim=1)  # (B, K)
        user = torch.einsum("bk,bkd->bd", attention, interests)[:, None, :]  # (B, 1, d)
        rec = sampled_softmax(user, items, batch.positive, batch.negative, self.temperature, "max")
        return {"rec": rec}
