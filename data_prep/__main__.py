"""Command line: `python -m data_prep <source> --out DIR [--name NAME] ...`.

Sources: synthetic, kuairand, wechat, csv (`python -m data_prep <source> --help` lists each
one's options). Prints the prepared folder and its statistics; on a data or configuration
problem prints `error: <message>` and exits with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

from data_prep.core import format_statistics
from data_prep.csv_source import TIME_UNITS, prepare_csv
from data_prep.errors import DataError
from data_prep.kuairand import KUAIRAND_MIN_ACTIVE_DAYS, prepare_kuairand
from data_prep.synthetic import SyntheticConfig, prepare_synthetic
from data_prep.wechat import DEFAULT_POSITIVE as WECHAT_POSITIVE
from data_prep.wechat import prepare_wechat


def _common_options(min_active_days: int) -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out", default="data", help="folder of prepared datasets (default data)")
    common.add_argument("--name", help="name of the prepared folder inside --out")
    common.add_argument(
        "--min-active-days",
        type=int,
        default=min_active_days,
        help=f"users need positives on this many training days (default {min_active_days})",
    )
    common.add_argument("--min-train-interactions", type=int, default=4, help="(default 4)")
    common.add_argument(
        "--max-history", type=int, default=100, help="last-N history cap, recorded (default 100)"
    )
    common.add_argument("--force", action="store_true", help="rebuild even if up to date")
    common.add_argument("--quiet", action="store_true", help="log warnings only")
    return common


def _add_synthetic(commands) -> None:
    parser = commands.add_parser(
        "synthetic",
        parents=[_common_options(4)],
        help="a seeded world with planted interests",
        description="Generate the synthetic micro-video world (data_prep/synthetic.py).",
    )
    for field in dataclasses.fields(SyntheticConfig):
        parser.add_argument(
            "--" + field.name.replace("_", "-"),
            type=type(field.default),
            default=field.default,
            help=f"(default {field.default})",
        )


def _add_kuairand(commands) -> None:
    parser = commands.add_parser(
        "kuairand",
        parents=[_common_options(KUAIRAND_MIN_ACTIVE_DAYS)],
        help="KuaiRand log_standard_*.csv[.gz] and video_features_basic_*.csv",
    )
    parser.add_argument("data", nargs="+", help="a KuaiRand data folder, or log files")
    parser.add_argument("--features", help="the video_features_basic_*.csv file")
    parser.add_argument(
        "--positive", default="click", help="click (default), long_view or watch_ratio:X"
    )


def _add_wechat(commands) -> None:
    parser = commands.add_parser(
        "wechat",
        parents=[_common_options(4)],
        help="WeChat Big Data Challenge 2021 user_action.csv and feed_info.csv",
    )
    parser.add_argument("data", help="folder holding user_action.csv and feed_info.csv")
    parser.add_argument(
        "--positive",
        default=WECHAT_POSITIVE,
        help=f"play_ratio:X or any_action (default {WECHAT_POSITIVE})",
    )


def _add_csv(commands) -> None:
    parser = commands.add_parser(
        "csv",
        parents=[_common_options(1)],
        help="any CSV or parquet file of (user, item, time) rows",
    )
    parser.add_argument("path", help="the CSV or parquet interaction file")
    parser.add_argument("--user-col", default="user")
    parser.add_argument("--item-col", default="item")
    parser.add_argument("--time-col", default="timestamp")
    parser.add_argument("--time-unit", default="s", choices=TIME_UNITS)
    parser.add_argument("--items", help="optional item file with categories")
    parser.add_argument("--items-item-col", help="item id column of --items (default --item-col)")
    parser.add_argument("--category-col", default="category", help="categories column of --items")
    parser.add_argument("--category-sep", default="|", help="separator of categories (default |)")
    parser.add_argument("--duration-col", help="duration column of --items, in seconds")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m data_prep", description="Prepare a dataset for the CMI study."
    )
    commands = parser.add_subparsers(dest="source", required=True)
    for add in (_add_synthetic, _add_kuairand, _add_wechat, _add_csv):
        add(commands)
    return parser


def _run(args: argparse.Namespace) -> Path:
    common = {
        "out_dir": args.out,
        "min_active_days": args.min_active_days,
        "min_train_interactions": args.min_train_interactions,
        "max_history": args.max_history,
        "force": args.force,
    }
    if args.name:
        common["name"] = args.name
    if args.source == "synthetic":
        fields = {
            field.name: getattr(args, field.name) for field in dataclasses.fields(SyntheticConfig)
        }
        return prepare_synthetic(config=SyntheticConfig(**fields), **common)
    if args.source == "kuairand":
        data = args.data[0] if len(args.data) == 1 else args.data
        return prepare_kuairand(data, features=args.features, positive=args.positive, **common)
    if args.source == "wechat":
        return prepare_wechat(args.data, positive=args.positive, **common)
    return prepare_csv(
        args.path,
        user_col=args.user_col,
        item_col=args.item_col,
        time_col=args.time_col,
        time_unit=args.time_unit,
        items=args.items,
        items_item_col=args.items_item_col,
        category_col=args.category_col,
        category_sep=args.category_sep,
        duration_col=args.duration_col,
        **common,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO, format="%(levelname)s %(message)s"
    )
    try:
        path = _run(args)
    except (DataError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    statistics = json.loads((path / "metadata.json").read_text())["statistics"]
    print(path)
    print(format_statistics(statistics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
