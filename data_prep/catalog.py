"""Item attributes of a prepared dataset: category labels renumbered 0..C-1, and durations.

A source hands over its item table with raw category labels (strings such as "39" or "2");
the catalog keeps the items that survived filtering, checks that the table covers every one
of them, and numbers the labels that occur, in numeric order when all labels are integers.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from data_prep.errors import DataError
from data_prep.split import RaggedLists

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Catalog:
    """Attributes of prepared items 1..N, stored at positions 0..N-1."""

    primary_category: np.ndarray  # (N,) int32, -1 where unknown
    categories: RaggedLists  # (N rows) every category of the item, primary first
    duration: np.ndarray  # (N,) float64 seconds, NaN where unknown
    category_names: list[str]  # raw label of category c at position c


def sorted_labels(labels: set[str]) -> list[str]:
    """Labels in numeric order when every one is an integer, otherwise in text order."""
    if all(label.lstrip("-").isdigit() for label in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def _covering_rows(item_raw_ids: np.ndarray, items: pd.DataFrame, item_file: str) -> np.ndarray:
    """Row of `items` for each kept item, or a DataError naming the items it lacks."""
    duplicated = items["item"].duplicated()
    if duplicated.any():
        logger.warning(
            "%s lists %d item(s) more than once; the first row of each is used",
            item_file,
            int(duplicated.sum()),
        )
        items = items[~duplicated]
    rows = pd.Index(items["item"]).get_indexer(item_raw_ids)
    missing = item_raw_ids[rows < 0]
    if len(missing):
        examples = ", ".join(str(raw_id) for raw_id in missing[:5])
        raise DataError(
            f"{item_file} does not cover the items: {len(missing)} of {len(item_raw_ids)} "
            f"kept items have no row there (for example {examples})"
        )
    return items.index.to_numpy()[rows]


def build_catalog(
    item_raw_ids: np.ndarray,
    items: pd.DataFrame | None,
    item_file: str,
    category_names: list[str] | None = None,
) -> Catalog:
    """Catalog of the kept items, in prepared-id order.

    `items` has columns `item` (raw id), `categories` (a list of labels, primary first; empty
    when unknown) and `duration` (seconds); None means the source has no item attributes.
    `category_names` fixes the numbering (the synthetic world's true categories); by default
    the labels of the kept items are numbered in sorted order.
    """
    n_items = len(item_raw_ids)
    if items is None:
        empty = RaggedLists(np.zeros(n_items + 1, dtype=np.int64), np.zeros(0, dtype=np.int32))
        return Catalog(np.full(n_items, -1, dtype=np.int32), empty, np.full(n_items, np.nan), [])

    rows = _covering_rows(item_raw_ids, items.reset_index(drop=True), item_file)
    label_lists = items["categories"].reset_index(drop=True).to_numpy()[rows]
    lengths = np.fromiter((len(labels) for labels in label_lists), np.int64, count=n_items)
    labels = list(itertools.chain.from_iterable(label_lists))

    if category_names is None:
        category_names = sorted_labels(set(labels))
    number_of = {label: number for number, label in enumerate(category_names)}
    unknown = sorted(set(labels) - number_of.keys())
    if unknown:
        raise DataError(f"{item_file}: category labels {unknown[:5]} are not in the category list")
    values = np.fromiter((number_of[label] for label in labels), np.int32, count=len(labels))

    indptr = np.zeros(n_items + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    primary = np.full(n_items, -1, dtype=np.int32)
    primary[lengths > 0] = values[indptr[:-1][lengths > 0]]
    duration = items["duration"].reset_index(drop=True).to_numpy(dtype=np.float64)[rows]
    return Catalog(primary, RaggedLists(indptr, values), duration, list(category_names))
