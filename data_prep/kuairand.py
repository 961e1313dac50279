"""KuaiRand (Kuaishou) logs as a prepared dataset: `log_standard_*.csv[.gz]` plus
`video_features_basic_*.csv`.

Days come from the log's `date` column (yyyymmdd, Beijing time), order within a user from
`time_ms` (Unix milliseconds) and then the file order; categories from the features file's
`tag` column (comma-separated first-level tag ids, the first is the primary one).
KuaiRand is distributed under CC BY-SA 4.0 (Chongming Gao et al., "KuaiRand: An Unbiased
Sequential Recommendation Dataset with Randomly Exposed Videos", CIKM 2022).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from data_prep.core import FilterSettings, SourceTables, prepare
from data_prep.errors import DataError
from data_prep.io import float_column, integer_column, raw_id_column, read_table, require_file
from data_prep.split import removal_record

logger = logging.getLogger(__name__)

# NOTE: the spec's WeChat threshold is 4 active training days. On the two-week KuaiRand slice
# (12 training days, clicks as positives) 4 days keeps 6,372 users (1,794 with validation
# targets), 2 days keeps 8,805 (2,286), and no day threshold at all 8,846: the slice is sparse,
# and 4 days would discard more than a quarter of the users who have the 4 training clicks
# needed anyway. 2 still asks for a history spread over more than one day. (The authors' run on
# this slice scored about 2,300 validation users, spec section 6, in line with 1 or 2 days.)
KUAIRAND_MIN_ACTIVE_DAYS = 2
LICENSE = (
    "KuaiRand, CC BY-SA 4.0: Chongming Gao et al., 'KuaiRand: An Unbiased Sequential "
    "Recommendation Dataset with Randomly Exposed Videos', CIKM 2022"
)
LOG_PATTERNS = ("log_standard_*.csv", "log_standard_*.csv.gz")
FEATURE_PATTERNS = ("video_features_basic_*.csv", "video_features_basic_*.csv.gz")


@dataclass(frozen=True)
class PositiveRule:
    """Which logged rows count as positives."""

    kind: str  # "click", "long_view" or "watch_ratio"
    threshold: float = 0.0  # for watch_ratio: play_time_ms / duration_ms must reach it

    @classmethod
    def parse(cls, rule: str) -> PositiveRule:
        if rule in ("click", "long_view"):
            return cls(rule)
        kind, _, value = rule.partition(":")
        if kind == "watch_ratio":
            try:
                return cls(kind, float(value))
            except ValueError:
                pass
        raise ValueError(
            f"positive rule {rule!r} is not one of 'click', 'long_view', 'watch_ratio:X' "
            "(X a number such as 0.8)"
        )

    @property
    def columns(self) -> tuple[str, ...]:
        return {
            "click": ("is_click",),
            "long_view": ("long_view",),
            "watch_ratio": ("play_time_ms", "duration_ms"),
        }[self.kind]

    def describe(self) -> str:
        if self.kind == "watch_ratio":
            return f"rows with play_time_ms / duration_ms below {self.threshold} are not positives"
        return f"rows without {self.columns[0]} == 1 are not positives"


def _glob(folder: Path, patterns: Sequence[str]) -> list[Path]:
    return sorted({path for pattern in patterns for path in folder.glob(pattern)})


def find_files(
    data: str | Path | Sequence[str | Path], features: str | Path | None = None
) -> tuple[list[Path], Path]:
    """The log files and the features file: from a folder (the release's root, whose files
    sit in `data/`, or that `data/` folder itself), or explicit log files."""
    if isinstance(data, str | Path) and Path(data).is_dir():
        folder = Path(data)
        if not _glob(folder, LOG_PATTERNS) and (folder / "data").is_dir():
            folder = folder / "data"  # the official release keeps its files in data/
        logs = _glob(folder, LOG_PATTERNS)
        if not logs:
            raise DataError(f"no log_standard_*.csv or .csv.gz files in {folder}")
    else:
        paths = [data] if isinstance(data, str | Path) else list(data)
        if not paths:
            raise DataError("no KuaiRand log files given")
        logs = [require_file(path, "KuaiRand log file") for path in paths]
        folder = logs[0].parent
    if features is None:
        found = _glob(folder, FEATURE_PATTERNS)
        if not found:
            raise DataError(f"no video_features_basic_*.csv file in {folder}; pass features=")
        features = found[0]
    return logs, require_file(features, "KuaiRand video features file")


def _read_log(path: Path, file_index: int, rule: PositiveRule) -> pd.DataFrame:
    required = ["user_id", "video_id", "date", "time_ms", *rule.columns]
    table = read_table(path, required, optional=["duration_ms"])
    columns = {
        "user": raw_id_column(table, "user_id", path),
        "item": raw_id_column(table, "video_id", path),
        "date": integer_column(table, "date", path),
        "time_ms": integer_column(table, "time_ms", path),
        "file": np.full(len(table), file_index),
        "row": np.arange(len(table)),
    }
    if rule.kind == "watch_ratio":
        play = float_column(table, "play_time_ms", path)
        duration = float_column(table, "duration_ms", path)
        with np.errstate(divide="ignore", invalid="ignore"):
            # A zero duration gives no ratio: such rows are not positives.
            columns["positive"] = (duration > 0) & (play / duration >= rule.threshold)
    else:
        columns["positive"] = integer_column(table, rule.columns[0], path) == 1
    if "duration_ms" in table:
        columns["duration_ms"] = float_column(table, "duration_ms", path, allow_missing=True)
    return pd.DataFrame(columns)


def _days(log: pd.DataFrame, paths: list[Path]) -> tuple[np.ndarray, list[str]]:
    """Day index of each row from `date` (yyyymmdd), and one label per day."""
    dates = pd.to_datetime(log["date"].astype("str"), format="%Y%m%d", errors="coerce")
    bad = np.flatnonzero(dates.isna().to_numpy())
    if len(bad):
        row = log.iloc[bad[0]]
        raise DataError(
            f"{paths[row['file']]}, line {row['row'] + 2}: column 'date' has value "
            f"{row['date']!r}, expected a date as yyyymmdd"
        )
    first = dates.min()
    day = ((dates - first) // pd.Timedelta(days=1)).to_numpy(dtype=np.int64)
    labels = pd.date_range(first, dates.max(), freq="D").strftime("%Y-%m-%d").tolist()
    return day, labels


def _items(path: Path, log: pd.DataFrame) -> pd.DataFrame:
    """Raw id, tag labels and duration (seconds) of every video in the features file."""
    table = read_table(path, ["video_id", "tag"], optional=["video_duration"], as_text=["tag"])
    tags = table["tag"].fillna("").str.split(",")
    labels = [[tag.strip() for tag in row if tag.strip()] for row in tags]
    items = pd.DataFrame({"item": raw_id_column(table, "video_id", path), "categories": labels})
    duration = np.full(len(table), np.nan)
    if "video_duration" in table:
        duration = float_column(table, "video_duration", path, allow_missing=True) / 1000
    if "duration_ms" in log:
        # Where the features file has no duration: the log's first non-zero duration_ms.
        logged = log.loc[log["duration_ms"] > 0].groupby("item")["duration_ms"].first() / 1000
        fallback = logged.reindex(items["item"]).to_numpy()
        duration = np.where(np.isnan(duration), fallback, duration)
    items["duration"] = duration
    return items


def load_kuairand(logs: list[Path], features: Path, rule: PositiveRule) -> SourceTables:
    """Read the logs and the features file into the shared normalised form."""
    log = pd.concat(
        [_read_log(path, index, rule) for index, path in enumerate(logs)], ignore_index=True
    )
    if log.empty:
        raise DataError(f"the log file(s) {', '.join(map(str, logs))} have no rows")
    day, labels = _days(log, logs)
    log["day"] = day
    # Order by time_ms, then file order; `order` keeps millisecond order among equal seconds.
    log = log.sort_values(["time_ms", "file", "row"], kind="stable", ignore_index=True)
    log["order"] = np.arange(len(log))
    log["timestamp"] = log["time_ms"] // 1000

    positive = log["positive"].to_numpy()
    record = removal_record(
        f"positive_{rule.kind}",
        rule.describe(),
        log["user"].to_numpy(),
        log["item"].to_numpy(),
        positive,
    )
    return SourceTables(
        interactions=log.loc[positive, ["user", "item", "timestamp", "day", "order"]],
        items=_items(features, log),
        day_labels=labels,
        filters=[record],
        item_file=str(features),
        notes={"license": LICENSE},
    )


def prepare_kuairand(
    data: str | Path | Sequence[str | Path],
    out_dir: str | Path = "data",
    name: str = "kuairand",
    *,
    features: str | Path | None = None,
    positive: str = "click",
    min_active_days: int = KUAIRAND_MIN_ACTIVE_DAYS,
    min_train_interactions: int = 4,
    max_history: int = 100,
    force: bool = False,
) -> Path:
    """Prepare KuaiRand from a folder (or log files) into `<out_dir>/<name>`; the path.

    `positive` is `click` (is_click == 1), `long_view` (long_view == 1) or `watch_ratio:X`
    (play_time_ms / duration_ms >= X).
    """
    rule = PositiveRule.parse(positive)
    settings = FilterSettings(min_active_days, min_train_interactions, max_history)
    logs, features_file = find_files(data, features)
    return prepare(
        source="kuairand",
        name=name,
        out_dir=out_dir,
        parameters={"positive": positive},
        input_files=[*logs, features_file],
        settings=settings,
        load=lambda: load_kuairand(logs, features_file, rule),
        force=force,
    )
