"""From a source's normalised positives to a prepared dataset folder (format in brief.md).

Every source (synthetic, KuaiRand, WeChat, CSV) reads its own files into a `SourceTables`
and calls `prepare`, which fingerprints inputs and parameters, skips the work when the
folder already holds that fingerprint, applies the shared filters and the day split, and
writes all files at once (nothing appears at the target path until everything is written).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from data_prep.catalog import Catalog, build_catalog
from data_prep.errors import DataError
from data_prep.io import describe_file, write_folder_atomically
from data_prep.split import (
    DUPLICATE_HANDLING,
    LIST_COLUMNS,
    FilterRecord,
    Positives,
    RaggedLists,
    Split,
    build_split,
    drop_duplicates,
    filter_unseen_items,
    filter_users,
    split_statistics,
)

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
CORE_FILES = (
    "interactions.parquet",
    "items.parquet",
    "users.parquet",
    "split.parquet",
    "metadata.json",
)
INTERACTION_COLUMNS = ("user", "item", "timestamp", "day", "order")


@dataclass(frozen=True)
class FilterSettings:
    """The filters every source shares."""

    min_active_days: int  # users need positives on at least this many training days
    min_train_interactions: int = 4  # users need at least this many training positives
    max_history: int = 100  # last-N cap applied when building model input; data stays whole

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")


@dataclass
class SourceTables:
    """What a source reads from its files, before the shared filters.

    `interactions` holds positives only, one row each, with columns `user` and `item` (raw
    ids, integers or strings), `timestamp` (int64 seconds), `day` (int, 0..D-1) and `order`
    (int, the original row order, used to break ties in time and to pick the first of
    duplicates).
    """

    interactions: pd.DataFrame
    items: pd.DataFrame | None  # item, categories (list of labels), duration; None: no table
    day_labels: list[str]  # one label per day index; D = len(day_labels)
    filters: list[FilterRecord] = field(default_factory=list)  # applied by the source
    category_names: list[str] | None = None  # a fixed category numbering, if the source has one
    item_file: str = "the item table"  # how the coverage error names the item table
    notes: dict = field(default_factory=dict)  # extra metadata (license, attribution)


@dataclass(frozen=True)
class PreparedTables:
    """Everything `prepare` built in memory, handed to a source's extra-file writer."""

    split: Split
    catalog: Catalog
    user_raw_ids: np.ndarray  # (U,) raw id of prepared user u
    item_raw_ids: np.ndarray  # (N,) raw id of prepared item i + 1
    filters: list[FilterRecord]
    duplicates: int
    statistics: dict


# A source's extra files: file name -> function writing it at the given path.
ExtraFiles = Callable[[PreparedTables], dict[str, Callable[[Path], None]]]


def code_digest() -> str:
    """sha256 over this package's source files, so that a change to the preparation code
    invalidates earlier preparations (and the training runs keyed by their fingerprint)."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def fingerprint(source: str, parameters: dict, source_files: Sequence[dict]) -> str:
    """sha256 over the format version, the preparation code, source, parameters and input
    contents (not paths)."""
    content = {
        "format_version": FORMAT_VERSION,
        "code": code_digest(),
        "source": source,
        "parameters": parameters,
        "inputs": [{"bytes": f["bytes"], "sha256": f["sha256"]} for f in source_files],
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def already_prepared(target: Path, expected_fingerprint: str) -> bool:
    """True when `target` holds a complete preparation with this fingerprint."""
    try:
        metadata = json.loads((target / "metadata.json").read_text())
    except (OSError, ValueError):
        return False
    files = metadata.get("files", CORE_FILES)
    return metadata.get("fingerprint") == expected_fingerprint and all(
        (target / name).is_file() for name in files
    )


def _positives(interactions: pd.DataFrame) -> tuple[Positives, np.ndarray, np.ndarray]:
    """Positives with users and items coded in sorted raw-id order, and the raw ids."""
    missing = [name for name in INTERACTION_COLUMNS if name not in interactions]
    if missing:
        raise ValueError(f"source interactions lack columns {missing}")
    user_codes, user_raw = pd.factorize(interactions["user"], sort=True)
    item_codes, item_raw = pd.factorize(interactions["item"], sort=True)
    rows = Positives(
        user=user_codes.astype(np.int64),
        item=item_codes.astype(np.int64),
        timestamp=interactions["timestamp"].to_numpy(dtype=np.int64),
        day=interactions["day"].to_numpy(dtype=np.int64),
        order=interactions["order"].to_numpy(dtype=np.int64),
    )
    return rows, np.asarray(user_raw), np.asarray(item_raw)


def _check_not_empty(rows: Positives, filters: list[FilterRecord]) -> None:
    if len(rows) == 0:
        steps = "; ".join(record.summary() for record in filters)
        raise DataError(f"no interactions left after filtering ({steps})")


def _check_target_users(split: Split, day_labels: list[str]) -> None:
    n_days = len(day_labels)
    for name, targets, day in (("validation", "valid_targets", -2), ("test", "test_targets", -1)):
        if split.lists[targets].values.size == 0:
            rows_that_day = int(np.count_nonzero(split.day == n_days + day))
            raise DataError(
                f"no {name} users: after filtering, no kept user has an item on the {name} "
                f"day ({day_labels[day]}) that is new to their history ({rows_that_day} "
                f"interactions remain on that day)"
            )


def build_tables(tables: SourceTables, settings: FilterSettings) -> PreparedTables:
    """Apply duplicates handling, the user and item filters and the day split, in memory."""
    n_days = len(tables.day_labels)
    if n_days < 3:
        raise DataError(
            f"the data spans {n_days} day(s) ({', '.join(tables.day_labels)}); the day split "
            "needs at least 3 (training days, a validation day, a test day)"
        )
    rows, user_raw, item_raw = _positives(tables.interactions)
    rows, duplicates = drop_duplicates(rows)
    rows, user_records = filter_users(
        rows, n_days, settings.min_active_days, settings.min_train_interactions
    )
    rows, unseen = filter_unseen_items(rows, n_days)
    filters = [*tables.filters, duplicates, *user_records, unseen]
    _check_not_empty(rows, filters)

    split = build_split(rows, n_days)
    _check_target_users(split, tables.day_labels)
    item_raw_ids = item_raw[split.item_codes]
    catalog = build_catalog(item_raw_ids, tables.items, tables.item_file, tables.category_names)
    return PreparedTables(
        split=split,
        catalog=catalog,
        user_raw_ids=user_raw[split.user_codes],
        item_raw_ids=item_raw_ids,
        filters=filters,
        duplicates=duplicates.rows_removed,
        statistics=split_statistics(split, len(catalog.category_names)),
    )


def _list_array(lists: RaggedLists) -> pa.ListArray:
    return pa.ListArray.from_arrays(
        pa.array(lists.indptr.astype(np.int32)), pa.array(lists.values, pa.int32())
    )


def _text(raw_ids: np.ndarray) -> pa.Array:
    return pa.array([str(raw_id) for raw_id in raw_ids], pa.string())


def _parquet_tables(prepared: PreparedTables) -> dict[str, pa.Table]:
    split, catalog = prepared.split, prepared.catalog
    n_users, n_items = split.n_users, split.n_items
    return {
        "interactions.parquet": pa.table(
            {
                "user": pa.array(split.user, pa.int32()),
                "item": pa.array(split.item, pa.int32()),
                "timestamp": pa.array(split.timestamp, pa.int64()),
                "day": pa.array(split.day, pa.int16()),
            }
        ),
        "items.parquet": pa.table(
            {
                "item": pa.array(np.arange(1, n_items + 1), pa.int32()),
                "raw_id": _text(prepared.item_raw_ids),
                "primary_category": pa.array(catalog.primary_category, pa.int32()),
                "categories": _list_array(catalog.categories),
                "duration": pa.array(catalog.duration, pa.float64()),
            }
        ),
        "users.parquet": pa.table(
            {
                "user": pa.array(np.arange(n_users), pa.int32()),
                "raw_id": _text(prepared.user_raw_ids),
            }
        ),
        "split.parquet": pa.table(
            {
                "user": pa.array(np.arange(n_users), pa.int32()),
                **{name: _list_array(split.lists[name]) for name in LIST_COLUMNS},
            }
        ),
    }


def _metadata(
    prepared: PreparedTables,
    tables: SourceTables,
    header: dict,
    settings: FilterSettings,
    files: list[str],
) -> dict:
    n_days = len(tables.day_labels)
    return {
        "format_version": FORMAT_VERSION,
        **header,
        "filters": [record.as_dict() for record in prepared.filters],
        "duplicates": {"rows": prepared.duplicates, "handling": DUPLICATE_HANDLING},
        "days": {
            "n_days": n_days,
            "train_days": n_days - 2,
            "valid_day": n_days - 2,
            "test_day": n_days - 1,
            "labels": list(tables.day_labels),
        },
        "categories": {
            "n_categories": len(prepared.catalog.category_names),
            "names": prepared.catalog.category_names,
        },
        "max_history": settings.max_history,
        "statistics": prepared.statistics,
        **tables.notes,
        "files": files,
    }


def prepare(
    *,
    source: str,
    name: str,
    out_dir: str | Path,
    parameters: dict,
    input_files: Sequence[Path],
    settings: FilterSettings,
    load: Callable[[], SourceTables],
    extra_files: ExtraFiles | None = None,
    force: bool = False,
) -> Path:
    """Prepare `<out_dir>/<name>/` from what `load()` returns; the folder's path.

    A no-op (logged) when the folder already holds this fingerprint and all its files, unless
    `force`. On any error nothing is written and an earlier folder stays as it was.
    """
    target = Path(out_dir) / name
    source_files = [describe_file(Path(path)) for path in input_files]
    parameters = {**parameters, **asdict(settings)}
    digest = fingerprint(source, parameters, source_files)
    if not force and already_prepared(target, digest):
        logger.info(
            "already prepared: %s holds fingerprint %s and all its files; nothing to do "
            "(force=True rebuilds it)",
            target,
            digest[:12],
        )
        return target

    tables = load()
    prepared = build_tables(tables, settings)
    parquet = _parquet_tables(prepared)
    extras = extra_files(prepared) if extra_files else {}
    header = {
        "source": source,
        "name": name,
        "parameters": parameters,
        "fingerprint": digest,
        "source_files": source_files,
    }
    files = [*CORE_FILES, *extras]
    metadata = _metadata(prepared, tables, header, settings, files)

    def write(folder: Path) -> None:
        for file_name, table in parquet.items():
            pq.write_table(table, folder / file_name)
        for file_name, write_extra in extras.items():
            write_extra(folder / file_name)
        # metadata.json last: a folder with it is complete.
        (folder / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")

    write_folder_atomically(target, write)
    statistics = prepared.statistics
    logger.info(
        "prepared %s: %d users, %d items, %d interactions",
        target,
        statistics["users"],
        statistics["items"],
        statistics["interactions"],
    )
    return target


def format_statistics(statistics: dict) -> str:
    """One line per statistic, for logs and the command line."""
    width = max(len(key) for key in statistics)
    return "\n".join(f"  {key:<{width}}  {value}" for key, value in statistics.items())
