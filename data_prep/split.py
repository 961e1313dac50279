"""The day split shared by every source: duplicates, user and item filters, histories, targets.

Input is the positives of one source as integer codes (`Positives`). The last day is the test
day, the day before it the validation day, every earlier day a training day (spec section 3).
Each filter returns a `FilterRecord` with what it removed, so metadata can account for every
row that went missing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

# How the (user, item, timestamp) duplicates are handled; written to metadata.json.
DUPLICATE_HANDLING = (
    "rows repeating an earlier row's (user, item, timestamp) are dropped, the first in file "
    "order is kept; the same item at different times is kept as a repeat"
)


@dataclass(frozen=True)
class FilterRecord:
    """What one filter removed, counted on the rows it saw."""

    name: str
    description: str
    rows_removed: int
    users_removed: int
    items_removed: int

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        return (
            f"{self.name} removed {self.rows_removed} rows, {self.users_removed} users, "
            f"{self.items_removed} items"
        )


def _count_distinct(values: np.ndarray) -> int:
    return len(pd.unique(values))


def removal_record(
    name: str, description: str, users: np.ndarray, items: np.ndarray, keep: np.ndarray
) -> FilterRecord:
    """The record of a filter that keeps the rows where `keep` is set."""
    return FilterRecord(
        name=name,
        description=description,
        rows_removed=int(len(keep) - np.count_nonzero(keep)),
        users_removed=_count_distinct(users) - _count_distinct(users[keep]),
        items_removed=_count_distinct(items) - _count_distinct(items[keep]),
    )


@dataclass(frozen=True)
class Positives:
    """Positive interactions as parallel arrays: integer codes for users and items."""

    user: np.ndarray  # (R,) int64 code, ordered like the raw ids
    item: np.ndarray  # (R,) int64 code
    timestamp: np.ndarray  # (R,) int64 seconds
    day: np.ndarray  # (R,) int64, 0..D-1
    order: np.ndarray  # (R,) int64, original file order (ties in time keep it)

    def __len__(self) -> int:
        return len(self.user)

    def take(self, rows: np.ndarray) -> Positives:
        """The rows selected by a boolean mask or an index array."""
        return Positives(
            self.user[rows], self.item[rows], self.timestamp[rows], self.day[rows], self.order[rows]
        )

    def record(self, name: str, description: str, keep: np.ndarray) -> FilterRecord:
        return removal_record(name, description, self.user, self.item, keep)


def drop_duplicates(rows: Positives) -> tuple[Positives, FilterRecord]:
    """Keep the first (in file order) of rows sharing (user, item, timestamp)."""
    rows = rows.take(np.argsort(rows.order, kind="stable"))
    keys = pd.DataFrame({"user": rows.user, "item": rows.item, "timestamp": rows.timestamp})
    keep = ~keys.duplicated().to_numpy()
    record = rows.record("duplicates", DUPLICATE_HANDLING, keep)
    return rows.take(keep), record


def filter_users(
    rows: Positives, n_days: int, min_active_days: int, min_train_interactions: int
) -> tuple[Positives, list[FilterRecord]]:
    """Drop users with too few active training days, then those with too few training rows."""
    records = []
    training = rows.day < n_days - 2
    user_day = np.unique(rows.user[training] * n_days + rows.day[training])
    active_days = pd.Series(user_day // n_days).value_counts()
    keep = np.isin(rows.user, active_days.index[active_days >= min_active_days].to_numpy())
    records.append(
        rows.record(
            "min_active_days",
            f"users with fewer than {min_active_days} distinct training days with a positive "
            "(users with none at all included) are removed with all their rows",
            keep,
        )
    )
    rows = rows.take(keep)

    training = rows.day < n_days - 2
    counts = pd.Series(rows.user[training]).value_counts()
    keep = np.isin(rows.user, counts.index[counts >= min_train_interactions].to_numpy())
    records.append(
        rows.record(
            "min_train_interactions",
            f"users with fewer than {min_train_interactions} training-day positives are "
            "removed with all their rows",
            keep,
        )
    )
    return rows.take(keep), records


def filter_unseen_items(rows: Positives, n_days: int) -> tuple[Positives, FilterRecord]:
    """Drop validation- and test-day rows whose item no kept user has on a training day."""
    training = rows.day < n_days - 2
    keep = training | np.isin(rows.item, np.unique(rows.item[training]))
    record = rows.record(
        "items_unseen_in_training",
        "validation- and test-day rows whose item has no training-day positive (after the "
        "user filters) are removed: item ids come from training days only",
        keep,
    )
    return rows.take(keep), record


@dataclass(frozen=True)
class RaggedLists:
    """Per-user integer lists in compressed-row form (row u is values[indptr[u]:indptr[u+1]])."""

    indptr: np.ndarray  # (U + 1,) int64
    values: np.ndarray  # (indptr[-1],) int32

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.indptr)

    @classmethod
    def from_sorted(cls, users: np.ndarray, values: np.ndarray, n_users: int) -> RaggedLists:
        """Rows from `values` already sorted by `users` (stable within a user)."""
        indptr = np.zeros(n_users + 1, dtype=np.int64)
        np.cumsum(np.bincount(users, minlength=n_users), out=indptr[1:])
        return cls(indptr, values.astype(np.int32))


@dataclass(frozen=True)
class Split:
    """Filtered positives renumbered to prepared ids, and the per-user lists of split.parquet."""

    user_codes: np.ndarray  # (U,) code of prepared user u
    item_codes: np.ndarray  # (N,) code of prepared item i + 1
    user: np.ndarray  # (R,) int32 prepared user of each interaction, sorted (user, time, order)
    item: np.ndarray  # (R,) int32 prepared item, 1..N
    timestamp: np.ndarray  # (R,) int64
    day: np.ndarray  # (R,) int16
    lists: dict[str, RaggedLists]  # train_history, valid_day_items, valid_targets, ...

    @property
    def n_users(self) -> int:
        return len(self.user_codes)

    @property
    def n_items(self) -> int:
        return len(self.item_codes)


LIST_COLUMNS = (
    "train_history",
    "valid_day_items",
    "valid_targets",
    "test_targets",
    "valid_targets_all",
    "test_targets_all",
)


def _new_distinct(keys: np.ndarray, history_keys: np.ndarray) -> np.ndarray:
    """Mask of first occurrences of `keys` that are not in `history_keys`."""
    first = ~pd.Series(keys).duplicated().to_numpy()
    return first & ~np.isin(keys, history_keys)


def build_split(rows: Positives, n_days: int) -> Split:
    """Renumber users and items and derive histories and targets for the day split."""
    user_codes = np.unique(rows.user)
    training = rows.day < n_days - 2
    item_codes = np.unique(rows.item[training])
    user = np.searchsorted(user_codes, rows.user)
    item = np.searchsorted(item_codes, rows.item) + 1

    order = np.lexsort((rows.order, rows.timestamp, user))
    user, item = user[order], item[order]
    day, timestamp = rows.day[order], rows.timestamp[order]
    n_users, n_items = len(user_codes), len(item_codes)

    # One integer per (user, item) pair, to compare targets with histories without loops.
    pair = user.astype(np.int64) * (n_items + 1) + item
    segments = {
        "train": day < n_days - 2,
        "valid": day == n_days - 2,
        "test": day == n_days - 1,
    }
    train, valid, test = segments["train"], segments["valid"], segments["test"]
    valid_new = _new_distinct(pair[valid], pair[train])
    test_new = _new_distinct(pair[test], np.concatenate([pair[train], pair[valid]]))

    def lists(mask: np.ndarray, within: np.ndarray | None = None) -> RaggedLists:
        users, items = user[mask], item[mask]
        if within is not None:
            users, items = users[within], items[within]
        return RaggedLists.from_sorted(users, items, n_users)

    return Split(
        user_codes=user_codes,
        item_codes=item_codes,
        user=user.astype(np.int32),
        item=item.astype(np.int32),
        timestamp=timestamp.astype(np.int64),
        day=day.astype(np.int16),
        lists={
            "train_history": lists(train),
            "valid_day_items": lists(valid),
            "valid_targets": lists(valid, valid_new),
            "test_targets": lists(test, test_new),
            "valid_targets_all": lists(valid),
            "test_targets_all": lists(test),
        },
    )


def split_statistics(split: Split, n_categories: int) -> dict:
    """The `statistics` block of metadata.json."""
    history_lengths = split.lists["train_history"].lengths
    valid_counts = split.lists["valid_targets"].lengths
    test_counts = split.lists["test_targets"].lengths
    n_rows = len(split.user)
    return {
        "users": split.n_users,
        "items": split.n_items,
        "interactions": n_rows,
        "train_interactions": int(history_lengths.sum()),
        "mean_history_length": round(float(history_lengths.mean()), 4),
        "median_history_length": float(np.median(history_lengths)),
        "categories": n_categories,
        "density": round(n_rows / (split.n_users * split.n_items), 8),
        "valid_users": int(np.count_nonzero(valid_counts)),
        "test_users": int(np.count_nonzero(test_counts)),
        "valid_targets": int(valid_counts.sum()),
        "test_targets": int(test_counts.sum()),
        "valid_targets_all": int(split.lists["valid_targets_all"].lengths.sum()),
        "test_targets_all": int(split.lists["test_targets_all"].lengths.sum()),
    }
