"""Training batches as the study's protocol draws them: a random cut point per user, the history
before it, a future positive, a random negative and, for CMI, two disjoint views.

Everything for a batch is computed with array arithmetic on the flat training sequences
(`Ragged` offsets, row-wise sorts and cumulative sums); there is no Python loop over the users
of a batch, so the sampler costs little next to the model's forward and backward pass.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from cmi.batch import TrainBatch
from cmi.ragged import Ragged

logger = logging.getLogger(__name__)

MIN_TRAIN_ITEMS = 4  # users with fewer training items are never sampled
WHOLE_VIEW_MAX = 6  # histories of at most this many items are used whole in both views
NEGATIVE_RETRIES = 3  # redraws before an exact draw for negatives inside the history


class TrainSampler:
    """An endless stream of `TrainBatch`es over the users with >= 4 training items.

    Users are visited epoch by epoch in a fresh random order. Under data parallelism every
    process builds the same epoch order (one shared generator) and keeps its own slice of it,
    so the processes' users are disjoint within an epoch; each process draws cut points,
    positives, negatives and views with its own generator.
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int,
        max_len: int,
        min_cut: int = 6,
        needs_views: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size < 1 or max_len < 1 or min_cut < 1:
            raise ValueError(
                f"TrainSampler needs batch_size, max_len, min_cut >= 1; "
                f"got {batch_size}, {max_len}, {min_cut}"
            )
        if not 0 <= rank < world_size:
            raise ValueError(f"TrainSampler rank {rank} is outside world size {world_size}")
        self.sequences: Ragged = dataset.train_history
        self.n_items = int(dataset.n_items)
        self.max_len = max_len
        self.min_cut = min_cut
        self.needs_views = needs_views
        self.rank = rank
        self.world_size = world_size

        lengths = self.sequences.lengths
        self.eligible = np.flatnonzero(lengths >= MIN_TRAIN_ITEMS).astype(np.int64)
        # Every epoch drops the remainder so that all processes get equally long shards.
        self.shard_size = len(self.eligible) // world_size
        if self.shard_size == 0:
            raise ValueError(
                f"no users to sample: {len(self.eligible)} users have >= {MIN_TRAIN_ITEMS} "
                f"training items, fewer than the {world_size} process(es)"
            )
        self.batch_size = min(batch_size, self.shard_size)
        if self.batch_size < batch_size:
            logger.info(
                "batch size %d capped at the %d users of this process's shard",
                batch_size,
                self.shard_size,
            )

        # The epoch order generator is shared by all processes, the draw generator is not.
        self._order_rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 0])))
        self._draw_rng = np.random.Generator(
            np.random.PCG64(np.random.SeedSequence([seed, 1, rank]))
        )
        self.epoch = 0
        self._order = self._next_epoch_order()
        self._cursor = 0

    # ------------------------------------------------------------------ users per step

    def _next_epoch_order(self) -> np.ndarray:
        permutation = self._order_rng.permutation(self.eligible)
        usable = permutation[: self.shard_size * self.world_size]
        return usable[self.rank :: self.world_size].copy()

    def next_users(self) -> np.ndarray:
        """The next batch's user ids (no user twice in one batch)."""
        users = self._order[self._cursor : self._cursor + self.batch_size]
        self._cursor += len(users)
        missing = self.batch_size - len(users)
        if missing == 0:
            return users

        # The epoch ran out mid-batch: start the next one, taking its first `missing` users
        # that are not already in this batch and leaving the rest of its order untouched.
        self.epoch += 1
        order = self._next_epoch_order()
        fresh = ~np.isin(order, users)
        take_positions = np.flatnonzero(fresh)[:missing]
        taken = np.zeros(len(order), dtype=bool)
        taken[take_positions] = True
        self._order = np.concatenate([order[taken], order[~taken]])
        self._cursor = missing
        return np.concatenate([users, self._order[:missing]])

    # ------------------------------------------------------------------ one batch

    def next_batch(self) -> TrainBatch:
        return self.batch_for(self.next_users())

    def batch_for(self, users: np.ndarray) -> TrainBatch:
        """Draw cut points, positives, negatives (and views) for `users`."""
        rng = self._draw_rng
        starts = self.sequences.indptr[users]  # (B,)
        lengths = self.sequences.indptr[users + 1] - starts  # (B,) all >= MIN_TRAIN_ITEMS

        # Cut point c in [min(min_cut, n - 1), n): history before c, positive at or after it.
        low = np.minimum(self.min_cut, lengths - 1)
        cuts = rng.integers(low, lengths)  # (B,)
        positive_positions = rng.integers(cuts, lengths)  # (B,)
        positive = self.sequences.values[starts + positive_positions].astype(np.int64)

        # History: the last max_len items before the cut, left-aligned in a (B, W) array whose
        # width W is the longest history of this batch (no all-padding columns).
        history_lengths = np.minimum(cuts, self.max_len)  # (B,)
        width = int(history_lengths.max())
        columns = np.arange(width)
        real = columns[None, :] < history_lengths[:, None]  # (B, W)
        flat_index = (starts + cuts - history_lengths)[:, None] + columns[None, :]
        history = np.where(real, self.sequences.values[np.where(real, flat_index, 0)], 0)
        history = history.astype(np.int64)  # (B, W)

        negative = self._negatives(history).astype(np.int64)
        batch = TrainBatch(
            history=torch.from_numpy(history),
            positive=torch.from_numpy(positive),
            negative=torch.from_numpy(negative),
        )
        if self.needs_views:
            view_a, view_b = self._views(history, history_lengths, real)
            batch.view_a = torch.from_numpy(view_a)
            batch.view_b = torch.from_numpy(view_b)
        return batch

    def _negatives(self, history: np.ndarray) -> np.ndarray:
        """A uniform item in 1..N per row among the items not in that row's history."""
        rng = self._draw_rng
        negative = rng.integers(1, self.n_items + 1, size=len(history))  # (B,)
        clash = (history == negative[:, None]).any(axis=1)
        for _ in range(NEGATIVE_RETRIES):
            if not clash.any():
                return negative
            rows = np.flatnonzero(clash)
            negative[rows] = rng.integers(1, self.n_items + 1, size=len(rows))
            clash[rows] = (history[rows] == negative[rows, None]).any(axis=1)
        if clash.any():  # rows whose history covers much of the catalogue: draw exactly
            rows = np.flatnonzero(clash)
            negative[rows] = self._outside(history[rows])
        return negative

    def _outside(self, history: np.ndarray) -> np.ndarray:
        """For each row, a uniform item of 1..N outside the row's items (exact, no rejection).

        With the row's distinct items sorted, s_0 < s_1 < ..., g_i = s_i - (i + 1) counts the
        items below s_i that are not in the row, so the j-th such item (from 0) is
        j + 1 + #{i : g_i <= j}.
        """
        beyond = self.n_items + 1  # sorts after every real item
        values = np.sort(np.where(history == 0, beyond, history), axis=1)  # (R, W)
        repeated = np.zeros_like(values, dtype=bool)
        repeated[:, 1:] = values[:, 1:] == values[:, :-1]
        values = np.sort(np.where(repeated, beyond, values), axis=1)
        distinct = (values < beyond).sum(axis=1)  # (R,)
        free = self.n_items - distinct
        # NOTE: a history holding every item of the catalogue leaves no negative; item 1 is
        # used and the sampled softmax's accidental-hit mask does not cover it.
        index = self._draw_rng.integers(0, np.maximum(free, 1))  # (R,)
        below = values - (np.arange(values.shape[1]) + 1)[None, :]  # g_i
        below[values == beyond] = beyond  # padding counts for no j
        found = index + 1 + (below <= index[:, None]).sum(axis=1)
        return np.where(free > 0, found, 1)

    def _views(
        self, history: np.ndarray, history_lengths: np.ndarray, real: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Two disjoint random halves of each history, each in time order and left-aligned."""
        rng = self._draw_rng
        rows, width = history.shape

        # Give each real position a random key; the h // 2 smallest keys of a row form view A
        # (a uniformly random subset of that size). Its threshold comes from a sorted copy.
        keys = np.where(real, rng.random((rows, width)), 2.0)  # padding sorts last
        size_a = history_lengths // 2  # (B,)
        threshold = np.sort(keys, axis=1)[np.arange(rows), np.maximum(size_a - 1, 0)]  # (B,)
        in_a = (keys <= threshold[:, None]) & (size_a > 0)[:, None]  # (B, W)
        in_b = real & ~in_a
        whole = history_lengths <= WHOLE_VIEW_MAX
        in_a[whole] = real[whole]
        in_b[whole] = real[whole]

        view_a = _compact(history, in_a)
        view_b = _compact(history, in_b)
        view_width = max(int(in_a.sum(axis=1).max()), int(in_b.sum(axis=1).max()), 1)
        return view_a[:, :view_width], view_b[:, :view_width]

    # ------------------------------------------------------------------ resumable state

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the stream exactly where it is."""
        return {
            "order_rng": self._order_rng.bit_generator.state,
            "draw_rng": self._draw_rng.bit_generator.state,
            "epoch": self.epoch,
            "order": self._order.tolist(),
            "cursor": self._cursor,
            "rank": self.rank,
            "world_size": self.world_size,
            "batch_size": self.batch_size,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("rank", "world_size", "batch_size"):
            if state[key] != getattr(self, key):
                raise ValueError(
                    f"sampler state has {key}={state[key]}, this sampler {getattr(self, key)}"
                )
        self._order_rng.bit_generator.state = state["order_rng"]
        self._draw_rng.bit_generator.state = state["draw_rng"]
        self.epoch = int(state["epoch"])
        self._order = np.asarray(state["order"], dtype=np.int64)
        self._cursor = int(state["cursor"])


def _compact(values: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Move the kept entries of each (B, W) row to its front, in their order; zeros after."""
    width = values.shape[1]
    kept = np.flatnonzero(keep)  # flat positions, row by row, in order
    counts = keep.sum(axis=1)  # (B,)
    first = np.cumsum(counts) - counts  # index in `kept` of each row's first kept entry
    rows = kept // width
    slots = np.arange(len(kept)) - first[rows]  # 0, 1, ... within each row
    compacted = np.zeros_like(values)
    compacted.ravel()[rows * width + slots] = values.ravel()[kept]
    return compacted
