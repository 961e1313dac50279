"""The chapters' helpers: recorded results, dataset preparation and the data chapter's tables."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cmi import study

TINY_WORLD = {
    "synthetic_users": 60,
    "synthetic_items": 40,
    "synthetic_categories": 4,
    "synthetic_days": 8,
}


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory) -> Path:
    """A prepared synthetic world small enough to check by brute force."""
    data_dir = tmp_path_factory.mktemp("data")
    return study.prepare_dataset("synthetic", data_dir=data_dir, **TINY_WORLD)


# --- record_results / load_results ---------------------------------------------------------


def test_record_results_converts_numpy_and_sorts_keys(tmp_path):
    results = {
        "zeta": np.float32(0.5),
        "alpha": {"count": np.int64(7), "flag": np.bool_(True)},
        "array": np.arange(3, dtype=np.int16),
        "nested": [np.float64(1.25), (np.int32(2), "text")],
        "path": Path("a/b"),
        "tensors": {"scalar": torch.tensor(1.5), "vector": torch.tensor([1, 2])},
    }
    path = study.record_results(tmp_path / "results", "01_data", results)

    assert path == tmp_path / "results" / "01_data.json"
    text = path.read_text()
    loaded = json.loads(text)
    assert loaded == {
        "alpha": {"count": 7, "flag": True},
        "array": [0, 1, 2],
        "nested": [1.25, [2, "text"]],
        "path": "a/b",
        "tensors": {"scalar": 1.5, "vector": [1, 2]},
        "zeta": 0.5,
    }
    assert list(loaded) == sorted(loaded)  # keys written in sorted order
    assert text.index('"alpha"') < text.index('"zeta"')
    assert study.load_results(tmp_path / "results", "01_data") == loaded


def test_record_results_replaces_the_old_file_and_leaves_no_temporary(tmp_path):
    study.record_results(tmp_path, "02_model", {"loss": 1.0})
    study.record_results(tmp_path, "02_model", {"loss": 2.0})

    assert study.load_results(tmp_path, "02_model") == {"loss": 2.0}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["02_model.json"]


def test_record_results_failure_keeps_the_previous_results(tmp_path, monkeypatch):
    study.record_results(tmp_path, "02_model", {"loss": 1.0})

    with pytest.raises(TypeError):
        study.record_results(tmp_path, "02_model", {"loss": object()})  # not JSON

    def failing_replace(source, target):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk gone"):
        study.record_results(tmp_path, "02_model", {"loss": 3.0})

    assert study.load_results(tmp_path, "02_model") == {"loss": 1.0}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["02_model.json"]


def test_load_results_names_the_missing_chapter(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"chapter '03_training'.*03_training\.json"):
        study.load_results(tmp_path, "03_training")


# --- prepare_dataset -----------------------------------------------------------------------


def test_prepare_dataset_rejects_an_unknown_dataset(tmp_path):
    with pytest.raises(ValueError, match=r"dataset must be one of .*got 'movielens'"):
        study.prepare_dataset("movielens", data_dir=tmp_path)


@pytest.mark.parametrize("dataset", ["kuairand", "wechat"])
def test_prepare_dataset_needs_data_root_for_real_logs(tmp_path, dataset):
    with pytest.raises(ValueError, match=rf"dataset='{dataset}' needs the parameter data_root"):
        study.prepare_dataset(dataset, data_root="", data_dir=tmp_path)
    missing = tmp_path / "no_such_folder"
    with pytest.raises(ValueError, match=r"data_root=.*no_such_folder.* is not a folder"):
        study.prepare_dataset(dataset, data_root=str(missing), data_dir=tmp_path)
    assert not (tmp_path / dataset).exists()


def test_prepare_dataset_synthetic_is_sized_and_reused(tiny_world):
    metadata = json.loads((tiny_world / "metadata.json").read_text())
    assert tiny_world.name == "synthetic"
    assert metadata["parameters"]["n_users"] == TINY_WORLD["synthetic_users"]
    assert metadata["parameters"]["n_categories"] == TINY_WORLD["synthetic_categories"]
    assert metadata["days"]["n_days"] == TINY_WORLD["synthetic_days"]

    before = (tiny_world / "metadata.json").stat().st_mtime_ns
    again = study.prepare_dataset("synthetic", data_dir=tiny_world.parent, **TINY_WORLD)
    assert again == tiny_world
    assert (tiny_world / "metadata.json").stat().st_mtime_ns == before  # nothing rewritten


# --- the data chapter's tables -------------------------------------------------------------


def test_day_segments_marks_the_last_two_days():
    segments = study.day_segments(np.array([0, 3, 4, 5, 4]), n_days=6)
    assert segments.tolist() == ["training", "training", "validation", "test", "validation"]


def test_target_accounting_matches_a_direct_count(tiny_world):
    table = study.target_accounting(tiny_world)
    split = pd.read_parquet(tiny_world / "split.parquet")

    # Count the same quantities user by user, with Python sets.
    expected = {}
    for segment, all_column, target_column in [
        ("validation", "valid_targets_all", "valid_targets"),
        ("test", "test_targets_all", "test_targets"),
    ]:
        repeats = seen = targets = users_with_target = 0
        for row in split.itertuples():
            history = set(row.train_history)
            if segment == "test":
                history |= set(row.valid_day_items)
            day_items = list(getattr(row, all_column))
            distinct = set(day_items)
            repeats += len(day_items) - len(distinct)
            seen += len(distinct & history)
            new = [item for item in dict.fromkeys(day_items) if item not in history]
            assert new == list(getattr(row, target_column))
            targets += len(new)
            users_with_target += bool(new)
        expected[segment] = (repeats, seen, targets, users_with_target)

    for segment, (repeats, seen, targets, users_with_target) in expected.items():
        column = table[segment]
        assert column["repeats within the day"] == repeats
        assert column["already in the history"] == seen
        assert column["targets"] == targets
        assert column["users with a target"] == users_with_target
    metadata = json.loads((tiny_world / "metadata.json").read_text())
    assert table.loc["targets", "validation"] == metadata["statistics"]["valid_targets"]
    assert table.loc["positives on the day", "test"] == metadata["statistics"]["test_targets_all"]


def test_interest_concentration_on_a_hand_made_world():
    # Items 1..4 in categories 0, 0, 1, 2; user 0 holds category 0, user 1 categories 1 and 2.
    user_interest = np.zeros((2, 3, 3))
    user_interest[0, :, 0] = 1.0
    user_interest[1, :, 1] = 0.5
    user_interest[1, :, 2] = 0.5
    ground_truth = {
        "item_category": np.array([-1, 0, 0, 1, 2]),
        "item_popularity": np.array([0.0, 0.4, 0.1, 0.3, 0.2]),
        "user_interest": user_interest,
    }
    interactions = pd.DataFrame(
        {
            "user": [0, 0, 0, 1, 1, 1],
            "item": [1, 2, 3, 3, 4, 1],
            "day": [0, 0, 0, 0, 0, 2],  # the last row is on a non-training day
        }
    )
    table = study.interest_concentration(interactions, ground_truth, n_train_days=1)

    assert table.loc[0, "share_in_interests"] == pytest.approx(2 / 3)
    assert table.loc[1, "share_in_interests"] == pytest.approx(1.0)
    assert table.loc[0, "share_by_popularity"] == pytest.approx(0.5)  # items 1, 2
    assert table.loc[1, "share_by_popularity"] == pytest.approx(0.5)  # items 3, 4
    assert table["interests_held"].tolist() == [1, 2]
    assert table["categories_in_history"].tolist() == [2, 2]
    assert table["training_positives"].tolist() == [3, 2]


def test_filter_and_statistics_tables_follow_metadata():
    metadata = {
        "filters": [
            {
                "name": "b_filter",
                "description": "second",
                "rows_removed": 5,
                "users_removed": 1,
                "items_removed": 0,
            },
            {
                "name": "a_filter",
                "description": "first",
                "rows_removed": 2,
                "users_removed": 0,
                "items_removed": 1,
            },
        ],
        "statistics": {"users": 12345, "density": 0.000123456},
    }
    filters = study.filters_table(metadata)
    assert filters.index.tolist() == ["b_filter", "a_filter"]  # order of application kept
    assert filters["rows_removed"].tolist() == [5, 2]
    statistics = study.statistics_table(metadata)
    assert statistics["value"].to_dict() == {"users": "12,345", "density": "0.0001235"}


# --- showing source ------------------------------------------------------------------------


def _example(values):
    doubled = [2 * v for v in values]
    # Sum step
    total = sum(doubled)
    return total


def test_source_lines_slices_between_markers():
    assert study.source_lines(_example, "# Sum step", "return") == (
        "# Sum step\ntotal = sum(doubled)"
    )
    assert study.source_lines(_example, "doubled =").splitlines()[-1] == "return total"
    assert study.source_lines(_example).startswith("def _example(values):")
    with pytest.raises(ValueError, match="no line containing 'missing'"):
        study.source_lines(_example, "missing")
    with pytest.raises(ValueError, match="no line containing 'nowhere' after"):
        study.source_lines(_example, "# Sum step", "nowhere")


def test_show_source_names_the_file_and_lines():
    shown = study.show_source(study.day_segments).data
    first = study.day_segments.__code__.co_firstlineno
    header, code = shown.split("\n\n", 1)
    assert header.startswith("`cmi.study.day_segments`, `cmi/study.py` lines ")
    start, end = (int(n) for n in header.split("lines ")[1].rstrip(":").split("-"))
    assert start == first
    assert end - start + 1 == len(study.source_lines(study.day_segments).splitlines())
    assert code.startswith("```python\ndef day_segments(") and code.endswith("\n```")
