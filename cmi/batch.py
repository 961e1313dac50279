"""The training batch that samplers produce and models consume."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


@dataclass
class TrainBatch:
    """One step's training sequences; histories are left-aligned and padded with item 0."""

    history: torch.Tensor  # (B, L) long: items before the cut point, time order
    positive: torch.Tensor  # (B,) long: an item at or after the cut point
    negative: torch.Tensor  # (B,) long: a random item outside the history
    view_a: torch.Tensor | None = None  # (B, L) long: one random half of the history
    view_b: torch.Tensor | None = None  # (B, L) long: the other half

    def to(self, device: torch.device | str) -> TrainBatch:
        moved = {
            f.name: None if getattr(self, f.name) is None else getattr(self, f.name).to(device)
            for f in fields(self)
        }
        return TrainBatch(**moved)

    @property
    def size(self) -> int:
        return self.history.shape[0]
