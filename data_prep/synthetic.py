"""A seeded micro-video world with planted interests, the study's embedded default dataset.

Items belong to true categories, with Zipf-like popularity inside each category and
log-normal durations. Each user holds a few interests (categories with Dirichlet weights)
whose log-weights drift by a small random walk from day to day. On an active day a user
opens sessions; inside a session the interest is sticky (kept with probability
`persistence`, otherwise drawn afresh from the day's weights), and the item is drawn from
the chosen category by popularity, or, with probability `exploration`, from the whole
catalogue by popularity. Every view gets a watch ratio, higher for items in the user's
interests, and positives are views watched to at least `positive_threshold`.

A fresh draw comes from the day's weights and a kept interest was itself drawn from them, so
at every position of a session the interest has exactly the day's weights as its marginal,
and each view's item has the oracle probability of `ground_truth.npz` (see brief.md):
`(1 - exploration) * user_interest[u, d, category(i)] * item_weight_in_category[i] +
exploration * item_popularity[i]`. The persistence correlates neighbouring views without
changing that marginal. The oracle is the probability of a *view*; positives are the views
with a high watch ratio, which tilts them further toward in-interest items.

Generation is vectorised over all users, days, sessions and views at once, so a world of a
million interactions takes seconds.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from data_prep.core import FilterSettings, PreparedTables, SourceTables, prepare
from data_prep.split import removal_record

logger = logging.getLogger(__name__)

SECONDS_PER_DAY = 86_400
LONGEST_DURATION = 240.0  # seconds; with at most 30 views a session fits in its time slot
LONGEST_GAP = 60.0  # seconds between two views


@dataclass(frozen=True)
class SyntheticConfig:
    """Sizes and behaviour of the synthetic world; every field is recorded in metadata."""

    seed: int = 0  # seeds the one numpy Generator everything is drawn from
    n_users: int = 2000
    n_items: int = 1500
    n_categories: int = 12  # true categories
    n_days: int = 14  # the last two are the validation and test days
    min_interests: int = 2  # interests per user, drawn uniformly in [min, max]
    max_interests: int = 4
    interest_concentration: float = 1.0  # Dirichlet parameter of a user's interest weights
    interest_drift: float = 0.15  # std of the daily random-walk step of the log-weights
    popularity_exponent: float = 1.0  # Zipf exponent of popularity rank within a category
    active_day_probability: float = 0.8  # mean chance that a user is active on a day
    extra_sessions: float = 1.0  # mean sessions per active day beyond the first (Poisson)
    max_sessions: int = 6  # sessions per day at most
    extra_views: float = 3.0  # mean views per session beyond the first (Poisson)
    max_views: int = 30  # views per session at most
    persistence: float = 0.8  # chance that the next view keeps the session's interest
    exploration: float = 0.1  # chance that a view ignores interests (global popularity)
    duration_median: float = 20.0  # seconds; durations are log-normal, within [3, 240]
    duration_sigma: float = 0.8  # log-normal shape of durations
    watch_mean_in_interest: float = 0.62  # mean watch ratio of items in the user's interests
    watch_mean_outside: float = 0.28  # mean watch ratio of other items
    watch_concentration: float = 5.0  # Beta concentration of watch ratios (larger: less noise)
    positive_threshold: float = 0.5  # a view is positive when its watch ratio reaches this

    def __post_init__(self) -> None:
        for name in ("n_users", "n_items", "n_categories", "max_sessions", "max_views"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.n_days < 3:
            raise ValueError(f"n_days must be at least 3 (train, valid, test), got {self.n_days}")
        if not 1 <= self.min_interests <= self.max_interests <= self.n_categories:
            raise ValueError(
                "need 1 <= min_interests <= max_interests <= n_categories, got "
                f"{self.min_interests}, {self.max_interests}, {self.n_categories}"
            )
        if self.n_items < self.n_categories:
            raise ValueError(f"n_items ({self.n_items}) < n_categories ({self.n_categories})")
        if self.max_sessions > 6 or self.max_views > 30:
            # Longer days would not fit the session time slots (see _timestamps).
            raise ValueError("max_sessions must be <= 6 and max_views <= 30")
        for name in (
            "active_day_probability",
            "persistence",
            "exploration",
            "watch_mean_in_interest",
            "watch_mean_outside",
            "positive_threshold",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {getattr(self, name)}")


@dataclass(frozen=True)
class SyntheticWorld:
    """Every view of the world and its true structure, indexed by raw ids 0..U-1, 0..N-1."""

    views: pd.DataFrame  # user, item, timestamp, day, order, watch_ratio, in_interest
    item_category: np.ndarray  # (N,) true category
    item_weight_in_category: np.ndarray  # (N,) P(item | its category)
    item_popularity: np.ndarray  # (N,) P(item) under exploration
    item_duration: np.ndarray  # (N,) seconds
    user_interest: np.ndarray  # (U, D, C) day weights of each user's interests, rows sum to 1
    config: SyntheticConfig


def _beta(rng: np.random.Generator, mean: np.ndarray, concentration: float) -> np.ndarray:
    mean = np.clip(mean, 1e-3, 1 - 1e-3)
    return rng.beta(mean * concentration, (1 - mean) * concentration)


def _inverse_cdf(cumulative: np.ndarray, uniform: np.ndarray) -> np.ndarray:
    """Column drawn in each row: the first whose cumulative weight reaches `uniform`.

    (R, K) cumulative weights, last column 1 -> (R,) column index.
    """
    return np.minimum((cumulative < uniform[:, None]).sum(axis=1), cumulative.shape[1] - 1)


def _items(config: SyntheticConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """True categories, popularity and durations of the items."""
    n_items, n_categories = config.n_items, config.n_categories
    shares = rng.dirichlet(np.full(n_categories, 3.0))
    sizes = 1 + rng.multinomial(n_items - n_categories, shares)
    category = rng.permutation(np.repeat(np.arange(n_categories), sizes))

    # Popularity rank inside the category: a random order, Zipf weights 1 / (rank + 1)^a.
    order = np.lexsort((rng.random(n_items), category))
    rank = np.empty(n_items, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rank[order] = np.arange(n_items) - np.repeat(starts, sizes)
    raw_weight = (rank + 1.0) ** -config.popularity_exponent
    weight_in_category = raw_weight / np.bincount(category, raw_weight)[category]

    category_share = sizes / n_items
    duration = np.exp(
        np.log(config.duration_median) + config.duration_sigma * rng.normal(size=n_items)
    )
    return {
        "category": category,
        "weight_in_category": weight_in_category,
        "popularity": category_share[category] * weight_in_category,
        "duration": np.clip(duration, 3.0, LONGEST_DURATION),
        "category_share": category_share,
    }


def _interests(
    config: SyntheticConfig, rng: np.random.Generator, category_share: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each user's interest categories and their drifting day weights.

    Returns (U, M) categories (-1 past the user's count) and (U, D, M) weights, M = max_interests.
    """
    n_users, slots = config.n_users, config.max_interests
    counts = rng.integers(config.min_interests, config.max_interests + 1, size=n_users)
    # Categories without replacement, in proportion to their size (Gumbel top-k).
    keys = np.log(category_share)[None, :] + rng.gumbel(size=(n_users, config.n_categories))
    chosen = np.argsort(-keys, axis=1)[:, :slots]
    held = np.arange(slots)[None, :] < counts[:, None]
    categories = np.where(held, chosen, -1)

    start = rng.gamma(config.interest_concentration, size=(n_users, slots))
    steps = config.interest_drift * rng.normal(size=(n_users, config.n_days, slots))
    steps[:, 0, :] = 0.0
    log_weight = np.log(start)[:, None, :] + np.cumsum(steps, axis=1)  # (U, D, M)
    log_weight = np.where(held[:, None, :], log_weight, -np.inf)
    log_weight -= log_weight.max(axis=2, keepdims=True)
    weight = np.exp(log_weight)
    return categories, weight / weight.sum(axis=2, keepdims=True)


def _sessions(config: SyntheticConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One row per session: user, day, slot index within the day, sessions that day, length."""
    n_users, n_days = config.n_users, config.n_days
    mean = config.active_day_probability
    activity = rng.beta(4 * mean + 1e-9, 4 * (1 - mean) + 1e-9, size=n_users)
    session_rate = rng.gamma(2.0, config.extra_sessions / 2 + 1e-12, size=n_users)
    view_rate = rng.gamma(3.0, config.extra_views / 3 + 1e-12, size=n_users)

    user, day = np.nonzero(rng.random((n_users, n_days)) < activity[:, None])
    per_day = np.minimum(1 + rng.poisson(session_rate[user]), config.max_sessions)
    first = np.cumsum(per_day) - per_day
    session_user = np.repeat(user, per_day)
    slot = np.arange(per_day.sum()) - np.repeat(first, per_day)
    length = np.minimum(1 + rng.poisson(view_rate[session_user]), config.max_views)
    return {
        "user": session_user,
        "day": np.repeat(day, per_day),
        "slot": slot,
        "per_day": np.repeat(per_day, per_day),
        "length": length,
    }


def _view_interest_slots(
    sessions: dict, weight: np.ndarray, persistence: float, rng: np.random.Generator
) -> np.ndarray:
    """The interest slot of every view: a sticky Markov chain inside each session."""
    length = sessions["length"]
    n_views = int(length.sum())
    first = np.cumsum(length) - length
    position = np.arange(n_views) - np.repeat(first, length)
    fresh = (position == 0) | (rng.random(n_views) >= persistence)

    fresh_index = np.flatnonzero(fresh)
    session = np.repeat(np.arange(len(length)), length)[fresh_index]
    cumulative = np.cumsum(weight[sessions["user"][session], sessions["day"][session]], axis=1)
    cumulative[:, -1] = 1.0
    drawn = np.empty(n_views, dtype=np.int64)
    drawn[fresh_index] = _inverse_cdf(cumulative, 1.0 - rng.random(len(fresh_index)))
    # Each view takes the draw of the latest fresh view of its session (position 0 is fresh).
    latest_fresh = np.maximum.accumulate(np.where(fresh, np.arange(n_views), 0))
    return drawn[latest_fresh]


def _category_sampler(items: dict, n_categories: int) -> dict[str, np.ndarray]:
    """Items sorted by category with their cumulative weight offset by the category.

    Category c's items span the values (c, c + 1], the last one exactly c + 1, so one sorted
    search draws an item for every view at once.
    """
    by_category = np.lexsort((np.arange(len(items["category"])), items["category"]))
    sorted_category = items["category"][by_category]
    within = (
        pd.Series(items["weight_in_category"][by_category]).groupby(sorted_category).cumsum()
    ).to_numpy()
    first_of = np.searchsorted(sorted_category, np.arange(n_categories))
    last_of = np.searchsorted(sorted_category, np.arange(n_categories), side="right") - 1
    within = within / within[last_of][sorted_category]
    return {
        "items": by_category,
        "offsets": sorted_category + within,
        "first_of": first_of,
        "last_of": last_of,
    }


def _draw_items(
    category: np.ndarray, items: dict, config: SyntheticConfig, rng: np.random.Generator
) -> np.ndarray:
    """An item for each view: by popularity inside `category`, or globally when exploring."""
    n_views = len(category)
    sampler = _category_sampler(items, config.n_categories)
    position = np.searchsorted(sampler["offsets"], category + (1.0 - rng.random(n_views)))
    # Guards against rounding at a category's edge.
    position = np.clip(position, sampler["first_of"][category], sampler["last_of"][category])
    in_category = sampler["items"][position]

    popularity_cdf = np.cumsum(items["popularity"])
    popularity_cdf /= popularity_cdf[-1]
    explored = np.searchsorted(popularity_cdf, 1.0 - rng.random(n_views))
    explored = np.minimum(explored, len(popularity_cdf) - 1)
    return np.where(rng.random(n_views) < config.exploration, explored, in_category)


def _timestamps(sessions: dict, watch_seconds: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Seconds since world start: sessions in separate slots of the day, views in sequence."""
    length = sessions["length"]
    slot_seconds = SECONDS_PER_DAY / sessions["per_day"]
    start = (
        sessions["day"] * SECONDS_PER_DAY
        + sessions["slot"] * slot_seconds
        + rng.uniform(0.0, slot_seconds / 4)
    )
    step = watch_seconds + np.minimum(
        1.0 + rng.exponential(5.0, size=len(watch_seconds)), LONGEST_GAP
    )
    elapsed = np.cumsum(step) - step
    first = np.cumsum(length) - length
    elapsed -= np.repeat(elapsed[first], length)
    # A slot lasts >= 4 h (<= 6 sessions); a session starts in its first hour and lasts
    # <= 30 views * (240 s + 60 s) = 2.5 h, so it ends inside its slot and its day.
    return np.floor(np.repeat(start, length) + elapsed).astype(np.int64)


def generate_world(config: SyntheticConfig | None = None) -> SyntheticWorld:
    """Draw the whole world from `config.seed`: same config, same world."""
    config = config or SyntheticConfig()
    rng = np.random.default_rng(config.seed)
    items = _items(config, rng)
    user_categories, weight = _interests(config, rng, items["category_share"])
    sessions = _sessions(config, rng)

    slots = _view_interest_slots(sessions, weight, config.persistence, rng)
    user = np.repeat(sessions["user"], sessions["length"])
    day = np.repeat(sessions["day"], sessions["length"])
    item = _draw_items(user_categories[user, slots], items, config, rng)

    in_interest = (user_categories[user] == items["category"][item][:, None]).any(axis=1)
    watch_mean = np.where(in_interest, config.watch_mean_in_interest, config.watch_mean_outside)
    watch_ratio = _beta(rng, watch_mean, config.watch_concentration)
    timestamp = _timestamps(sessions, items["duration"][item] * watch_ratio, rng)

    user_interest = np.zeros((config.n_users, config.n_days, config.n_categories))
    held_user, held_slot = np.nonzero(user_categories >= 0)
    user_interest[held_user, :, user_categories[held_user, held_slot]] = weight[
        held_user, :, held_slot
    ]
    views = pd.DataFrame(
        {
            "user": user,
            "item": item,
            "timestamp": timestamp,
            "day": day,
            "order": np.arange(len(user)),
            "watch_ratio": watch_ratio,
            "in_interest": in_interest,
        }
    )
    return SyntheticWorld(
        views=views,
        item_category=items["category"],
        item_weight_in_category=items["weight_in_category"],
        item_popularity=items["popularity"],
        item_duration=items["duration"],
        user_interest=user_interest,
        config=config,
    )


def _source_tables(world: SyntheticWorld) -> SourceTables:
    views, config = world.views, world.config
    positive = (views["watch_ratio"] >= config.positive_threshold).to_numpy()
    record = removal_record(
        "positive_watch_ratio",
        f"views with a watch ratio below {config.positive_threshold} are not positives",
        views["user"].to_numpy(),
        views["item"].to_numpy(),
        positive,
    )
    items = pd.DataFrame(
        {
            "item": np.arange(config.n_items),
            "categories": [[str(category)] for category in world.item_category],
            "duration": world.item_duration,
        }
    )
    return SourceTables(
        interactions=views.loc[positive, ["user", "item", "timestamp", "day", "order"]],
        items=items,
        day_labels=[f"day {day}" for day in range(config.n_days)],
        filters=[record],
        category_names=[str(category) for category in range(config.n_categories)],
        item_file="the synthetic item table",
    )


def _ground_truth_file(world: SyntheticWorld, prepared: PreparedTables) -> dict:
    """ground_truth.npz in prepared ids (item 0 is padding), as an extra-file writer."""
    items = prepared.item_raw_ids.astype(np.int64)
    arrays = {
        "item_category": np.concatenate([[-1], world.item_category[items]]),
        "item_weight_in_category": np.concatenate([[0.0], world.item_weight_in_category[items]]),
        "user_interest": world.user_interest[prepared.user_raw_ids.astype(np.int64)],
        "exploration": np.float64(world.config.exploration),
        "item_popularity": np.concatenate([[0.0], world.item_popularity[items]]),
    }
    return {"ground_truth.npz": lambda path: np.savez_compressed(path, **arrays)}


def prepare_synthetic(
    out_dir: str | Path = "data",
    name: str = "synthetic",
    config: SyntheticConfig | None = None,
    *,
    min_active_days: int = 4,
    min_train_interactions: int = 4,
    max_history: int = 100,
    force: bool = False,
    **overrides,
) -> Path:
    """Generate the world and write it as a prepared dataset; the folder's path.

    Keyword `overrides` replace fields of `config` (for example `n_users=200, seed=3`).
    """
    config = replace(config or SyntheticConfig(), **overrides)
    settings = FilterSettings(min_active_days, min_train_interactions, max_history)
    generated: list[SyntheticWorld] = []  # filled by load(), read by extra_files()

    def load() -> SourceTables:
        generated.append(generate_world(config))
        logger.info("generated %d views", len(generated[0].views))
        return _source_tables(generated[0])

    def extra_files(prepared: PreparedTables) -> dict:
        return _ground_truth_file(generated[0], prepared)

    return prepare(
        source="synthetic",
        name=name,
        out_dir=out_dir,
        parameters=asdict(config),
        input_files=[],
        settings=settings,
        load=load,
        extra_files=extra_files,
        force=force,
    )
