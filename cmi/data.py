"""Reading a prepared dataset folder (written by `data_prep`) back into numpy arrays.

`load_dataset(path)` returns a `PreparedDataset`: per-user histories and targets as `Ragged`
sequences, item attributes indexed by item id (0 is padding), the metadata and, for the
synthetic world, its ground truth. The folder format is described in the project's brief.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cmi.ragged import Ragged
from data_prep.core import FORMAT_VERSION
from data_prep.errors import DataError
from data_prep.split import LIST_COLUMNS as SPLIT_COLUMNS

REQUIRED_FILES = ("metadata.json", "items.parquet", "split.parquet")
ITEM_COLUMNS = ("item", "primary_category", "categories")
SPLITS = ("train", "valid", "test")
TARGET_VARIANTS = ("distinct", "authors")


@dataclass
class PreparedDataset:
    """One prepared dataset: users 0..U-1, items 1..N (embedding tables have N + 1 rows)."""

    name: str
    n_users: int
    n_items: int  # N
    n_categories: int
    max_history: int  # last-N cap for model input; the sequences here are complete
    train_history: Ragged  # (U rows) training-day items in time order, repeats kept
    valid_history: Ragged  # == train_history
    test_history: Ragged  # train_history + validation-day items
    valid_targets: Ragged  # distinct validation-day items new to the history
    test_targets: Ragged  # distinct test-day items new to the history
    valid_targets_all: Ragged  # every validation-day item, repeats included (authors' variant)
    test_targets_all: Ragged  # every test-day item, repeats included (authors' variant)
    item_primary_category: np.ndarray  # (N + 1,) int32, -1 unknown and at item 0
    item_categories: Ragged  # (N + 1 rows) every category of each item; row 0 empty
    item_popularity_train: np.ndarray  # (N + 1,) float64 training-day positives per item
    metadata: dict[str, Any]
    ground_truth: dict[str, np.ndarray] | None  # synthetic only
    path: Path | None = None  # the folder it was read from

    def history(self, split: str) -> Ragged:
        """The history that precedes `split`'s target day ("train" and "valid" share one)."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return self.test_history if split == "test" else self.train_history

    def targets(self, split: str, variant: str = "distinct") -> Ragged:
        """Targets of "valid" or "test": distinct new items, or every click ("authors")."""
        if split not in ("valid", "test"):
            raise ValueError(f"targets exist for 'valid' and 'test', got {split!r}")
        if variant not in TARGET_VARIANTS:
            raise ValueError(f"variant must be one of {TARGET_VARIANTS}, got {variant!r}")
        suffix = "_all" if variant == "authors" else ""
        return getattr(self, f"{split}_targets{suffix}")


def _ragged(column: pa.ChunkedArray) -> Ragged:
    """A list<int32> parquet column as a Ragged."""
    array = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    offsets = array.offsets.to_numpy().astype(np.int64)
    values = array.flatten().to_numpy(zero_copy_only=False).astype(np.int32)
    return Ragged(offsets - offsets[0], values)


def _read_parquet(path: Path, columns: tuple[str, ...]) -> pa.Table:
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as error:
        raise DataError(f"{path}: cannot read the parquet file ({error})") from error
    missing = [name for name in columns if name not in table.column_names]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; columns found: {table.column_names}")
    return table


def _read_metadata(folder: Path) -> dict[str, Any]:
    try:
        metadata = json.loads((folder / "metadata.json").read_text())
    except ValueError as error:
        raise DataError(f"{folder / 'metadata.json'} is not valid JSON ({error})") from error
    version = metadata.get("format_version")
    if version != FORMAT_VERSION:
        raise DataError(
            f"{folder / 'metadata.json'} has format_version {version!r}; this code reads "
            f"version {FORMAT_VERSION}: prepare the dataset again with force=True (--force)"
        )
    return metadata


def _item_attributes(items: pa.Table, n_items: int) -> tuple[np.ndarray, Ragged]:
    """Primary category (N + 1,) and all categories (N + 1 rows), item 0 empty."""
    order = np.argsort(items.column("item").to_numpy())
    ids = items.column("item").to_numpy()[order]
    if not np.array_equal(ids, np.arange(1, n_items + 1)):
        raise DataError(f"items.parquet must list items 1..{n_items} once each")
    primary = np.concatenate([[-1], items.column("primary_category").to_numpy()[order]])
    categories = _ragged(items.column("categories").take(pa.array(order)))
    with_padding_row = Ragged(np.concatenate([[0], categories.indptr]), categories.values)
    return primary.astype(np.int32), with_padding_row


def _require_files(folder: Path, file_names) -> None:
    for file_name in file_names:
        if not (folder / file_name).is_file():
            raise DataError(f"prepared dataset {folder} lacks {file_name}; prepare it again")


def load_dataset(path: str | Path) -> PreparedDataset:
    """Read the prepared folder at `path`; a DataError names a missing file or a bad version."""
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(
            f"prepared dataset folder {folder} does not exist; prepare it first "
            "(python -m data_prep --help)"
        )
    _require_files(folder, REQUIRED_FILES)
    metadata = _read_metadata(folder)
    _require_files(folder, metadata.get("files", []))

    split = _read_parquet(folder / "split.parquet", ("user", *SPLIT_COLUMNS)).sort_by("user")
    n_users = split.num_rows
    if not np.array_equal(split.column("user").to_numpy(), np.arange(n_users)):
        raise DataError(f"{folder / 'split.parquet'} must have one row per user 0..{n_users - 1}")
    lists = {name: _ragged(split.column(name)) for name in SPLIT_COLUMNS}
    items = _read_parquet(folder / "items.parquet", ITEM_COLUMNS)
    n_items = items.num_rows
    primary, categories = _item_attributes(items, n_items)

    train = lists["train_history"]
    popularity = np.bincount(train.values, minlength=n_items + 1).astype(np.float64)
    ground_truth = None
    if (folder / "ground_truth.npz").is_file():
        with np.load(folder / "ground_truth.npz") as archive:
            ground_truth = {key: archive[key] for key in archive.files}

    return PreparedDataset(
        name=str(metadata.get("name", folder.name)),
        n_users=n_users,
        n_items=n_items,
        n_categories=int(metadata["categories"]["n_categories"]),
        max_history=int(metadata.get("max_history", 100)),
        train_history=train,
        valid_history=train,
        test_history=train.concat(lists["valid_day_items"]),
        valid_targets=lists["valid_targets"],
        test_targets=lists["test_targets"],
        valid_targets_all=lists["valid_targets_all"],
        test_targets_all=lists["test_targets_all"],
        item_primary_category=primary,
        item_categories=categories,
        item_popularity_train=popularity,
        metadata=metadata,
        ground_truth=ground_truth,
        path=folder,
    )
