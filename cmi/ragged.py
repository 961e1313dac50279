"""Ragged integer sequences in compressed-row form: one flat value array and row offsets.

Histories and target lists have a different length per user; keeping them as one flat array
with offsets makes batching a matter of fancy indexing instead of Python loops.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Ragged:
    """Row `r` is `values[indptr[r]:indptr[r + 1]]`."""

    indptr: np.ndarray  # (R + 1,) int64, starts at 0, non-decreasing
    values: np.ndarray  # (indptr[-1],) int32

    def __post_init__(self) -> None:
        if self.indptr.ndim != 1 or len(self.indptr) == 0 or self.indptr[0] != 0:
            raise ValueError("Ragged.indptr must be a 1-D array starting at 0")
        if self.indptr[-1] != len(self.values):
            raise ValueError(
                f"Ragged.indptr ends at {self.indptr[-1]} but there are {len(self.values)} values"
            )

    @classmethod
    def from_lists(cls, rows: Sequence[Sequence[int]]) -> Ragged:
        lengths = np.fromiter((len(row) for row in rows), dtype=np.int64, count=len(rows))
        indptr = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        values = np.fromiter(
            (value for row in rows for value in row), dtype=np.int32, count=int(indptr[-1])
        )
        return cls(indptr, values)

    def __len__(self) -> int:
        return len(self.indptr) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.indptr)

    def row(self, r: int) -> np.ndarray:
        return self.values[self.indptr[r] : self.indptr[r + 1]]

    def to_lists(self) -> list[list[int]]:
        return [self.row(r).tolist() for r in range(len(self))]

    def concat(self, other: Ragged) -> Ragged:
        """Row-wise concatenation: row r of the result is self.row(r) followed by other.row(r)."""
        if len(self) != len(other):
            raise ValueError(f"cannot concatenate {len(self)} rows with {len(other)} rows")
        lengths = self.lengths + other.lengths
        indptr = np.zeros(len(self) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        values = np.empty(int(indptr[-1]), dtype=np.int32)
        # Positions of each row's first part and second part in the result.
        first = np.repeat(indptr[:-1] - self.indptr[:-1], self.lengths) + np.arange(
            len(self.values)
        )
        second_offset = indptr[:-1] + self.lengths - other.indptr[:-1]
        second = np.repeat(second_offset, other.lengths) + np.arange(len(other.values))
        values[first] = self.values
        values[second] = other.values
        return Ragged(indptr, values)

    def padded(self, rows: np.ndarray, max_len: int, keep: str = "last") -> np.ndarray:
        """Rows `rows` as a left-aligned (len(rows), max_len) int64 array padded with 0.

        Rows longer than `max_len` keep their last `max_len` values (`keep="last"`, the
        history cap) or their first (`keep="first"`).
        """
        starts = self.indptr[rows]
        lengths = self.indptr[rows + 1] - starts
        take = np.minimum(lengths, max_len)
        if keep == "last":
            starts = starts + lengths - take
        elif keep != "first":
            raise ValueError(f"keep must be 'last' or 'first', got {keep!r}")
        positions = np.arange(max_len)
        valid = positions[None, :] < take[:, None]
        index = np.where(valid, starts[:, None] + positions[None, :], 0)
        out = np.where(valid, self.values[index] if len(self.values) else 0, 0)
        return out.astype(np.int64)
