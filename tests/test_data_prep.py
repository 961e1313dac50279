"""The shared preparation: day split, filters, metadata, re-runs, errors, the CSV and WeChat
sources, the loader and the command line. Every input here is a small file the test writes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cmi.data import load_dataset
from data_prep.core import FilterSettings
from data_prep.csv_source import prepare_csv
from data_prep.errors import DataError
from data_prep.io import write_folder_atomically
from data_prep.kuairand import prepare_kuairand
from data_prep.wechat import prepare_wechat

DAY = 86_400

# (user, item, day, second of the day); the second row repeats the first exactly.
# fmt: off
HAND_ROWS = [
    (7, 10, 0, 100), (7, 10, 0, 100), (7, 20, 0, 200),
    (7, 30, 1, 100), (7, 10, 1, 200),
    (7, 40, 2, 100),
    (7, 10, 3, 100), (7, 50, 3, 200), (7, 50, 3, 300), (7, 20, 3, 400), (7, 60, 3, 500),
    (7, 60, 4, 100), (7, 70, 4, 200), (7, 30, 4, 300), (7, 50, 4, 400), (7, 80, 4, 500),
    (3, 50, 0, 50), (3, 60, 1, 50), (3, 80, 2, 50), (3, 50, 2, 60),
    (3, 10, 3, 50),
    (3, 10, 4, 50), (3, 20, 4, 60),
    (5, 10, 0, 10), (5, 20, 0, 20), (5, 30, 1, 10), (5, 40, 1, 20),
    (9, 10, 0, 10), (9, 20, 1, 10), (9, 90, 2, 10),
]
# fmt: on
HAND_CATEGORIES = {10: "x|y", 20: "y", 30: "", 40: "z", 50: "x", 60: "y|z", 70: "x", 80: "w"}
HAND_OPTIONS = {"min_active_days": 3, "min_train_interactions": 4}

# Expected split of the hand example, in prepared ids: raw users 3, 7 -> 0, 1; raw items
# 10, 20, 30, 40, 50, 60, 80 -> 1..7 (70 never occurs on a training day; user 5 has two active
# training days, user 9 three training positives).
HAND_SPLIT = {
    "train_history": [[5, 6, 7, 5], [1, 2, 3, 1, 4]],
    "valid_day_items": [[1], [1, 5, 5, 2, 6]],
    "valid_targets": [[1], [5, 6]],
    "test_targets": [[2], [7]],
    "valid_targets_all": [[1], [1, 5, 5, 2, 6]],
    "test_targets_all": [[1, 2], [6, 3, 5, 7]],
}


def write_hand_files(folder: Path, rows=HAND_ROWS, categories=HAND_CATEGORIES) -> tuple:
    """The hand example as a log (in time order, like a real one) and an item file."""
    folder.mkdir(parents=True, exist_ok=True)
    log = pd.DataFrame(rows, columns=["user", "item", "day", "second"])
    log["timestamp"] = log["day"] * DAY + log["second"]
    log["rating"] = 4.0
    log = log.sort_values("timestamp", kind="stable")[["user", "item", "rating", "timestamp"]]
    log.to_csv(folder / "log.csv", index=False)
    items = pd.DataFrame({"item": list(categories), "category": list(categories.values())})
    items["seconds"] = 12.5
    items.to_csv(folder / "items.csv", index=False)
    return folder / "log.csv", folder / "items.csv"


def prepare_hand(tmp_path: Path, name: str = "hand", **changes) -> Path:
    log, items = write_hand_files(tmp_path / "raw")
    options = {**HAND_OPTIONS, "items": items, "duration_col": "seconds", **changes}
    return prepare_csv(log, tmp_path / "out", name, **options)


def file_digests(folder: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in folder.iterdir()}


# --- the day split ----------------------------------------------------------------------------


def test_hand_example_gives_the_expected_split_filters_and_statistics(tmp_path):
    folder = prepare_hand(tmp_path)

    split = pd.read_parquet(folder / "split.parquet")
    assert split["user"].tolist() == [0, 1]
    for name, expected in HAND_SPLIT.items():
        assert [list(row) for row in split[name]] == expected, name
    users = pd.read_parquet(folder / "users.parquet")
    assert users["raw_id"].tolist() == ["3", "7"]
    items = pd.read_parquet(folder / "items.parquet")
    assert items["raw_id"].tolist() == ["10", "20", "30", "40", "50", "60", "80"]

    metadata = json.loads((folder / "metadata.json").read_text())
    removed = {
        f["name"]: (f["rows_removed"], f["users_removed"], f["items_removed"])
        for f in metadata["filters"]
    }
    assert removed == {
        "positive_all_rows": (0, 0, 0),
        "duplicates": (1, 0, 0),
        "min_active_days": (4, 1, 0),
        "min_train_interactions": (3, 1, 1),
        "items_unseen_in_training": (1, 0, 1),
    }
    assert metadata["duplicates"]["rows"] == 1
    statistics = metadata["statistics"]
    assert statistics["users"] == 2 and statistics["items"] == 7
    assert statistics["interactions"] == 21 and statistics["train_interactions"] == 9
    assert statistics["mean_history_length"] == 4.5
    assert (statistics["valid_users"], statistics["test_users"]) == (2, 2)
    assert (statistics["valid_targets"], statistics["test_targets"]) == (3, 2)
    assert metadata["days"] == {
        "n_days": 5,
        "train_days": 3,
        "valid_day": 3,
        "test_day": 4,
        "labels": ["1970-01-01", "1970-01-02", "1970-01-03", "1970-01-04", "1970-01-05"],
    }
    assert metadata["parameters"]["min_active_days"] == 3
    assert metadata["max_history"] == 100


def test_interactions_are_sorted_typed_and_match_the_split(tmp_path):
    folder = prepare_hand(tmp_path)
    interactions = pd.read_parquet(folder / "interactions.parquet")
    assert dict(interactions.dtypes.astype(str)) == {
        "user": "int32",
        "item": "int32",
        "timestamp": "int64",
        "day": "int16",
    }
    assert interactions.equals(interactions.sort_values(["user", "timestamp"], kind="stable"))
    train = interactions[interactions["day"] < 3]
    assert train.groupby("user")["item"].apply(list).tolist() == HAND_SPLIT["train_history"]
    assert not interactions.duplicated(["user", "item", "timestamp"]).any()


def test_items_get_categories_in_sorted_label_order_and_durations(tmp_path):
    folder = prepare_hand(tmp_path)
    items = pd.read_parquet(folder / "items.parquet")
    metadata = json.loads((folder / "metadata.json").read_text())
    assert metadata["categories"] == {"n_categories": 4, "names": ["w", "x", "y", "z"]}
    # Raw items 10, 20, 30, 40, 50, 60, 80 carry "x|y", "y", "", "z", "x", "y|z", "w".
    assert items["primary_category"].tolist() == [1, 2, -1, 3, 1, 2, 0]
    assert [list(row) for row in items["categories"]] == [[1, 2], [2], [], [3], [1], [2, 3], [0]]
    assert items["duration"].tolist() == [12.5] * 7


def test_loader_reads_the_folder_back(tmp_path):
    dataset = load_dataset(prepare_hand(tmp_path))
    assert (dataset.n_users, dataset.n_items, dataset.n_categories) == (2, 7, 4)
    assert dataset.train_history.to_lists() == HAND_SPLIT["train_history"]
    assert dataset.history("valid").to_lists() == HAND_SPLIT["train_history"]
    assert dataset.history("test").to_lists() == [[5, 6, 7, 5, 1], [1, 2, 3, 1, 4, 1, 5, 5, 2, 6]]
    assert dataset.targets("valid").to_lists() == HAND_SPLIT["valid_targets"]
    assert dataset.targets("test", "authors").to_lists() == HAND_SPLIT["test_targets_all"]
    assert dataset.item_primary_category.tolist() == [-1, 1, 2, -1, 3, 1, 2, 0]
    assert dataset.item_categories.to_lists() == [[], [1, 2], [2], [], [3], [1], [2, 3], [0]]
    # Training-day counts: item 1 (raw 10) twice, item 5 (raw 50) twice, the others once.
    assert dataset.item_popularity_train.tolist() == [0, 2, 1, 1, 1, 2, 1, 1]
    assert dataset.ground_truth is None and dataset.max_history == 100
    with pytest.raises(ValueError, match="variant"):
        dataset.targets("test", "every")


# --- re-runs and duplicates ----------------------------------------------------------------


def test_a_rerun_is_a_no_op_that_says_so_and_force_or_new_parameters_rebuild(tmp_path, caplog):
    folder = prepare_hand(tmp_path)
    stamps = {path.name: path.stat().st_mtime_ns for path in folder.iterdir()}

    with caplog.at_level(logging.INFO, logger="data_prep"):
        assert prepare_hand(tmp_path) == folder
    assert "already prepared" in caplog.text
    assert {path.name: path.stat().st_mtime_ns for path in folder.iterdir()} == stamps

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="data_prep"):
        prepare_hand(tmp_path, force=True)
    assert "already prepared" not in caplog.text and "wrote" in caplog.text

    prepare_hand(tmp_path, min_active_days=2)
    metadata = json.loads((folder / "metadata.json").read_text())
    assert metadata["parameters"]["min_active_days"] == 2
    assert metadata["statistics"]["users"] == 3  # user 5 (two active days) is back


def test_duplicates_are_counted_the_same_way_every_time(tmp_path):
    first = prepare_hand(tmp_path, name="first")
    second = prepare_hand(tmp_path, name="second")
    for folder in (first, second):
        assert json.loads((folder / "metadata.json").read_text())["duplicates"]["rows"] == 1
    for file_name in ("interactions.parquet", "split.parquet", "items.parquet"):
        assert (first / file_name).read_bytes() == (second / file_name).read_bytes()


def test_metadata_records_source_files_and_fingerprint(tmp_path):
    folder = prepare_hand(tmp_path)
    metadata = json.loads((folder / "metadata.json").read_text())
    log = tmp_path / "raw" / "log.csv"
    assert metadata["source_files"][0] == {
        "path": str(log),
        "bytes": log.stat().st_size,
        "sha256": hashlib.sha256(log.read_bytes()).hexdigest(),
    }
    assert len(metadata["source_files"]) == 2 and len(metadata["fingerprint"]) == 64
    assert metadata["format_version"] == 1 and metadata["source"] == "csv"


# --- bad input: one clear error, nothing written ------------------------------------------


def assert_nothing_written(out: Path) -> None:
    assert not out.exists() or not any(out.iterdir()), list(out.iterdir())


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match=r"nope\.csv does not exist"):
        prepare_csv(tmp_path / "nope.csv", tmp_path / "out", "x")
    with pytest.raises(DataError, match="user_action.csv does not exist"):
        prepare_wechat(tmp_path, tmp_path / "out")
    assert_nothing_written(tmp_path / "out")


def test_missing_column_lists_the_columns_found(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("user,item,time\n1,2,3\n")
    with pytest.raises(DataError, match=r"missing column\(s\) 'timestamp'; columns found: user, "):
        prepare_csv(path, tmp_path / "out", "x")
    assert_nothing_written(tmp_path / "out")


def test_unparsable_value_names_line_and_value(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("user,item,timestamp\n1,2,3\n1,3,4\n1,4,abc\n1,5,6\n")
    with pytest.raises(DataError, match=r"line 4: column 'timestamp' has value 'abc'"):
        prepare_csv(path, tmp_path / "out", "x")
    assert_nothing_written(tmp_path / "out")


def test_empty_result_says_what_each_filter_removed(tmp_path):
    with pytest.raises(DataError) as error:
        prepare_hand(tmp_path, min_train_interactions=50)
    message = str(error.value)
    assert message.startswith("no interactions left after filtering")
    assert "duplicates removed 1 rows" in message
    assert "min_active_days removed 4 rows, 1 users" in message
    assert "min_train_interactions removed 25 rows, 3 users" in message
    assert_nothing_written(tmp_path / "out")


def test_no_validation_users_and_no_test_users_are_errors(tmp_path):
    no_valid = [row for row in HAND_ROWS if row[2] != 3]
    log, items = write_hand_files(tmp_path / "a", rows=no_valid)
    with pytest.raises(DataError, match=r"no validation users.*\(1970-01-04\)"):
        prepare_csv(log, tmp_path / "out", "a", **HAND_OPTIONS)

    # On the test day every user only re-clicks a history item.
    no_test = [row for row in HAND_ROWS if row[2] != 4] + [(7, 10, 4, 9), (3, 50, 4, 9)]
    log, items = write_hand_files(tmp_path / "b", rows=no_test)
    with pytest.raises(DataError, match=r"no test users.*\(1970-01-05\)"):
        prepare_csv(log, tmp_path / "out", "b", **HAND_OPTIONS)
    assert_nothing_written(tmp_path / "out")


def test_fewer_than_three_days_is_an_error(tmp_path):
    log, _ = write_hand_files(tmp_path, rows=[row for row in HAND_ROWS if row[2] < 2])
    with pytest.raises(DataError, match="spans 2 day"):
        prepare_csv(log, tmp_path / "out", "x", min_active_days=1)


def test_item_file_that_does_not_cover_the_items_says_how_many_and_which(tmp_path):
    partial = {item: label for item, label in HAND_CATEGORIES.items() if item not in (40, 60)}
    log, items = write_hand_files(tmp_path, categories=partial)
    with pytest.raises(DataError, match=r"items\.csv does not cover the items: 2 of 7.*40, 60"):
        prepare_csv(log, tmp_path / "out", "x", items=items, **HAND_OPTIONS)
    assert_nothing_written(tmp_path / "out")


def test_a_failed_rebuild_leaves_the_previous_folder_untouched(tmp_path):
    folder = prepare_hand(tmp_path)
    before = file_digests(folder)
    partial = {10: "x"}
    _, items = write_hand_files(tmp_path / "raw", categories=partial)
    with pytest.raises(DataError, match="does not cover"):
        prepare_csv(
            tmp_path / "raw" / "log.csv",
            tmp_path / "out",
            "hand",
            items=items,
            force=True,
            **HAND_OPTIONS,
        )
    assert file_digests(folder) == before
    assert [path.name for path in (tmp_path / "out").iterdir()] == ["hand"]


def test_an_error_while_writing_leaves_no_partial_folder(tmp_path):
    def write_then_fail(folder: Path) -> None:
        (folder / "interactions.parquet").write_bytes(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_folder_atomically(tmp_path / "out" / "x", write_then_fail)
    assert list((tmp_path / "out").iterdir()) == []


def test_an_unrelated_folder_is_never_replaced(tmp_path):
    (tmp_path / "out" / "hand").mkdir(parents=True)
    (tmp_path / "out" / "hand" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="refusing to replace"):
        prepare_hand(tmp_path)
    assert (tmp_path / "out" / "hand" / "notes.txt").read_text() == "mine"


def test_configuration_mistakes_are_value_errors(tmp_path):
    with pytest.raises(ValueError, match="min_active_days"):
        FilterSettings(min_active_days=0)
    with pytest.raises(ValueError, match="time_unit"):
        prepare_csv(tmp_path / "x.csv", tmp_path, time_unit="hours")
    with pytest.raises(ValueError, match="positive rule 'clicks'"):
        prepare_kuairand(tmp_path, tmp_path, positive="clicks")
    with pytest.raises(ValueError, match="positive rule 'play'"):
        prepare_wechat(tmp_path, tmp_path, positive="play")


def test_loader_errors_name_the_problem(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(tmp_path / "absent")
    folder = prepare_hand(tmp_path)
    metadata = json.loads((folder / "metadata.json").read_text())
    (folder / "metadata.json").write_text(json.dumps({**metadata, "format_version": 2}))
    with pytest.raises(DataError, match="format_version 2"):
        load_dataset(folder)
    (folder / "split.parquet").unlink()
    with pytest.raises(DataError, match="lacks split.parquet"):
        load_dataset(folder)


# --- the CSV source: MovieLens and MicroLens layouts ----------------------------------------


def random_log(seed: int, n_users=25, n_items=30, n_days=6, rows_per_user_day=4) -> pd.DataFrame:
    """A small random log: user, item, unix seconds (2024-03-01 onwards), in time order."""
    rng = np.random.default_rng(seed)
    start = 1_709_251_200  # 2024-03-01 00:00 UTC
    size = n_users * n_days * rows_per_user_day
    log = pd.DataFrame(
        {
            "user": rng.integers(1, n_users + 1, size),
            "item": rng.integers(100, 100 + n_items, size),
            "seconds": start + rng.integers(0, n_days * DAY, size),
        }
    )
    return log.sort_values("seconds", kind="stable", ignore_index=True)


def reference_rows(users, items, seconds) -> pd.DataFrame:
    day = seconds // DAY
    return pd.DataFrame(
        {
            "user": users,
            "item": items,
            "timestamp": seconds,
            "day": day - day.min(),
            "order": np.arange(len(users)),
        }
    )


def test_movielens_csv_and_parquet_match_the_reference(tmp_path, reference, read_prepared_lists):
    log = random_log(1)
    ratings = pd.DataFrame(
        {"userId": log["user"], "movieId": log["item"], "rating": 3.5, "timestamp": log["seconds"]}
    )
    movies = pd.DataFrame(
        {"movieId": range(100, 130), "title": "t", "genres": ["Action|Comedy", "Drama"] * 15}
    )
    ratings.to_csv(tmp_path / "ratings.csv", index=False)
    ratings.to_parquet(tmp_path / "ratings.parquet")
    movies.to_csv(tmp_path / "movies.csv", index=False)
    options = {
        "user_col": "userId",
        "item_col": "movieId",
        "items": tmp_path / "movies.csv",
        "category_col": "genres",
        "min_active_days": 2,
    }
    from_csv = prepare_csv(tmp_path / "ratings.csv", tmp_path / "out", **options)
    from_parquet = prepare_csv(tmp_path / "ratings.parquet", tmp_path / "out", "pq", **options)

    expected, vocabulary, _ = reference(
        reference_rows(log["user"], log["item"], log["seconds"]), 6, 2, 4
    )
    assert read_prepared_lists(from_csv) == expected
    assert (from_csv / "split.parquet").read_bytes() == (
        from_parquet / "split.parquet"
    ).read_bytes()
    items = pd.read_parquet(from_csv / "items.parquet")
    assert sorted(items["raw_id"]) == sorted(vocabulary)
    metadata = json.loads((from_csv / "metadata.json").read_text())
    assert metadata["name"] == "ratings"
    assert metadata["categories"]["names"] == ["Action", "Comedy", "Drama"]
    even = items["raw_id"].astype(int) % 2 == 0  # movies 100, 102, ... are "Action|Comedy"
    assert (items.loc[even, "primary_category"] == 0).all()
    assert (items.loc[~even, "primary_category"] == 2).all()


@pytest.mark.parametrize("layout", ["csv_ms", "parquet_ms", "csv_datetime"])
def test_microlens_layouts_match_the_reference(tmp_path, reference, read_prepared_lists, layout):
    log = random_log(2)
    table = pd.DataFrame({"user": log["user"], "item": log["item"]})
    if layout.endswith("ms"):
        table["timestamp"], unit = log["seconds"] * 1000 + 999, "ms"
    else:
        stamps = pd.to_datetime(log["seconds"], unit="s")
        table["timestamp"], unit = stamps.dt.strftime("%Y-%m-%d %H:%M:%S"), "datetime"
    path = tmp_path / ("log.parquet" if layout.startswith("parquet") else "log.csv")
    if path.suffix == ".csv":
        table.to_csv(path, index=False)
    else:
        table.to_parquet(path)
    folder = prepare_csv(path, tmp_path / "out", time_unit=unit, min_active_days=2)

    expected, _, _ = reference(reference_rows(log["user"], log["item"], log["seconds"]), 6, 2, 4)
    assert read_prepared_lists(folder) == expected
    days = json.loads((folder / "metadata.json").read_text())["days"]
    assert days["labels"][0] == "2024-03-01" and days["n_days"] == 6


# --- the WeChat source ----------------------------------------------------------------------


def write_wechat(folder: Path, seed: int = 3) -> pd.DataFrame:
    """user_action.csv and feed_info.csv in the challenge's layout; returns the actions."""
    rng = np.random.default_rng(seed)
    size, n_feeds = 600, 25
    actions = pd.DataFrame(
        {
            "userid": rng.integers(1, 21, size),
            "feedid": rng.integers(1, n_feeds + 1, size),
            "date_": np.sort(rng.integers(1, 7, size)),
            "device": 1,
            "read_comment": rng.random(size) < 0.1,
            "comment": 0,
            "like": rng.random(size) < 0.2,
            "play": rng.integers(0, 60_000, size),
            "stay": 70_000,
            "click_avatar": 0,
            "forward": rng.random(size) < 0.05,
            "follow": 0,
            "favorite": 0,
        }
    ).astype({"read_comment": int, "like": int, "forward": int})
    folder.mkdir(parents=True, exist_ok=True)
    # Columns in another order than the challenge's: the reader goes by name.
    actions[actions.columns[::-1]].to_csv(folder / "user_action.csv", index=False)
    feeds = pd.DataFrame(
        {
            "feedid": range(1, n_feeds + 1),
            "authorid": 5,
            "videoplayseconds": rng.integers(5, 60, n_feeds),
            "description": "1 2 3",
            "manual_tag_list": [f"{k % 4 + 10};{k % 3 + 20}" for k in range(n_feeds)],
            "machine_tag_list": "7 0.5",
        }
    )
    feeds.to_csv(folder / "feed_info.csv", index=False)
    return actions.merge(feeds[["feedid", "videoplayseconds"]], on="feedid", how="left")


@pytest.mark.parametrize("rule", ["play_ratio:0.5", "any_action"])
def test_wechat_matches_the_reference(tmp_path, reference, read_prepared_lists, rule):
    actions = write_wechat(tmp_path / "wechat")
    folder = prepare_wechat(tmp_path / "wechat", tmp_path / "out", positive=rule, min_active_days=2)

    if rule == "any_action":
        positive = actions[["read_comment", "like", "forward"]].sum(axis=1) > 0
    else:
        positive = actions["play"] >= 0.5 * actions["videoplayseconds"] * 1000
    day = actions["date_"] - 1
    rank_in_day = actions.groupby("date_").cumcount()
    rows = reference_rows(actions["userid"], actions["feedid"], day * DAY + rank_in_day)[positive]
    expected, _, _ = reference(rows, 6, 2, 4)
    assert read_prepared_lists(folder) == expected

    metadata = json.loads((folder / "metadata.json").read_text())
    assert metadata["filters"][0]["rows_removed"] == int((~positive).sum())
    assert metadata["categories"]["names"] == ["10", "11", "12", "13", "20", "21", "22"]
    items = pd.read_parquet(folder / "items.parquet")
    feed = items["raw_id"].astype(int)
    # Feed f's first tag is "1x" with x = (f - 1) % 4, and tags "10".."13" are numbered 0..3.
    assert (items["primary_category"] == (feed - 1) % 4).all()


# --- the command line -----------------------------------------------------------------------


def run_cli(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "data_prep", *arguments],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[1],
    )


def test_cli_reports_a_data_error_in_one_line_without_traceback(tmp_path):
    result = run_cli("csv", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "missing.csv" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_cli_prepares_then_says_a_rerun_is_a_no_op(tmp_path):
    log, items = write_hand_files(tmp_path / "raw")
    arguments = [
        "csv",
        str(log),
        "--out",
        str(tmp_path / "out"),
        "--items",
        str(items),
        "--min-active-days",
        "3",
    ]
    first = run_cli(*arguments)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[0] == str(tmp_path / "out" / "log")
    assert re.search(r"^\s+interactions\s+21$", first.stdout, re.MULTILINE)
    second = run_cli(*arguments)
    assert second.returncode == 0 and "already prepared" in second.stderr
