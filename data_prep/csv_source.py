"""Any table of (user, item, time) rows as a prepared dataset: CSV or parquet.

For logs such as MovieLens (`userId,movieId,rating,timestamp`) or MicroLens
(`user,item,timestamp`): the column names are options, time is Unix seconds, Unix
milliseconds or a date-time string, and days are UTC calendar days counted from the first.
Every row is a positive. An optional item file gives categories (a separator-joined list,
the first is the primary one) and durations.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from data_prep.core import FilterSettings, SourceTables, prepare
from data_prep.errors import DataError
from data_prep.io import (
    float_column,
    raise_on_first_bad,
    raw_id_column,
    read_table,
    require_file,
)
from data_prep.split import removal_record

logger = logging.getLogger(__name__)

SECONDS_PER_DAY = 86_400
TIME_UNITS = ("s", "ms", "datetime")
LONGEST_DAY_RANGE = 32_767  # day is stored as int16


def _seconds(table: pd.DataFrame, column: str, unit: str, path: Path) -> np.ndarray:
    """Unix seconds of each row from a seconds, milliseconds or date-time column."""
    if unit == "datetime":
        parsed = pd.to_datetime(table[column], utc=True, errors="coerce", format="mixed")
        raise_on_first_bad(table[column], parsed.isna().to_numpy(), path, column, "a date and time")
        elapsed = (parsed - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
        return elapsed.to_numpy(dtype=np.int64)
    values = float_column(table, column, path)
    if unit == "ms":
        values = values / 1000
    return np.floor(values).astype(np.int64)


def _days(seconds: np.ndarray, path: Path) -> tuple[np.ndarray, list[str]]:
    """UTC calendar day of each row counted from the first, and one label per day."""
    if len(seconds) == 0:
        raise DataError(f"{path} has no rows")
    calendar_day = seconds // SECONDS_PER_DAY
    first, last = calendar_day.min(), calendar_day.max()
    if last - first >= LONGEST_DAY_RANGE:
        raise DataError(
            f"{path}: the times span {last - first + 1} days, more than the 32,767 kept"
        )
    dates = pd.to_datetime(np.arange(first, last + 1) * SECONDS_PER_DAY, unit="s")
    return calendar_day - first, dates.strftime("%Y-%m-%d").tolist()


def _items(
    path: Path, item_col: str, category_col: str, separator: str, duration_col: str | None
) -> pd.DataFrame:
    """Raw id, category labels and duration of every item in the item file."""
    optional = [duration_col] if duration_col else []
    table = read_table(path, [item_col, category_col], optional=optional, as_text=[category_col])
    labels = table[category_col].fillna("").str.split(separator, regex=False)
    duration = np.full(len(table), np.nan)
    if duration_col and duration_col in table:
        duration = float_column(table, duration_col, path, allow_missing=True)
    return pd.DataFrame(
        {
            "item": raw_id_column(table, item_col, path),
            "categories": [[label.strip() for label in row if label.strip()] for row in labels],
            "duration": duration,
        }
    )


def load_csv(
    path: Path,
    columns: dict[str, str],
    time_unit: str,
    items: Path | None,
    item_options: dict,
) -> SourceTables:
    """Read the interaction file (and item file) into the shared normalised form."""
    table = read_table(path, [columns["user"], columns["item"], columns["time"]])
    seconds = _seconds(table, columns["time"], time_unit, path)
    day, labels = _days(seconds, path)
    interactions = pd.DataFrame(
        {
            "user": raw_id_column(table, columns["user"], path),
            "item": raw_id_column(table, columns["item"], path),
            "timestamp": seconds,
            "day": day,
            "order": np.arange(len(table)),
        }
    )
    every_row = removal_record(
        "positive_all_rows",
        "every row of the file is a positive (nothing removed)",
        interactions["user"].to_numpy(),
        interactions["item"].to_numpy(),
        np.ones(len(table), dtype=bool),
    )
    return SourceTables(
        interactions=interactions,
        items=_items(items, **item_options) if items is not None else None,
        day_labels=labels,
        filters=[every_row],
        item_file=str(items) if items is not None else "the item table",
    )


def prepare_csv(
    path: str | Path,
    out_dir: str | Path = "data",
    name: str | None = None,
    *,
    user_col: str = "user",
    item_col: str = "item",
    time_col: str = "timestamp",
    time_unit: str = "s",
    items: str | Path | None = None,
    items_item_col: str | None = None,
    category_col: str = "category",
    category_sep: str = "|",
    duration_col: str | None = None,
    min_active_days: int = 1,
    min_train_interactions: int = 4,
    max_history: int = 100,
    force: bool = False,
) -> Path:
    """Prepare one CSV or parquet log into `<out_dir>/<name>` (name: the file's stem); the path.

    `time_unit` is `s` or `ms` (Unix time) or `datetime` (any parseable string, UTC when it
    has no zone). `items` is an optional CSV or parquet file with the item id in column
    `items_item_col` (default: `item_col`), categories in `category_col` joined by
    `category_sep`, and an optional duration column (seconds).
    """
    if time_unit not in TIME_UNITS:
        raise ValueError(f"time_unit must be one of {TIME_UNITS}, got {time_unit!r}")
    settings = FilterSettings(min_active_days, min_train_interactions, max_history)
    path = require_file(path, "interaction file")
    items_path = require_file(items, "item file") if items is not None else None
    columns = {"user": user_col, "item": item_col, "time": time_col}
    item_options = {
        "item_col": items_item_col or item_col,
        "category_col": category_col,
        "separator": category_sep,
        "duration_col": duration_col,
    }
    parameters = {"columns": columns, "time_unit": time_unit}
    if items_path is not None:
        parameters["item_file_columns"] = item_options
    return prepare(
        source="csv",
        name=name or path.name.split(".")[0],
        out_dir=out_dir,
        parameters=parameters,
        input_files=[path] if items_path is None else [path, items_path],
        settings=settings,
        load=lambda: load_csv(path, columns, time_unit, items_path, item_options),
        force=force,
    )
