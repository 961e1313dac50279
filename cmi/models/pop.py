"""Pop: rank every item by its number of training-day interactions, the same for all users.

The classic non-personalised baseline. It is written as a Recommender with one constant
interest (B, 1, 1) of ones and one-dimensional item vectors (N + 1, 1) holding the
popularity, so `score` and the shared evaluation serve it unchanged.
"""

from __future__ import annotations

import numpy as np
import torch

from cmi.batch import TrainBatch
from cmi.models.base import Recommender


class Pop(Recommender):
    """Most popular items; nothing to train."""

    trainable = False

    def __init__(
        self,
        *,
        n_items: int,
        item_popularity: np.ndarray,
        dim: int = 64,
        max_len: int = 100,
        n_interests: int = 1,
        temperature: float = 1.0,
    ) -> None:
        # dim, n_interests and temperature are accepted for a uniform constructor and unused.
        super().__init__(n_items=n_items, dim=dim, max_len=max_len, temperature=temperature)
        popularity = np.asarray(item_popularity, dtype=np.float32)
        if popularity.shape != (self.n_items + 1,):
            raise ValueError(
                f"item_popularity must have shape ({self.n_items + 1},) (N + 1 with padding "
                f"row 0), got {popularity.shape}"
            )
        if not np.all(np.isfinite(popularity)):
            raise ValueError("item_popularity contains non-finite values")
        self.n_interests = 1
        self.register_buffer("popularity", torch.from_numpy(popularity.copy())[:, None])

    def interests(self, history: torch.Tensor) -> torch.Tensor:
        """(B, L) -> (B, 1, 1) ones."""
        self.prepare_history(history)
        return torch.ones(history.shape[0], 1, 1, device=self.popularity.device)

    def item_vectors(self) -> torch.Tensor:
        """(N + 1, 1): the training popularity."""
        return self.popularity

    def loss_terms(self, batch: TrainBatch) -> dict[str, torch.Tensor]:
        """A zero "rec" that needs no gradient (the trainer skips Pop)."""
        return {"rec": torch.zeros((), device=self.popularity.device)}
