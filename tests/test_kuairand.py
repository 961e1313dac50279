"""The KuaiRand slice in ../shared/data, prepared and checked against a plain pandas reading of
the raw gzip log (skipped where the slice is absent).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cmi.data import load_dataset
from data_prep.kuairand import KUAIRAND_MIN_ACTIVE_DAYS, prepare_kuairand

pytestmark = pytest.mark.kuairand

LOG = "log_standard_4_25_to_5_08_pure.csv.gz"
FEATURES = "video_features_basic_pure.csv"


@pytest.fixture(scope="module")
def raw_log(kuairand_dir) -> pd.DataFrame:
    return pd.read_csv(kuairand_dir / LOG)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("kuairand")


@pytest.fixture(scope="module")
def clicks(kuairand_dir, data_dir):
    """The slice prepared with the defaults (clicks, 2 active days, 4 training clicks)."""
    return prepare_kuairand(kuairand_dir, data_dir, "clicks")


def positives(log: pd.DataFrame, rule: str) -> pd.DataFrame:
    """The positive rows of the raw log as reference rows: day from `date`, order by time_ms."""
    if rule == "click":
        keep = log["is_click"] == 1
    elif rule == "long_view":
        keep = log["long_view"] == 1
    else:
        threshold = float(rule.split(":")[1])
        ratio = log["play_time_ms"] / log["duration_ms"].where(log["duration_ms"] > 0)
        keep = ratio >= threshold
    dates = pd.to_datetime(log["date"].astype(str), format="%Y%m%d")
    rows = pd.DataFrame(
        {
            "user": log["user_id"],
            "item": log["video_id"],
            "timestamp": log["time_ms"] // 1000,
            "day": (dates - dates.min()).dt.days,
            # Rank in (time_ms, file row) order: the row index breaks ties in a stable sort.
            "order": log["time_ms"].rank(method="first").astype(np.int64),
        }
    )
    return rows[keep.to_numpy()]


def test_statistics_agree_with_an_independent_pandas_computation(clicks, raw_log, reference):
    expected, vocabulary, duplicates = reference(
        positives(raw_log, "click"), 14, KUAIRAND_MIN_ACTIVE_DAYS, 4
    )
    metadata = json.loads((clicks / "metadata.json").read_text())
    statistics = metadata["statistics"]
    assert statistics["users"] == len(expected)
    assert statistics["items"] == len(vocabulary)
    assert statistics["interactions"] == sum(
        len(lists[name])
        for lists in expected.values()
        for name in ("train_history", "valid_day_items", "test_targets_all")
    )
    for split in ("valid", "test"):
        targets = [lists[f"{split}_targets"] for lists in expected.values()]
        assert statistics[f"{split}_users"] == sum(1 for row in targets if row)
        assert statistics[f"{split}_targets"] == sum(len(row) for row in targets)
    assert metadata["duplicates"]["rows"] == duplicates
    positive_filter = metadata["filters"][0]
    assert positive_filter["rows_removed"] == int((raw_log["is_click"] != 1).sum())


def test_histories_and_targets_agree_with_the_reference(
    clicks, raw_log, reference, read_prepared_lists
):
    expected, _, _ = reference(positives(raw_log, "click"), 14, KUAIRAND_MIN_ACTIVE_DAYS, 4)
    assert read_prepared_lists(clicks) == expected


@pytest.mark.parametrize("rule", ["long_view", "watch_ratio:0.8"])
def test_other_positive_rules_agree_with_the_reference(
    kuairand_dir, data_dir, raw_log, reference, rule
):
    folder = prepare_kuairand(kuairand_dir, data_dir, rule.replace(":", "_"), positive=rule)
    expected, vocabulary, _ = reference(positives(raw_log, rule), 14, KUAIRAND_MIN_ACTIVE_DAYS, 4)
    statistics = json.loads((folder / "metadata.json").read_text())["statistics"]
    assert (statistics["users"], statistics["items"]) == (len(expected), len(vocabulary))
    assert statistics["test_targets"] == sum(len(row["test_targets"]) for row in expected.values())


def test_no_target_is_in_its_own_history(clicks):
    dataset = load_dataset(clicks)
    for split in ("valid", "test"):
        history, targets = dataset.history(split), dataset.targets(split)
        # One integer per (user, item) pair, to compare every user at once.
        user_of_history = np.repeat(np.arange(dataset.n_users), history.lengths)
        user_of_target = np.repeat(np.arange(dataset.n_users), targets.lengths)
        pairs = user_of_history * (dataset.n_items + 1) + history.values
        target_pairs = user_of_target * (dataset.n_items + 1) + targets.values
        assert not np.isin(target_pairs, pairs).any()
        assert len(target_pairs) > 1000


def test_items_take_the_first_tag_as_primary_category(clicks, kuairand_dir):
    features = pd.read_csv(kuairand_dir / FEATURES, dtype={"tag": str}).set_index("video_id")
    items = pd.read_parquet(clicks / "items.parquet")
    names = json.loads((clicks / "metadata.json").read_text())["categories"]["names"]
    tags = features.loc[items["raw_id"].astype(int), "tag"]
    first_tag = tags.str.split(",").str[0].fillna("none").to_numpy()
    primary = np.array([names[c] if c >= 0 else "none" for c in items["primary_category"]])
    np.testing.assert_array_equal(primary, first_tag)
    seconds = features.loc[items["raw_id"].astype(int), "video_duration"].to_numpy() / 1000
    known = ~np.isnan(seconds)
    np.testing.assert_allclose(items["duration"].to_numpy()[known], seconds[known])


def test_metadata_records_the_source_the_threshold_and_the_license(clicks, kuairand_dir):
    metadata = json.loads((clicks / "metadata.json").read_text())
    log = kuairand_dir / LOG
    assert metadata["source_files"][0] == {
        "path": str(log),
        "bytes": log.stat().st_size,
        "sha256": hashlib.sha256(log.read_bytes()).hexdigest(),
    }
    assert metadata["parameters"]["min_active_days"] == KUAIRAND_MIN_ACTIVE_DAYS == 2
    assert metadata["parameters"]["positive"] == "click"
    assert metadata["days"]["labels"][0] == "2022-04-25" and metadata["days"]["n_days"] == 14
    assert "CC BY-SA 4.0" in metadata["license"]


def test_several_log_files_plain_and_gzip_give_the_same_split(
    kuairand_dir, raw_log, clicks, tmp_path
):
    """The log cut in two files (one plain, one gzip), given as explicit paths."""
    half = len(raw_log) // 2
    first, second = tmp_path / "log_standard_a.csv", tmp_path / "log_standard_b.csv.gz"
    raw_log.iloc[:half].to_csv(first, index=False)
    # Columns in another order: the reader goes by name.
    raw_log.iloc[half:, ::-1].to_csv(
        second, index=False, compression={"method": "gzip", "compresslevel": 1}
    )
    folder = prepare_kuairand([first, second], tmp_path / "out", features=kuairand_dir / FEATURES)
    for file_name in ("interactions.parquet", "split.parquet", "items.parquet"):
        assert (folder / file_name).read_bytes() == (clicks / file_name).read_bytes()
    source_files = json.loads((folder / "metadata.json").read_text())["source_files"]
    assert [Path(entry["path"]).name for entry in source_files] == [
        first.name,
        second.name,
        FEATURES,
    ]


def test_the_release_root_and_its_data_folder_give_the_same_files(kuairand_dir):
    from data_prep.kuairand import find_files

    assert find_files(kuairand_dir.parent) == find_files(kuairand_dir)
