"""Reading raw tables defensively and writing prepared folders atomically.

Raw files are read by column name (the header is checked first, column order is never
trusted), values are parsed with the file's line number in every error, and a prepared
folder only appears at its final path once every file in it is complete.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from data_prep.errors import DataError

logger = logging.getLogger(__name__)

PARQUET_SUFFIXES = (".parquet", ".pq")


def require_file(path: str | Path, what: str = "input file") -> Path:
    """`path` as a Path, or a DataError saying that the file is missing."""
    path = Path(path)
    if not path.is_file():
        reason = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise DataError(f"{what} {path} {reason}")
    return path


def describe_file(path: Path) -> dict:
    """The metadata entry of one source file: its path, size in bytes and sha256."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"path": str(path), "bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def is_parquet(path: Path) -> bool:
    return path.suffix.lower() in PARQUET_SUFFIXES


def read_columns(path: Path) -> list[str]:
    """The column names of a CSV (plain or compressed) or parquet file."""
    try:
        if is_parquet(path):
            return list(pq.read_schema(path).names)
        return [str(name) for name in pd.read_csv(path, nrows=0).columns]
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read the header ({error})") from error


def check_columns(path: Path, found: Sequence[str], required: Sequence[str]) -> None:
    """DataError naming the missing columns and listing those the file has."""
    missing = [name for name in required if name not in found]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(repr(name) for name in missing)}; "
            f"columns found: {', '.join(found)}"
        )


def read_table(
    path: Path,
    required: Sequence[str],
    optional: Sequence[str] = (),
    as_text: Sequence[str] = (),
) -> pd.DataFrame:
    """The `required` and present `optional` columns of a CSV or parquet file.

    Columns named in `as_text` are read as strings (ids, tag lists); the others are left to
    the reader's type inference and parsed afterwards by `integer_column` / `float_column`.
    """
    found = read_columns(require_file(path))
    check_columns(path, found, required)
    wanted = list(dict.fromkeys([*required, *(name for name in optional if name in found)]))
    try:
        if is_parquet(path):
            table = pd.read_parquet(path, columns=wanted)
            for name in as_text:
                if name in table:
                    table[name] = table[name].astype("str").where(table[name].notna())
            return table
        text_types = {name: "str" for name in as_text if name in wanted}
        return pd.read_csv(path, usecols=wanted, dtype=text_types, low_memory=False)
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read the file ({error})") from error


def _row_position(path: Path, row: int) -> str:
    """How a reader finds data row `row` (0-based): the file line for CSV, the row for parquet."""
    if is_parquet(path):
        return f"row {row + 1}"
    return f"line {row + 2}"


def raise_on_first_bad(
    values: pd.Series, bad: np.ndarray, path: Path, column: str, expected: str
) -> None:
    """DataError naming the first row where `bad` is set, its value, and how many such rows."""
    rows = np.flatnonzero(bad)
    if len(rows):
        row = int(rows[0])
        raise DataError(
            f"{path}, {_row_position(path, row)}: column {column!r} has value "
            f"{values.iloc[row]!r}, expected {expected} ({len(rows)} such row(s) in all)"
        )


def float_column(
    table: pd.DataFrame, column: str, path: Path, allow_missing: bool = False
) -> np.ndarray:
    """Column `column` as float64, or a DataError naming the first unparsable value.

    With `allow_missing`, empty cells become NaN; otherwise they are errors too.
    """
    values = table[column]
    parsed = pd.to_numeric(values, errors="coerce").astype("float64").to_numpy()
    bad = np.isnan(parsed)
    if allow_missing:
        bad &= values.notna().to_numpy()
    raise_on_first_bad(values, bad, path, column, "a number")
    return parsed


def integer_column(table: pd.DataFrame, column: str, path: Path) -> np.ndarray:
    """Column `column` as int64, or a DataError naming the first unparsable or fractional value."""
    values = table[column]
    if pd.api.types.is_integer_dtype(values.dtype) and not values.hasnans:
        return values.to_numpy(dtype=np.int64)
    parsed = pd.to_numeric(values, errors="coerce").astype("float64").to_numpy()
    bad = ~np.isfinite(parsed) | (np.floor(parsed) != parsed)
    raise_on_first_bad(values, bad, path, column, "an integer")
    return parsed.astype(np.int64)


def raw_id_column(table: pd.DataFrame, column: str, path: Path) -> np.ndarray:
    """Raw ids as int64 when every value is an integer, otherwise as strings.

    Integer ids then sort numerically ("2" before "10"), and ids read from two files (an
    interaction log and a category file) compare equal whatever type each reader inferred.
    An empty id is a DataError naming its line.
    """
    values = table[column]
    raise_on_first_bad(values, values.isna().to_numpy(), path, column, "an id")
    if pd.api.types.is_integer_dtype(values.dtype):
        return values.to_numpy(dtype=np.int64)
    as_text = values.astype("str").str.strip()
    if as_text.str.fullmatch(r"-?\d{1,18}").all():
        return as_text.astype("int64").to_numpy()
    return as_text.to_numpy(dtype=object)


def write_folder_atomically(target: Path, write: Callable[[Path], None]) -> None:
    """Run `write(folder)` on a fresh temporary folder next to `target`, then move it there.

    If `write` fails, the temporary folder is removed and `target` is left as it was. An
    existing `target` is only replaced when it looks like a prepared folder (it has a
    metadata.json) or is empty, so a mistyped path cannot wipe unrelated files.
    """
    if target.exists():
        if not target.is_dir():
            raise DataError(f"output path {target} exists and is not a folder")
        if any(target.iterdir()) and not (target / "metadata.json").is_file():
            raise DataError(
                f"refusing to replace {target}: it is not empty and has no metadata.json, "
                "so it is not a prepared dataset folder"
            )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        write(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if target.exists():
        retired = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        target.rename(retired)
        staging.rename(target)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        staging.rename(target)
    logger.info("wrote %s", target)
