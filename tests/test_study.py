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


# --- training grids, summaries and paired tests ----------------------------------------------

GRID_BUDGET = {"max_steps": 4, "eval_every": 2, "batch_size": 16, "max_len": 20}


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models train fastest on one thread, and a busy machine cannot stall them."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def prepared(tiny_dataset):
    from cmi.data import load_dataset

    return load_dataset(tiny_dataset)


@pytest.fixture(scope="module")
def grid(prepared, tmp_path_factory, one_thread):
    """Two models and a CMI variant, two seeds each, a few steps: (runs, base config)."""
    base = study.training_config(
        "cmi", prepared.path, run_root=tmp_path_factory.mktemp("runs"), device="cpu", **GRID_BUDGET
    )
    settings = {
        "cmi": {},
        "cmi without L_cl": {"lambda_cl": 0.0},
        "pop": {"model": "pop"},
    }
    return study.train_grid(settings, [0, 1], base, prepared), base


def test_training_config_gives_one_dictionary_per_model_and_budget(tmp_path):
    first = study.training_config("cmi", tmp_path, run_root="r", device="cpu", **GRID_BUDGET)
    again = study.training_config("cmi", tmp_path, run_root="r", device="cpu", **GRID_BUDGET)
    changed = study.training_config(
        "cmi", tmp_path, run_root="r", device="cpu", **GRID_BUDGET, lambda_cl=0.0
    )
    assert first == again
    assert first["progress"] is False and first["dataset"] == str(tmp_path)
    assert {key for key in changed if changed[key] != first.get(key)} == {"lambda_cl"}


def test_train_grid_has_a_row_per_setting_and_seed_and_reuses_runs(grid, prepared):
    runs, base = grid
    assert runs[["setting", "seed"]].values.tolist() == [
        ["cmi", 0],
        ["cmi", 1],
        ["cmi without L_cl", 0],
        ["cmi without L_cl", 1],
        ["pop", 0],
        ["pop", 1],
    ]
    assert runs["model"].tolist() == ["cmi"] * 4 + ["pop"] * 2
    assert runs["run_dir"].nunique() == 6  # seeds and settings give distinct runs
    for run in runs.itertuples():
        saved = json.loads((Path(run.run_dir) / "result.json").read_text())
        assert runs.loc[run.Index, "recall@50"] == saved["test"]["recall@50"]
        assert runs.loc[run.Index, "valid_recall@50"] == saved["valid"]["recall@50"]
    again = study.train_grid({"cmi": {}}, [1], base, prepared)
    assert bool(again["reused"].all())
    assert again["run_dir"].tolist() == runs.loc[runs["setting"] == "cmi", "run_dir"].tolist()[1:]
    with pytest.raises(ValueError, match="at least one seed"):
        study.train_grid({"cmi": {}}, [], base, prepared)


def test_summarise_and_interval_table_follow_mean_and_interval(grid):
    from cmi.stats import mean_and_interval

    runs, _ = grid
    summary = study.summarise(runs, ("recall@50", "ndcg@10"))
    assert summary.index.tolist() == ["cmi", "cmi without L_cl", "pop"]  # order of appearance
    values = runs.loc[runs["setting"] == "cmi", "recall@50"]
    interval = mean_and_interval(values)
    assert summary.loc["cmi", "recall@50_mean"] == pytest.approx(values.mean())
    assert summary.loc["cmi", "recall@50_half_width"] == pytest.approx(interval.half_width)
    table = study.interval_table(summary, ("recall@50",), digits=4)
    assert table.loc["cmi", "recall@50"] == (f"{interval.mean:.4f} ± {interval.half_width:.4f}")
    assert table.loc["pop", "recall@50"].endswith("± 0.0000")  # Pop ignores the seed
    one_run = study.summarise(runs[runs["seed"] == 0], ("recall@50",))
    assert "±" not in study.interval_table(one_run, ("recall@50",)).loc["cmi", "recall@50"]


def test_paired_tests_average_each_user_over_seeds(grid):
    from cmi.stats import paired_test

    runs, _ = grid
    tests = study.paired_tests(runs, "cmi", metric="recall@50", split="test")
    assert tests.index.tolist() == ["cmi without L_cl", "pop"]

    def per_user(setting):
        frames = [
            pd.read_parquet(Path(run_dir) / "per_user_test.parquet").set_index("user")["recall@50"]
            for run_dir in runs.loc[runs["setting"] == setting, "run_dir"]
        ]
        return sum(frames) / len(frames)

    expected = paired_test(per_user("cmi"), per_user("pop"))
    assert tests.loc["pop", "mean_difference"] == pytest.approx(expected.mean_difference)
    assert tests.loc["pop", "t_pvalue"] == pytest.approx(expected.t_pvalue)
    assert tests.loc["pop", "n"] == expected.n
    values = study.per_user_values(runs, "recall@50")
    assert values.shape[1] == len(runs) and values.columns.names == ["setting", "seed"]
    with pytest.raises(ValueError, match="reference setting 'nope'"):
        study.paired_tests(runs, "nope")


def test_run_histories_stack_the_trained_runs(grid):
    runs, _ = grid
    histories = study.run_histories(runs)
    assert set(histories["setting"]) == {"cmi", "cmi without L_cl"}  # Pop has no history
    assert sorted(histories["step"].unique().tolist()) == [2, 4]
    assert "loss_cl" in histories.columns
    assert histories.loc[histories["setting"] == "cmi without L_cl", "loss_cl"].isna().all()


# --- trained models and their interests ------------------------------------------------------


def test_load_model_restores_the_best_checkpoint(grid, prepared):
    from cmi.evaluate import evaluate

    runs, _ = grid
    for run in runs[runs["seed"] == 0].itertuples():
        model = study.load_model(run.run_dir, prepared)
        assert not model.training
        result = evaluate(model, prepared, split="test", max_len=GRID_BUDGET["max_len"])
        for metric in ("recall@50", "ndcg@10", "hit_rate@20"):
            assert result.metrics[metric] == pytest.approx(runs.loc[run.Index, metric], abs=1e-9)
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        study.load_model(Path(runs.loc[0, "run_dir"]).parent, prepared)


def test_item_routing_is_the_routing_of_a_one_item_history(grid, prepared):
    runs, _ = grid
    model = study.load_model(runs.loc[0, "run_dir"], prepared)
    routing = study.item_routing(model)
    assert routing.shape == (prepared.n_items + 1, model.n_interests)
    assert np.allclose(routing[1:].sum(axis=1), 1.0)
    items = torch.tensor([[5], [17]])
    with torch.no_grad():
        by_model = model.routing(items)[:, 0].numpy()  # (2, K)
    assert np.allclose(routing[[5, 17]], by_model, atol=1e-6)


def test_interest_top_items_match_a_brute_force_ranking(grid, prepared):
    runs, _ = grid
    model = study.load_model(runs.loc[0, "run_dir"], prepared)
    history = prepared.history("test").row(3)
    view = study.interest_top_items(model, history, k=10)

    with torch.no_grad():
        read = torch.from_numpy(history[-model.max_len :].astype(np.int64))[None, :]
        interests = model.interests(read)[0].numpy()  # (K, d)
        scores = interests @ model.item_vectors().numpy().T  # (K, N + 1)
    scores[:, 0] = -np.inf
    scores[:, history] = -np.inf
    for k in range(model.n_interests):
        assert np.allclose(view["scores"][k], np.sort(scores[k])[::-1][:10], atol=1e-6)
        assert not set(view["top"][k]) & set(history.tolist())
    best = scores.max(axis=0)
    assert np.allclose(best[view["merged"]], np.sort(best)[::-1][:10], atol=1e-6)
    assert np.allclose(scores[view["winner"], view["merged"]], best[view["merged"]])
    assert view["routing_mass"].sum() == pytest.approx(1.0)


def test_principal_axes_find_a_planted_direction():
    rng = np.random.default_rng(0)
    direction = np.array([3.0, -4.0, 0.0]) / 5.0
    points = rng.normal(size=(200, 1)) * 5.0 * direction + rng.normal(size=(200, 3)) * 0.1
    points = points + np.array([1.0, 2.0, 3.0])
    mean, axes = study.principal_axes(points)
    assert np.allclose(mean, points.mean(axis=0))
    assert axes.shape == (2, 3)
    assert np.allclose(axes @ axes.T, np.eye(2), atol=1e-10)
    assert abs(axes[0] @ direction) == pytest.approx(1.0, abs=1e-3)
    assert axes[0][np.abs(axes[0]).argmax()] > 0  # sign convention
    projected = (points - mean) @ axes.T
    assert projected[:, 0].var() > 100 * projected[:, 1].var()


def test_category_usage_and_effective_number():
    shares = study.category_usage(np.array([0, 0, 1, 3]), 4)
    assert shares.tolist() == [0.5, 0.25, 0.0, 0.25]
    weighted = study.category_usage(np.array([0, 1]), 2, weights=np.array([3.0, 1.0]))
    assert weighted.tolist() == [0.75, 0.25]
    assert study.effective_number(np.full(5, 0.2)) == pytest.approx(5.0)
    assert study.effective_number(np.array([1.0, 0.0, 0.0])) == pytest.approx(1.0)
    assert study.effective_number(shares) == pytest.approx(np.exp(1.5 * np.log(2)))


# --- the oracle ----------------------------------------------------------------------------------


def test_oracle_scores_are_the_ground_truth_probabilities(prepared):
    truth = prepared.ground_truth
    scorer = study.OracleScorer(prepared, "test")
    day = prepared.metadata["days"]["test_day"]
    users = scorer.order[:4]
    history = torch.from_numpy(prepared.history("test").padded(users, scorer.max_len))
    scores = (scorer.interests(history)[:, 0] @ scorer.item_vectors().T).numpy()  # (4, N + 1)

    category = truth["item_category"]
    for row, user in enumerate(users):
        for item in (1, 7, prepared.n_items):
            expected = (1 - truth["exploration"]) * truth["user_interest"][
                user, day, category[item]
            ] * truth["item_weight_in_category"][item] + truth["exploration"] * truth[
                "item_popularity"
            ][item]
            assert scores[row, item] == pytest.approx(expected, rel=1e-5)
    assert scores[:, 0].tolist() == [0.0] * 4
    wrong = torch.from_numpy(prepared.history("test").padded(users[:2], scorer.max_len))
    with pytest.raises(RuntimeError, match="unexpected order"):
        scorer.interests(wrong)  # users 0 and 1 again instead of the next ones


def test_oracle_evaluation_ranks_by_probability_with_history_masked(prepared):
    result = study.oracle_evaluation(prepared, "test", ks=(10,))
    truth = prepared.ground_truth
    day = prepared.metadata["days"]["test_day"]
    category = truth["item_category"]
    per_item = (1 - truth["exploration"]) * truth["item_weight_in_category"]
    history, targets = prepared.history("test"), prepared.targets("test")

    compared = 0
    for row, user in enumerate(result.per_user["user"]):
        probability = per_item * truth["user_interest"][user, day, np.maximum(category, 0)]
        probability = probability + truth["exploration"] * truth["item_popularity"]
        probability[0] = -np.inf
        probability[history.row(user)] = -np.inf
        ranked = np.sort(probability)[::-1]
        top = result.top_items[row, :10]
        assert np.allclose(probability[top], ranked[:10])  # the ten best, whatever the ties
        if ranked[9] > ranked[10]:  # no tie at the cut: recall is defined by the items
            wanted = set(targets.row(user).tolist())
            recall = len(wanted & set(top.tolist())) / len(wanted)
            assert result.per_user.loc[row, "recall@10"] == pytest.approx(recall)
            compared += 1
    assert compared > len(result.per_user) // 2
    with pytest.raises(ValueError, match="no ground truth"):
        study.OracleScorer(type("Real", (), {"ground_truth": None, "name": "kuairand"})(), "test")


# --- the ablation grid ---------------------------------------------------------------------------


def test_ablation_settings_keep_every_named_setting_in_both_grids():
    from cmi.config import TrainConfig

    reduced, full = study.ablation_settings("reduced"), study.ablation_settings("full")
    named = ["full CMI", "without L_cl", "without L_orth", "without L_uni"]
    named += ["without general interest", "K=1"]
    assert list(reduced)[:6] == named and list(full)[:6] == named
    assert set(reduced) < set(full)
    assert reduced["full CMI"] == {}
    defaults = TrainConfig()
    for name, overrides in full.items():
        config = TrainConfig.from_dict({"model": "cmi", **overrides})  # valid fields and values
        assert all(getattr(config, key) != getattr(defaults, key) for key in overrides), name
    assert len({json.dumps(o, sort_keys=True) for o in full.values()}) == len(full)
    with pytest.raises(ValueError, match="grid must be one of"):
        study.ablation_settings("tiny")


def test_sweep_points_put_full_cmi_at_the_default():
    settings = study.ablation_settings("full")
    assert study.sweep_points(settings, "n_interests") == {
        "K=1": 1.0,
        "K=2": 2.0,
        "K=4": 4.0,
        "K=16": 16.0,
        "full CMI": 8.0,
    }
    points = study.sweep_points(settings, "lambda_cl")
    assert points["without L_cl"] == 0.0 and points["full CMI"] == 0.05
    assert "without L_uni" not in study.sweep_points(settings, "lambda_orth")


# --- text and figures ----------------------------------------------------------------------------


def test_metric_columns_and_fmt():
    table = pd.DataFrame({"recall@10": [1], "ndcg@50": [2], "users": [3]})
    assert study.metric_columns(table).columns.tolist() == [
        ("Recall", "@10"),
        ("NDCG", "@50"),
        ("users", ""),
    ]
    assert study.fmt(0.12345) == "0.123"
    assert study.fmt(0.00002) == "2.0e-05"
    assert study.fmt(0.0) == "0.000"
    assert study.fmt(float("nan")) == "n/a"
    assert study.fmt(2.5, 1) == "2.5"


def test_plot_sweep_orders_points_and_draws_the_interval():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = pd.DataFrame(
        {
            "recall@50_mean": [0.3, 0.1, 0.2],
            "recall@50_lower": [0.25, 0.05, 0.15],
            "recall@50_upper": [0.35, 0.15, 0.25],
        },
        index=["b", "a", "c"],
    )
    fig, ax = plt.subplots()
    study.plot_sweep(ax, summary, {"b": 4.0, "a": 1.0, "c": 2.0}, log_x=True)
    assert ax.lines[0].get_xdata().tolist() == [1.0, 2.0, 4.0]
    assert ax.lines[0].get_ydata().tolist() == [0.1, 0.2, 0.3]
    assert len(ax.collections) == 1 and ax.get_xscale() == "log"
    plt.close(fig)
