"""CMI: contrastive multiple interests for micro-video recommendation.

Beibei Li, Beihong Jin, Jiageng Song, Yisong Yu, Yiyuan Zheng, Wei Zhuo, "Improving
Micro-video Recommendation via Contrastive Multiple Interests", SIGIR 2022
(arXiv:2205.09593). Authors' code: github.com/libeibei95/CMI. The model and losses follow
the paper; each departure from the paper or the authors' code is marked NOTE.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from cmi.batch import TrainBatch
from cmi.layers import item_embedding_table, last_gru_state, padding_mask
from cmi.losses import (
    balance_loss,
    contrastive_interest_loss,
    orthogonality_loss,
    sampled_softmax,
)
from cmi.models.base import Recommender


class Encoding(NamedTuple):
    """Everything the forward pass computes for one batch of histories."""

    interests: torch.Tensor  # (B, K, d) u_k, unit vectors
    category_interests: torch.Tensor  # (B, K, d) z_k, unit vectors
    general_interest: torch.Tensor | None  # (B, d) h, or None without the general interest
    routing: torch.Tensor  # (B, L, K) p[t, k], zero on padding
    mask: torch.Tensor  # (B, L) bool, True at real items


class CMI(Recommender):
    """K interests tied to implicit orthogonal categories, plus a GRU general interest."""

    needs_views = True
    interest_choice = "max"

    def __init__(
        self,
        *,
        n_items: int,
        dim: int = 64,
        max_len: int = 100,
        n_interests: int = 8,
        temperature: float = 0.1,
        tau_route: float = 0.1,
        tau_cl: float = 0.1,
        lambda_cl: float = 0.05,
        lambda_orth: float = 10.0,
        lambda_uni: float = 1.0,
        general_interest: bool = True,
    ) -> None:
        super().__init__(
            n_items=n_items,
            dim=dim,
            max_len=max_len,
            temperature=temperature,
            n_interests=n_interests,
        )
        if n_interests > dim:
            raise ValueError(f"n_interests={n_interests} orthogonal categories need dim >= K")
        for name, value in (("tau_route", tau_route), ("tau_cl", tau_cl)):
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value!r}")
        for name, value in (
            ("lambda_cl", lambda_cl),
            ("lambda_orth", lambda_orth),
            ("lambda_uni", lambda_uni),
        ):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value!r}")
        self.tau_route = float(tau_route)
        self.tau_cl = float(tau_cl)
        self.lambda_cl = float(lambda_cl)
        self.lambda_orth = float(lambda_orth)
        self.lambda_uni = float(lambda_uni)
        self.use_general_interest = bool(general_interest)

        self.item_embedding = item_embedding_table(self.n_items, self.dim)
        self.categories = nn.Parameter(torch.empty(self.n_interests, self.dim))  # (K, d)
        # NOTE: the authors' code means to initialise the category table orthogonally but the
        # parameter name it tests never matches, so it is never applied; here it is applied.
        nn.init.orthogonal_(self.categories)
        if self.use_general_interest:
            self.gru = nn.GRU(self.dim, self.dim, num_layers=1, bias=False, batch_first=True)
            self.general_projection = nn.Linear(self.dim, self.dim)

    # --- vectors on the unit sphere ------------------------------------------------------

    # NOTE: item and category embeddings are L2-normalised on every use; the authors instead
    # renormalise the weight tables in place, without gradient, after each optimiser step.
    # Normalising on use gives the same vectors to the model while the gradient sees it.
    def item_vectors(self) -> torch.Tensor:
        """Unit item vectors e_v: (N + 1, d); row 0 (padding) stays zero."""
        return F.normalize(self.item_embedding.weight, dim=-1)

    def category_vectors(self) -> torch.Tensor:
        """Unit category vectors g_k: (K, d)."""
        return F.normalize(self.categories, dim=-1)

    # --- forward -------------------------------------------------------------------------

    def encode(self, history: torch.Tensor) -> Encoding:
        """All intermediate quantities for a (B, L) history (no column trimming)."""
        mask = padding_mask(history)  # (B, L)
        lengths = mask.sum(dim=1)  # (B,)
        items = F.normalize(self.item_embedding(history), dim=-1)  # (B, L) -> (B, L, d)
        categories = self.category_vectors()  # (K, d)

        # Routing p[t, k] = softmax_k(e_{v_t} . g_k / tau_route), zero at padding.
        affinity = items @ categories.T / self.tau_route  # (B, L, K)
        routing = affinity.softmax(dim=-1) * mask[..., None].to(affinity.dtype)  # (B, L, K)

        # Category interests z_k = normalize(sum_t p[t, k] e_{v_t}); empty history -> g_k.
        pooled = torch.einsum("blk,bld->bkd", routing, items)  # (B, K, d)
        has_items = (lengths > 0)[:, None, None]  # (B, 1, 1)
        category_interests = torch.where(
            has_items, F.normalize(pooled, dim=-1), categories[None]
        )  # (B, K, d)

        if not self.use_general_interest:
            return Encoding(category_interests, category_interests, None, routing, mask)

        # General interest h = normalize(ReLU(W gru_last + b)); u_k = normalize(z_k + h).
        # NOTE: the GRU's output is read at the last real item, so padding never reaches it;
        # the authors run the GRU over all 100 padded positions and padding changes the state.
        last_state = last_gru_state(self.gru, items, lengths)  # (B, d)
        general = F.normalize(F.relu(self.general_projection(last_state)), dim=-1)  # (B, d)
        interests = F.normalize(category_interests + general[:, None, :], dim=-1)  # (B, K, d)
        return Encoding(interests, category_interests, general, routing, mask)

    def interests(self, history: torch.Tensor) -> torch.Tensor:
        """(B, L) -> (B, K, d) unit interests u_k."""
        return self.encode(self.prepare_history(history)).interests

    def routing(self, history: torch.Tensor) -> torch.Tensor:
        """(B, L) -> (B, L, K) routing weights p[t, k] (rows sum to 1, zero at padding)."""
        return self.encode(history).routing

    # --- losses --------------------------------------------------------------------------

    def loss_terms(self, batch: TrainBatch) -> dict[str, torch.Tensor]:
        """ "rec" on both views, plus "cl", "orth", "uni" for each weight that is not 0.

        The two views of every user are encoded in one pass as a (2B, L) batch; the history
        itself is not used for training (the views cover it).
        """
        if batch.view_a is None or batch.view_b is None:
            raise ValueError("CMI needs TrainBatch.view_a and view_b (needs_views is True)")
        n_users = batch.size
        views = self.prepare_history(torch.cat([batch.view_a, batch.view_b]))  # (2B, L')
        encoding = self.encode(views)
        interests = encoding.interests  # (2B, K, d)

        # NOTE: both views share the row's positive and the batch's B negatives; the pool
        # is not duplicated for the second view, so each negative counts once.
        terms = {
            "rec": sampled_softmax(
                interests,
                self.item_vectors(),
                batch.positive.repeat(2),  # (2B,)
                batch.negative,  # (B,)
                self.temperature,
                self.interest_choice,
            )
        }
        if self.lambda_cl > 0:
            terms["cl"] = contrastive_interest_loss(
                interests[:n_users], interests[n_users:], self.tau_cl
            )
        if self.lambda_orth > 0:
            terms["orth"] = orthogonality_loss(self.category_vectors())
        if self.lambda_uni > 0:
            # q_k averages the routing over every real position of both views (a history of
            # <= 6 items appears whole in both views, so its positions count twice).
            terms["uni"] = balance_loss(encoding.routing, encoding.mask)
        return terms

    def loss_weights(self) -> dict[str, float]:
        return {
            "rec": 1.0,
            "cl": self.lambda_cl,
            "orth": self.lambda_orth,
            "uni": self.lambda_uni,
        }
