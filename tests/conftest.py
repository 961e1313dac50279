"""Shared fixtures: the KuaiRand slice in ../shared/data, a tiny prepared synthetic dataset,
and an independent, loop-based version of the day split to check prepared folders against.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
KUAIRAND_DIR = REPO_ROOT.parent / "shared" / "data" / "KuaiRand-Pure" / "data"
KUAIRAND_LOG = "log_standard_4_25_to_5_08_pure.csv.gz"

# Small enough to prepare in well under a second; other test modules reuse it.
TINY_SYNTHETIC = {"seed": 0, "n_users": 200, "n_items": 150, "n_categories": 6, "n_days": 8}


@pytest.fixture(scope="session")
def kuairand_dir() -> Path:
    """../shared/data/KuaiRand-Pure/data (read-only); skips when the slice is absent."""
    if not (KUAIRAND_DIR / KUAIRAND_LOG).is_file():
        pytest.skip(f"the KuaiRand slice is not in {KUAIRAND_DIR} (a fresh clone has no ../shared)")
    return KUAIRAND_DIR


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """The folder of a tiny prepared synthetic dataset (200 users, 150 items, 8 days)."""
    from data_prep.synthetic import prepare_synthetic

    return prepare_synthetic(tmp_path_factory.mktemp("prepared"), "tiny", **TINY_SYNTHETIC)


def _distinct_new(items: list, seen: set) -> list:
    targets = []
    for item in items:
        if item not in seen and item not in targets:
            targets.append(item)
    return targets


def reference_split(
    rows: pd.DataFrame, n_days: int, min_active_days: int, min_train_interactions: int
) -> tuple[dict, set, int]:
    """The day split written out plainly, per user with Python lists and sets.

    `rows`: positives with raw `user`, `item`, `timestamp`, `day`, `order`. Returns
    ({raw user: {list name: [raw items]}}, the training item vocabulary, duplicate rows), ids
    as strings like the prepared folder's `raw_id` columns.
    """
    rows = rows.assign(user=rows["user"].astype(str), item=rows["item"].astype(str))
    deduplicated = rows.sort_values("order").drop_duplicates(["user", "item", "timestamp"])
    duplicates = len(rows) - len(deduplicated)
    rows = deduplicated
    last_train_day = n_days - 3
    train = rows[rows["day"] <= last_train_day]
    active_days = train.groupby("user")["day"].nunique()
    rows = rows[rows["user"].isin(active_days.index[active_days >= min_active_days])]
    train = rows[rows["day"] <= last_train_day]
    counts = train.groupby("user").size()
    rows = rows[rows["user"].isin(counts.index[counts >= min_train_interactions])]
    vocabulary = set(rows.loc[rows["day"] <= last_train_day, "item"])
    rows = rows[(rows["day"] <= last_train_day) | rows["item"].isin(vocabulary)]

    rows = rows.sort_values(["user", "timestamp", "order"])
    days = {}
    for user, item, day in zip(rows["user"], rows["item"], rows["day"], strict=True):
        by_day = days.setdefault(user, {"train": [], "valid": [], "test": []})
        segment = "train" if day <= last_train_day else "valid" if day == n_days - 2 else "test"
        by_day[segment].append(item)
    result = {
        user: {
            "train_history": lists["train"],
            "valid_day_items": lists["valid"],
            "valid_targets": _distinct_new(lists["valid"], set(lists["train"])),
            "test_targets": _distinct_new(lists["test"], set(lists["train"]) | set(lists["valid"])),
            "valid_targets_all": lists["valid"],
            "test_targets_all": lists["test"],
        }
        for user, lists in days.items()
    }
    return result, vocabulary, duplicates


@pytest.fixture(scope="session")
def reference():
    """`reference_split`, for the test modules that compare a prepared folder with it."""
    return reference_split


def prepared_lists(folder: Path) -> dict:
    """split.parquet of a prepared folder in raw ids: {raw user: {list name: [raw items]}}."""
    users = pd.read_parquet(folder / "users.parquet").set_index("user")["raw_id"]
    items = pd.read_parquet(folder / "items.parquet").set_index("item")["raw_id"]
    split = pd.read_parquet(folder / "split.parquet")
    columns = [name for name in split.columns if name != "user"]
    return {
        users[row["user"]]: {name: [items[item] for item in row[name]] for name in columns}
        for row in split.to_dict("records")
    }


@pytest.fixture(scope="session")
def read_prepared_lists():
    """`prepared_lists`, as a fixture."""
    return prepared_lists
