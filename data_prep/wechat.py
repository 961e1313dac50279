"""WeChat Big Data Challenge 2021 (WeChat Channels) as a prepared dataset: the paper's data.

Reads `user_action.csv` (userid, feedid, date_, play, the action flags, ...) and
`feed_info.csv` (feedid, videoplayseconds, manual_tag_list, ...), by column name. The log
has days (`date_`) but no time of day, so events are ordered by their row order within the
day. Categories come from `manual_tag_list` (semicolon-separated tag ids; the first is the
primary one).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from data_prep.core import FilterSettings, SourceTables, prepare
from data_prep.errors import DataError
from data_prep.io import float_column, integer_column, raw_id_column, read_table, require_file
from data_prep.split import removal_record

logger = logging.getLogger(__name__)

SECONDS_PER_DAY = 86_400
ACTION_COLUMNS = (
    "read_comment",
    "comment",
    "like",
    "click_avatar",
    "forward",
    "follow",
    "favorite",
)
# NOTE: the paper does not say which WeChat events count as positives; playing at least half
# of the video is this study's default, and `any_action` is offered beside it.
DEFAULT_POSITIVE = "play_ratio:0.5"


@dataclass(frozen=True)
class PositiveRule:
    """Which actions count as positives."""

    kind: str  # "play_ratio" or "any_action"
    threshold: float = 0.0  # for play_ratio: play (ms) >= threshold * videoplayseconds * 1000

    @classmethod
    def parse(cls, rule: str) -> PositiveRule:
        if rule == "any_action":
            return cls(rule)
        kind, _, value = rule.partition(":")
        if kind == "play_ratio":
            try:
                return cls(kind, float(value))
            except ValueError:
                pass
        raise ValueError(
            f"positive rule {rule!r} is not one of 'play_ratio:X' (X a number such as 0.5) "
            "or 'any_action'"
        )

    @property
    def columns(self) -> tuple[str, ...]:
        return ("play",) if self.kind == "play_ratio" else ACTION_COLUMNS

    def describe(self) -> str:
        if self.kind == "play_ratio":
            return (
                f"actions with play below {self.threshold} x videoplayseconds (or whose feed "
                "has no duration) are not positives"
            )
        return f"actions with none of {', '.join(ACTION_COLUMNS)} are not positives"


def _feeds(path: Path) -> pd.DataFrame:
    """Raw id, tag labels and duration (seconds) of every feed."""
    table = read_table(
        path, ["feedid", "videoplayseconds", "manual_tag_list"], as_text=["manual_tag_list"]
    )
    tags = table["manual_tag_list"].fillna("").str.split(";")
    return pd.DataFrame(
        {
            "item": raw_id_column(table, "feedid", path),
            "categories": [[tag.strip() for tag in row if tag.strip()] for row in tags],
            "duration": float_column(table, "videoplayseconds", path, allow_missing=True),
        }
    )


def _timestamps(day: np.ndarray) -> np.ndarray:
    """Seconds from the first day: the day's start plus the row's rank within its day.

    NOTE: a day with more than 86,400 rows (the real log has about 500,000 a day) would spill
    into the next day, so there the rank is scaled into the day; ties that this creates are
    resolved by file order, which `order` keeps.
    """
    rank = pd.Series(day).groupby(day).cumcount().to_numpy()
    per_day = np.bincount(day)[day]
    scaled = np.where(per_day > SECONDS_PER_DAY, rank * SECONDS_PER_DAY // per_day, rank)
    return day * SECONDS_PER_DAY + scaled


def _positive(
    actions: pd.DataFrame, feed: np.ndarray, feeds: pd.DataFrame, rule: PositiveRule, path: Path
) -> np.ndarray:
    """Which action rows are positives; `feed` is each row's raw feed id."""
    if rule.kind == "any_action":
        flags = [integer_column(actions, column, path) > 0 for column in ACTION_COLUMNS]
        return np.logical_or.reduce(flags)
    play = float_column(actions, "play", path)
    seconds = feeds.drop_duplicates("item").set_index("item")["duration"]
    duration = seconds.reindex(feed).to_numpy()
    with np.errstate(invalid="ignore"):
        return play >= rule.threshold * duration * 1000


def load_wechat(user_action: Path, feed_info: Path, rule: PositiveRule) -> SourceTables:
    """Read the two files into the shared normalised form."""
    actions = read_table(user_action, ["userid", "feedid", "date_", *rule.columns])
    feeds = _feeds(feed_info)
    date = integer_column(actions, "date_", user_action)
    if len(date) == 0:
        raise DataError(f"{user_action} has no rows")
    day = date - date.min()
    labels = [f"date_ {value}" for value in range(date.min(), date.max() + 1)]

    interactions = pd.DataFrame(
        {
            "user": raw_id_column(actions, "userid", user_action),
            "item": raw_id_column(actions, "feedid", user_action),
            "timestamp": _timestamps(day),
            "day": day,
            "order": np.arange(len(actions)),
        }
    )
    positive = _positive(actions, interactions["item"].to_numpy(), feeds, rule, user_action)
    record = removal_record(
        f"positive_{rule.kind}",
        rule.describe(),
        interactions["user"].to_numpy(),
        interactions["item"].to_numpy(),
        positive,
    )
    return SourceTables(
        interactions=interactions[positive],
        items=feeds,
        day_labels=labels,
        filters=[record],
        item_file=str(feed_info),
    )


def prepare_wechat(
    data: str | Path,
    out_dir: str | Path = "data",
    name: str = "wechat",
    *,
    positive: str = DEFAULT_POSITIVE,
    min_active_days: int = 4,
    min_train_interactions: int = 4,
    max_history: int = 100,
    force: bool = False,
) -> Path:
    """Prepare the WeChat files in folder `data` into `<out_dir>/<name>`; the path.

    `positive` is `play_ratio:X` (play >= X times the video length) or `any_action` (any of
    read_comment, comment, like, click_avatar, forward, follow, favorite).
    """
    rule = PositiveRule.parse(positive)
    settings = FilterSettings(min_active_days, min_train_interactions, max_history)
    folder = Path(data)
    user_action = require_file(folder / "user_action.csv", "WeChat action log")
    feed_info = require_file(folder / "feed_info.csv", "WeChat feed table")
    return prepare(
        source="wechat",
        name=name,
        out_dir=out_dir,
        parameters={"positive": positive},
        input_files=[user_action, feed_info],
        settings=settings,
        load=lambda: load_wechat(user_action, feed_info, rule),
        force=force,
    )
