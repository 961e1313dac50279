"""The synthetic world: determinism, the planted interests, and ground truth that agrees with
the prepared interactions and with how views are generated.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cmi.data import load_dataset
from data_prep.synthetic import SyntheticConfig, generate_world, prepare_synthetic

SMALL = {"n_users": 300, "n_items": 300, "n_categories": 12, "n_days": 10}
PARQUET_FILES = ("interactions.parquet", "items.parquet", "users.parquet", "split.parquet")


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    return load_dataset(prepare_synthetic(tmp_path_factory.mktemp("synthetic"), "small", **SMALL))


def test_same_seed_gives_identical_files_and_another_seed_does_not(tmp_path):
    first = prepare_synthetic(tmp_path, "first", seed=5, **SMALL)
    again = prepare_synthetic(tmp_path, "again", seed=5, **SMALL)
    other = prepare_synthetic(tmp_path, "other", seed=6, **SMALL)
    for file_name in PARQUET_FILES:
        assert (first / file_name).read_bytes() == (again / file_name).read_bytes(), file_name
    first_metadata, again_metadata = (
        {**json.loads((folder / "metadata.json").read_text()), "name": None}
        for folder in (first, again)
    )
    assert first_metadata == again_metadata
    with np.load(first / "ground_truth.npz") as a, np.load(again / "ground_truth.npz") as b:
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key])
    assert (first / "interactions.parquet").read_bytes() != (
        other / "interactions.parquet"
    ).read_bytes()
    first_rows = pd.read_parquet(first / "interactions.parquet")
    other_rows = pd.read_parquet(other / "interactions.parquet")
    assert len(first_rows) != len(other_rows) or not first_rows.equals(other_rows)


def test_history_items_come_mostly_from_the_users_top_interests(small_dataset):
    truth = small_dataset.ground_truth
    category = truth["item_category"]
    train_days = small_dataset.metadata["days"]["train_days"]
    item_share = np.bincount(category[1:], minlength=SMALL["n_categories"]) / small_dataset.n_items
    in_top, random_share = [], []
    for user in range(small_dataset.n_users):
        top = np.argsort(-truth["user_interest"][user, :train_days].mean(axis=0))[:2]
        in_top.append(np.isin(category[small_dataset.train_history.row(user)], top).mean())
        random_share.append(item_share[top].sum())  # what random items would give
    in_top, random_share = np.array(in_top), np.array(random_share)
    assert np.median(in_top) > 0.8 and np.median(random_share) < 0.3
    assert np.mean(in_top > random_share + 0.3) > 0.9


def test_ground_truth_agrees_with_the_prepared_folder(small_dataset):
    truth = small_dataset.ground_truth
    metadata = small_dataset.metadata
    n_users, n_items = small_dataset.n_users, small_dataset.n_items
    n_days, n_categories = metadata["days"]["n_days"], metadata["categories"]["n_categories"]
    assert truth["user_interest"].shape == (n_users, n_days, n_categories)
    for key in ("item_category", "item_weight_in_category", "item_popularity"):
        assert truth[key].shape == (n_items + 1,), key
    np.testing.assert_allclose(truth["user_interest"].sum(axis=2), 1.0)
    assert truth["item_category"][0] == -1
    items = pd.read_parquet(small_dataset.path / "items.parquet")
    np.testing.assert_array_equal(truth["item_category"][1:], items["primary_category"])
    np.testing.assert_array_equal(truth["item_category"], small_dataset.item_primary_category)
    assert float(truth["exploration"]) == SyntheticConfig().exploration

    # The oracle over all items is a distribution: at most 1 (items never seen in training
    # are not in the folder) and close to it.
    oracle = (1 - truth["exploration"]) * truth["user_interest"][
        :, :, truth["item_category"][1:]
    ] * truth["item_weight_in_category"][1:] + truth["exploration"] * truth["item_popularity"][1:]
    total = oracle.sum(axis=2)
    assert total.max() <= 1 + 1e-9 and total.min() > 0.95


def test_views_follow_the_oracle_category_marginal():
    """Summed over views, the categories drawn match (1 - e) * interest + e * popularity."""
    config = SyntheticConfig(n_users=400, n_items=300, n_categories=8, n_days=6, seed=2)
    world = generate_world(config)
    views = world.views
    user, day = views["user"].to_numpy(), views["day"].to_numpy()
    category_share = np.bincount(
        world.item_category, world.item_popularity, minlength=config.n_categories
    )
    expected = (1 - config.exploration) * world.user_interest[user, day].sum(
        axis=0
    ) + config.exploration * len(views) * category_share
    observed = np.bincount(world.item_category[views["item"]], minlength=config.n_categories)
    # Poisson-like noise is about sqrt(count); allow five standard deviations.
    assert np.all(np.abs(observed - expected) < 5 * np.sqrt(expected) + 5)
    assert len(views) > 10_000


def test_views_stay_inside_their_day_and_are_ordered_within_sessions():
    world = generate_world(SyntheticConfig(n_users=100, n_items=100, n_days=5))
    views = world.views
    assert (views["timestamp"] // 86_400 == views["day"]).all()
    per_user = views.sort_values(["user", "order"])
    assert (per_user.groupby("user")["timestamp"].diff().dropna() > 0).all()


def test_no_target_is_in_its_own_history(small_dataset):
    for split in ("valid", "test"):
        history, targets = small_dataset.history(split), small_dataset.targets(split)
        for user in range(small_dataset.n_users):
            assert not np.isin(targets.row(user), history.row(user)).any()


def test_tiny_dataset_fixture_is_a_prepared_folder(tiny_dataset):
    metadata = json.loads((tiny_dataset / "metadata.json").read_text())
    assert metadata["source"] == "synthetic" and metadata["statistics"]["valid_users"] > 0
    dataset = load_dataset(tiny_dataset)
    assert dataset.ground_truth is not None
    assert dataset.train_history.lengths.min() >= 4


def test_default_world_has_the_documented_size():
    """The defaults the book uses: about 2,000 users with histories of 40-60 positives."""
    world = generate_world()
    positives = world.views[world.views["watch_ratio"] >= 0.5]
    train = positives[positives["day"] < 12]
    mean_history = len(train) / train["user"].nunique()
    assert 100_000 <= len(positives) <= 150_000 and 40 <= mean_history <= 60
