"""Helpers for the book's chapters, so that notebook cells hold only what a chapter is about.

Preparing the dataset a chapter reads, recording a chapter's key numbers as JSON for the tests
and later chapters, showing the package's own source next to an equation, and the few figure
conventions several chapters share.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import tempfile
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

DATASETS = ("synthetic", "kuairand", "wechat")
REPO_ROOT = Path(__file__).resolve().parent.parent


# --- the prepared dataset ------------------------------------------------------------------


def prepare_dataset(
    dataset: str,
    data_root: str = "",
    data_dir: str | Path = "data",
    synthetic_users: int = 2000,
    synthetic_items: int = 1500,
    synthetic_categories: int = 12,
    synthetic_days: int = 14,
    seed: int = 0,
) -> Path:
    """Prepare `dataset` under `data_dir/<dataset>` (a no-op when it is already there).

    "synthetic" builds the embedded world with the given sizes; "kuairand" and "wechat" read
    the raw files in `data_root`. Returns the prepared folder, which `cmi.data.load_dataset`
    reads.
    """
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
    if dataset != "synthetic":
        if not data_root:
            raise ValueError(
                f"dataset={dataset!r} needs the parameter data_root: the folder of the raw "
                f"{dataset} files (for example ../shared/data/KuaiRand-Pure/data)"
            )
        if not Path(data_root).is_dir():
            raise ValueError(f"data_root={data_root!r} is not a folder (dataset={dataset!r})")

    # Imported here: the other helpers of this module do not need the data preparation code.
    if dataset == "synthetic":
        from data_prep.synthetic import prepare_synthetic

        return Path(
            prepare_synthetic(
                data_dir,
                "synthetic",
                seed=seed,
                n_users=synthetic_users,
                n_items=synthetic_items,
                n_categories=synthetic_categories,
                n_days=synthetic_days,
            )
        )
    if dataset == "kuairand":
        from data_prep.kuairand import prepare_kuairand

        return Path(prepare_kuairand(data_root, data_dir, "kuairand"))
    from data_prep.wechat import prepare_wechat

    return Path(prepare_wechat(data_root, data_dir, "wechat"))


# --- what the data chapter tabulates -------------------------------------------------------

SEGMENTS = ("training", "validation", "test")


def day_segments(days: np.ndarray, n_days: int) -> np.ndarray:
    """The split each day index belongs to: the last day is test, the one before validation."""
    days = np.asarray(days)
    return np.select([days == n_days - 1, days == n_days - 2], ["test", "validation"], "training")


def filters_table(metadata: Mapping[str, Any]) -> pd.DataFrame:
    """metadata["filters"] as a table, one row per filter in the order they were applied."""
    table = pd.DataFrame(metadata["filters"])
    columns = ["name", "rows_removed", "users_removed", "items_removed", "description"]
    return table[columns].set_index("name")


def statistics_table(metadata: Mapping[str, Any]) -> pd.DataFrame:
    """metadata["statistics"] as a one-column table of text: integers with thousands separators,
    other numbers to four significant digits."""
    shown = {
        name: f"{value:,}" if isinstance(value, int) else f"{value:.4g}"
        for name, value in metadata["statistics"].items()
    }
    return pd.Series(shown, name="value").rename_axis("statistic").to_frame()


def _pairs(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """One (user, item) row per element of a list column of split.parquet."""
    exploded = frame[["user", column]].explode(column).dropna()
    exploded = exploded.rename(columns={column: "item"}).astype({"item": np.int64})
    return exploded.reset_index(drop=True)


def target_accounting(folder: str | Path) -> pd.DataFrame:
    """Where each target day's positives go: repeats, items already in the history, targets.

    For the validation and the test day: the positives of the day (after the filters), those
    that repeat an item earlier the same day, the distinct items the user already has in the
    history of that day (training days; for the test day also the validation day), and the
    targets that remain. `positives = repeats + already in history + targets` holds by
    construction of split.parquet, and the function checks it.
    """
    split = pd.read_parquet(Path(folder) / "split.parquet")
    histories = {
        "validation": _pairs(split, "train_history"),
        "test": pd.concat([_pairs(split, "train_history"), _pairs(split, "valid_day_items")]),
    }
    columns = {
        "validation": ("valid_targets_all", "valid_targets"),
        "test": ("test_targets_all", "test_targets"),
    }
    rows = {}
    for segment, (all_column, target_column) in columns.items():
        day = _pairs(split, all_column)
        distinct = day.drop_duplicates(["user", "item"])
        seen = distinct.merge(
            histories[segment][["user", "item"]].drop_duplicates(), on=["user", "item"]
        )
        targets = split[target_column].map(len)
        row = {
            "users with a positive that day": int(day["user"].nunique()),
            "positives on the day": len(day),
            "repeats within the day": len(day) - len(distinct),
            "already in the history": len(seen),
            "targets": int(targets.sum()),
            "users with a target": int((targets > 0).sum()),
        }
        accounted = row["repeats within the day"] + row["already in the history"] + row["targets"]
        if accounted != row["positives on the day"]:
            raise ValueError(
                f"{folder}/split.parquet: the {segment} day has {row['positives on the day']} "
                f"positives but repeats + history + targets = {accounted}"
            )
        rows[segment] = row
    return pd.DataFrame(rows)


def interest_concentration(
    interactions: pd.DataFrame, ground_truth: Mapping[str, np.ndarray], n_train_days: int
) -> pd.DataFrame:
    """Per user of a synthetic world: how much of the training history lies in their interests.

    A user "holds" category c when their true interest weight in c is positive on some day.
    `share_in_interests` is the fraction of the user's training positives whose item's true
    category they hold; `share_by_popularity` is the fraction that picking items by global
    popularity alone (the world's exploration) would put there, for comparison.
    """
    item_category = np.asarray(ground_truth["item_category"])
    held = np.asarray(ground_truth["user_interest"]).max(axis=1) > 0  # (U, D, C) -> (U, C)
    popularity = np.asarray(ground_truth["item_popularity"], dtype=float)
    category_popularity = np.bincount(
        item_category[1:], weights=popularity[1:], minlength=held.shape[1]
    )
    training = interactions[interactions["day"] < n_train_days]
    users = training["user"].to_numpy()
    categories = item_category[training["item"].to_numpy()]
    in_interest = held[users, categories]
    per_user = pd.DataFrame({"user": users, "category": categories, "in_interest": in_interest})
    grouped = per_user.groupby("user")
    table = pd.DataFrame(
        {
            "interests_held": held.sum(axis=1),
            "share_by_popularity": held @ category_popularity / category_popularity.sum(),
        }
    )
    table["share_in_interests"] = grouped["in_interest"].mean()
    table["categories_in_history"] = grouped["category"].nunique()
    table["training_positives"] = grouped.size()
    return table.rename_axis("user").dropna()


# --- results that tests and later chapters read --------------------------------------------


def _to_json(value: Any) -> Any:
    """Plain JSON types for numpy scalars and arrays, tensors, paths, tuples and containers."""
    if isinstance(value, Mapping):
        return {str(key): _to_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_to_json(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # numpy arrays and torch tensors
        return _to_json(value.tolist())
    return value


def record_results(results_dir: str | Path, chapter: str, results: Mapping[str, Any]) -> Path:
    """Write `results` to `<results_dir>/<chapter>.json` atomically; return the file.

    Keys are sorted; numpy scalars and arrays become JSON numbers and lists. The file is
    written to a temporary name in the same folder and then renamed over the old one, so a
    reader never sees half a file.
    """
    folder = Path(results_dir)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{chapter}.json"
    text = json.dumps(_to_json(results), sort_keys=True, indent=2, allow_nan=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{chapter}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(text + "\n")
        os.chmod(temporary, 0o644)  # mkstemp creates the file readable by its owner only
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    logger.info("recorded %d results of %s in %s", len(results), chapter, target)
    return target


def load_results(results_dir: str | Path, chapter: str) -> dict[str, Any]:
    """The results a chapter recorded with `record_results`."""
    path = Path(results_dir) / f"{chapter}.json"
    if not path.exists():
        raise FileNotFoundError(
            f"no results for chapter {chapter!r}: {path} does not exist; execute the "
            f"{chapter} notebook first (python -m cmi.book --only {chapter})"
        )
    return json.loads(path.read_text())


# --- showing the package's code --------------------------------------------------------------


def _source_slice(obj: Any, start: str | None, stop: str | None) -> tuple[str, int, int]:
    """The sliced, dedented source of `obj` and the file's line numbers of its first and last
    lines."""
    lines, first_line_number = inspect.getsourcelines(obj)
    lines = [line.rstrip("\n") for line in lines]
    first, last = 0, len(lines)
    name = getattr(obj, "__qualname__", repr(obj))
    if start is not None:
        found = [i for i, line in enumerate(lines) if start in line]
        if not found:
            raise ValueError(f"the source of {name} has no line containing {start!r}")
        first = found[0]
    if stop is not None:
        found = [i for i, line in enumerate(lines) if i > first and stop in line]
        if not found:
            raise ValueError(
                f"the source of {name} has no line containing {stop!r} after {start!r}"
            )
        last = found[0]
    while last > first + 1 and not lines[last - 1].strip():
        last -= 1  # no trailing blank lines
    text = textwrap.dedent("\n".join(lines[first:last]))
    return text, first_line_number + first, first_line_number + last - 1


def source_lines(obj: Any, start: str | None = None, stop: str | None = None) -> str:
    """The source of a function, method or class, dedented, optionally only a slice of it.

    The slice runs from the first line containing `start` up to, not including, the first
    later line containing `stop` (to the end when `stop` is None).
    """
    return _source_slice(obj, start, stop)[0]


def show_source(obj: Any, start: str | None = None, stop: str | None = None) -> Any:
    """`source_lines` as a Markdown code block headed by where the code lives."""
    from IPython.display import Markdown

    code, first, last = _source_slice(obj, start, stop)
    path = Path(inspect.getsourcefile(obj)).resolve()
    try:
        shown_path = path.relative_to(REPO_ROOT)
    except ValueError:
        shown_path = path
    name = f"{obj.__module__}.{getattr(obj, '__qualname__', obj.__name__)}"
    return Markdown(f"`{name}`, `{shown_path}` lines {first}-{last}:\n\n```python\n{code}\n```")


# --- figures -------------------------------------------------------------------------------


def use_book_style() -> None:
    """The figure style of every chapter: a white grid, readable labels, a modest size."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    plt.rcParams.update({"figure.figsize": (7.0, 3.6), "figure.dpi": 100, "savefig.dpi": 100})
