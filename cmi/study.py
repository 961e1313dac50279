"""Helpers for the book's chapters, so that notebook cells hold only what a chapter is about.

Preparing the dataset a chapter reads, recording a chapter's key numbers as JSON for the tests
and later chapters, showing the package's own source next to an equation, training grids of
runs and summarising them over seeds with paired per-user tests, the synthetic world's oracle
ranking, reading a trained model back with what its interests learned, and the few figure
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
import torch

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


# --- training runs for the chapters ----------------------------------------------------------

METRIC_NAMES = ("recall", "hit_rate", "ndcg")
CUTOFFS = (10, 20, 50)
ACCURACY_METRICS = tuple(f"{name}@{n}" for name in METRIC_NAMES for n in CUTOFFS)
BEYOND_ACCURACY_METRICS = tuple(
    f"{name}@{n}" for name in ("coverage", "diversity") for n in CUTOFFS
)
BASELINES = ("pop", "youtube_dnn", "gru4rec", "sasrec", "mind", "comirec_dr", "comirec_sa")


def training_config(
    model: str,
    dataset_folder: str | Path,
    *,
    run_root: str | Path,
    device: str,
    max_steps: int,
    eval_every: int,
    batch_size: int,
    max_len: int,
    **overrides: Any,
) -> dict[str, Any]:
    """The TrainConfig fields every chapter trains with: the profile's budget plus `overrides`.

    Chapters 3, 4 and 5 build their configurations here, so the same model and budget give the
    same dictionary, hence the same run folder, and a run trained by one chapter is reused by
    the next. The seed is set per run by `train_grid`.
    """
    config = {
        "model": model,
        "dataset": str(dataset_folder),
        "run_root": str(run_root),
        "device": device,
        "max_steps": int(max_steps),
        "eval_every": int(eval_every),
        "batch_size": int(batch_size),
        "max_len": int(max_len),
        "progress": False,
    }
    config.update(overrides)
    return config


def train_grid(
    settings: Mapping[str, Mapping[str, Any]],
    seeds: list[int] | tuple[int, ...],
    base_config: Mapping[str, Any],
    dataset: Any = None,
) -> pd.DataFrame:
    """Train (or reuse) every setting with every seed; one row per run.

    Each run's configuration is `{**base_config, **settings[name], "seed": seed}`. Columns:
    `setting`, `seed`, `model`, the test metrics under their own names (`recall@50`, ...,
    `coverage@10`, ...), the validation metrics prefixed `valid_`, `best_step`, `steps`,
    `seconds` (training and evaluation), `reused` and `run_dir`.
    """
    from cmi.train import train

    if not seeds:
        raise ValueError("train_grid needs at least one seed")
    rows = []
    for name, overrides in settings.items():
        for seed in seeds:
            config = {**base_config, **overrides, "seed": int(seed)}
            result = train(config, dataset)
            row = {"setting": name, "seed": int(seed), "model": config["model"]}
            row.update({key: value for key, value in result.test.items() if key != "n_users"})
            row.update({f"valid_{key}": value for key, value in result.valid.items()})
            row.update(
                {
                    "best_step": result.best_step,
                    "steps": result.steps,
                    "seconds": result.seconds.get("total", 0.0),
                    "reused": result.reused,
                    "run_dir": str(result.run_dir),
                }
            )
            rows.append(row)
    return pd.DataFrame(rows)


def run_histories(runs: pd.DataFrame) -> pd.DataFrame:
    """Every run's `history.csv` (one row per validation evaluation) with its setting and seed;
    runs without training (Pop) contribute no rows."""
    frames = []
    for run in runs.itertuples():
        history = pd.read_csv(Path(run.run_dir) / "history.csv")
        if len(history):
            frames.append(history.assign(setting=run.setting, seed=run.seed))
    if not frames:
        return pd.DataFrame(columns=["setting", "seed", "step"])
    return pd.concat(frames, ignore_index=True)


def summarise(
    runs: pd.DataFrame, metrics: tuple[str, ...] = ACCURACY_METRICS, confidence: float = 0.95
) -> pd.DataFrame:
    """Mean and t interval over seeds of each metric, one row per setting, indexed by setting
    in the order the settings first appear in `runs` (see `cmi.stats.summarise_runs`)."""
    from cmi.stats import summarise_runs

    summary = summarise_runs(runs, ["setting"], list(metrics), confidence)
    order = list(dict.fromkeys(runs["setting"]))
    return summary.set_index("setting").loc[order]


def interval_table(
    summary: pd.DataFrame, metrics: tuple[str, ...] = ACCURACY_METRICS, digits: int = 3
) -> pd.DataFrame:
    """`summarise`'s output as text, `mean ± half-width` per metric (the mean alone when the
    interval is undefined, i.e. for one run)."""

    def cell(mean: float, half_width: float) -> str:
        if np.isnan(mean):
            return "n/a"
        if np.isnan(half_width):
            return f"{mean:.{digits}f}"
        return f"{mean:.{digits}f} ± {half_width:.{digits}f}"

    return pd.DataFrame(
        {
            metric: [
                cell(row[f"{metric}_mean"], row[f"{metric}_half_width"])
                for _, row in summary.iterrows()
            ]
            for metric in metrics
        },
        index=summary.index,
    )


def per_user_values(
    runs: pd.DataFrame, metric: str = "recall@50", split: str = "test"
) -> pd.DataFrame:
    """Per-user `metric` on `split` of every run: one row per user, one column per (setting,
    seed); read from the runs' `per_user_<split>.parquet`."""
    columns = {}
    for run in runs.itertuples():
        frame = pd.read_parquet(Path(run.run_dir) / f"per_user_{split}.parquet")
        columns[(run.setting, run.seed)] = frame.set_index("user")[metric]
    table = pd.DataFrame(columns)
    table.columns = pd.MultiIndex.from_tuples(table.columns, names=["setting", "seed"])
    return table.rename_axis("user")


def paired_tests(
    runs: pd.DataFrame, reference: str, metric: str = "recall@50", split: str = "test"
) -> pd.DataFrame:
    """Per-user paired tests of setting `reference` against every other setting of `runs`.

    Each user's value of a setting is the mean of `metric` over that setting's seeds, so one
    pair per user enters the tests. `mean_difference` is reference minus the other setting
    (positive: the reference is better). Columns follow `cmi.stats.PairedTest`.
    """
    from cmi.stats import paired_test

    if reference not in set(runs["setting"]):
        raise ValueError(
            f"reference setting {reference!r} is not among {sorted(set(runs['setting']))}"
        )
    per_seed = per_user_values(runs, metric, split)
    per_user = per_seed.T.groupby(level="setting", sort=False).mean().T  # users x settings
    rows = []
    for setting in dict.fromkeys(runs["setting"]):
        if setting == reference:
            continue
        test = paired_test(per_user[reference], per_user[setting])
        rows.append({"setting": setting, **test.__dict__})
    return pd.DataFrame(rows).set_index("setting")


# --- the ablation grid of chapter 4 ----------------------------------------------------------

FULL_CMI = "full CMI"
ABLATION_GRIDS = ("reduced", "full")
# Values of each sweep besides full CMI's own (TrainConfig's default, the reference point).
_SWEEPS = {
    "n_interests": {"reduced": (2, 16), "full": (2, 4, 16)},
    "lambda_cl": {"reduced": (0.01, 0.2), "full": (0.01, 0.2, 1.0)},
    "lambda_orth": {"reduced": (1.0, 100.0), "full": (0.1, 1.0, 100.0)},
}
_SWEEP_LABELS = {"n_interests": "K", "lambda_cl": "lambda_cl", "lambda_orth": "lambda_orth"}


def ablation_settings(grid: str = "reduced") -> dict[str, dict[str, Any]]:
    """Chapter 4's settings: name -> the TrainConfig fields that differ from full CMI.

    Both grids hold full CMI, the four "without" settings of the protocol (each loss
    weight at zero, the general interest off), one interest (K = 1) and the sweeps of K,
    lambda_cl and lambda_orth; "reduced" sweeps fewer values than "full".
    """
    if grid not in ABLATION_GRIDS:
        raise ValueError(f"grid must be one of {ABLATION_GRIDS}, got {grid!r}")
    settings: dict[str, dict[str, Any]] = {
        FULL_CMI: {},
        "without L_cl": {"lambda_cl": 0.0},
        "without L_orth": {"lambda_orth": 0.0},
        "without L_uni": {"lambda_uni": 0.0},
        "without general interest": {"general_interest": False},
        "K=1": {"n_interests": 1},
    }
    for field_name, values in _SWEEPS.items():
        for value in values[grid]:
            settings[f"{_SWEEP_LABELS[field_name]}={value:g}"] = {field_name: value}
    return settings


def sweep_points(settings: Mapping[str, Mapping[str, Any]], field_name: str) -> dict[str, float]:
    """The settings that change only `field_name`, with its value, plus full CMI at
    TrainConfig's default; e.g. {"K=2": 2, "full CMI": 8, ...} for "n_interests"."""
    from cmi.config import TrainConfig

    points = {
        name: float(overrides[field_name])
        for name, overrides in settings.items()
        if set(overrides) == {field_name}
    }
    points[FULL_CMI] = float(TrainConfig.__dataclass_fields__[field_name].default)
    return points


# --- the oracle of the synthetic world ---------------------------------------------------------


class OracleScorer(torch.nn.Module):
    """Stands in for a model so that `cmi.evaluate.evaluate` ranks by the true probabilities.

    The synthetic world's probability that user u picks item i on day d is
    `(1 - exploration) * user_interest[u, d, c(i)] * item_weight_in_category[i]
    + exploration * item_popularity[i]`, with c(i) the item's true category. It is the inner
    product of a user vector `[user_interest[u, d, :], 1]` (one interest, C + 1 entries) with
    an item vector that holds `(1 - exploration) * item_weight_in_category[i]` at c(i) and
    `exploration * item_popularity[i]` last, so the shared evaluation scores it unchanged.

    `evaluate` does not pass user ids to a model, only histories; the scorer is built with the
    users the evaluation visits, in its order, and serves their vectors batch by batch. Each
    batch's histories are compared with those users' histories, so a change in the order would
    raise an error rather than mix users up.
    """

    def __init__(self, dataset: Any, split: str, max_len: int | None = None) -> None:
        super().__init__()
        truth = dataset.ground_truth
        if truth is None:
            raise ValueError(f"dataset {dataset.name!r} has no ground truth: it is not synthetic")
        days = dataset.metadata["days"]
        day = days["test_day"] if split == "test" else days["valid_day"]
        exploration = float(truth["exploration"])
        category = np.asarray(truth["item_category"])
        n_categories = np.asarray(truth["user_interest"]).shape[2]
        items = np.zeros((len(category), n_categories + 1))  # (N + 1, C + 1)
        real = np.flatnonzero(category >= 0)
        items[real, category[real]] = (1 - exploration) * truth["item_weight_in_category"][real]
        items[real, n_categories] = exploration * truth["item_popularity"][real]
        users = np.asarray(truth["user_interest"])[:, day, :]  # (U, C)
        users = np.concatenate([users, np.ones((len(users), 1))], axis=1)  # (U, C + 1)
        self.register_buffer("items", torch.from_numpy(items).float())
        self.register_buffer("users", torch.from_numpy(users).float())
        self.n_interests = 1
        self.histories = dataset.history(split)
        self.max_len = dataset.max_history if max_len is None else max_len
        self.order = np.flatnonzero(dataset.targets(split).lengths > 0)  # evaluate's users
        self.position = 0

    def item_vectors(self) -> torch.Tensor:
        """(N + 1, C + 1) item vectors; row 0 (padding) is zero."""
        return self.items

    def interests(self, history: torch.Tensor) -> torch.Tensor:
        """(B, L) -> (B, 1, C + 1): the next B users' vectors for the target day."""
        rows = self.order[self.position : self.position + len(history)]
        expected = self.histories.padded(rows, self.max_len, keep="last")
        if len(rows) != len(history) or not np.array_equal(expected, history.cpu().numpy()):
            raise RuntimeError(
                "OracleScorer: the evaluation visited users in an unexpected order; the oracle "
                "serves users with a target in increasing id, batch by batch"
            )
        self.position += len(rows)
        return self.users[torch.from_numpy(rows).to(self.users.device)][:, None, :]


def oracle_evaluation(
    dataset: Any, split: str = "test", ks: tuple[int, ...] = CUTOFFS, max_len: int | None = None
):
    """The oracle ranking's `EvalResult` on `split` of a synthetic dataset, computed by the
    same `cmi.evaluate.evaluate` as every model (history items masked, the same targets)."""
    from cmi.evaluate import evaluate

    scorer = OracleScorer(dataset, split, max_len)
    return evaluate(scorer, dataset, split=split, ks=ks, max_len=scorer.max_len)


# --- trained models and their interests ------------------------------------------------------


def load_model(run_dir: str | Path, dataset: Any, device: str = "cpu") -> torch.nn.Module:
    """The model of a finished run with its best checkpoint (`best.pt`) loaded, in eval mode.

    The model is rebuilt from the run's `config.json` by `cmi.train.build_model`; a model
    without training (Pop) has no checkpoint and is returned as built.
    """
    from cmi.config import TrainConfig
    from cmi.train import BEST_CHECKPOINT, CONFIG_FILE, build_model

    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).exists():
        raise FileNotFoundError(f"{run_dir} holds no {CONFIG_FILE}: it is not a run folder")
    config = TrainConfig.from_dict(json.loads((run_dir / CONFIG_FILE).read_text()))
    model = build_model(config, dataset)
    checkpoint = run_dir / BEST_CHECKPOINT
    if checkpoint.exists():
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
    return model.to(device).eval()


def item_routing(model: Any) -> np.ndarray:
    """CMI's routing of every catalogue item on its own: `softmax_k(e_v . g_k / tau)`, the
    weights a history position holding item v gets; (N + 1, K), row 0 is padding."""
    with torch.no_grad():
        affinity = model.item_vectors() @ model.category_vectors().T / model.tau_route
        return affinity.softmax(dim=-1).cpu().numpy()  # (N + 1, K)


def routing_crosstab(learned: np.ndarray, true: np.ndarray, n_learned: int) -> pd.DataFrame:
    """Items per (true category, learned category); every learned category gets a column."""
    table = pd.crosstab(pd.Series(true, name="true category"), pd.Series(learned, name="learned"))
    return table.reindex(columns=range(n_learned), fill_value=0)


def principal_axes(vectors: np.ndarray, n_axes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """The mean (d,) and the first `n_axes` principal directions (n_axes, d) of the rows of
    `vectors`, from the SVD of the centred rows; each direction's sign is fixed so that its
    largest loading is positive (the same picture on every run). Project rows `x` with
    `(x - mean) @ directions.T`."""
    vectors = np.asarray(vectors, dtype=np.float64)
    mean = vectors.mean(axis=0)
    _, _, directions = np.linalg.svd(vectors - mean, full_matrices=False)
    directions = directions[:n_axes]
    largest = np.abs(directions).argmax(axis=1)
    directions = directions * np.sign(directions[np.arange(len(directions)), largest])[:, None]
    return mean, directions


def category_usage(
    learned: np.ndarray, n_categories: int, weights: np.ndarray | None = None
) -> np.ndarray:
    """Share of items (or of `weights`, e.g. training positives) routed to each of the
    `n_categories` learned categories: (n_categories,), summing to one."""
    counts = np.bincount(learned, weights=weights, minlength=n_categories).astype(np.float64)
    return counts / counts.sum()


def effective_number(shares: np.ndarray) -> float:
    """`exp(entropy)` of a distribution: K when K categories are used evenly, 1 when one
    category takes everything."""
    shares = np.asarray(shares, dtype=np.float64)
    shares = shares[shares > 0]
    return float(np.exp(-(shares * np.log(shares)).sum()))


def interest_top_items(
    model: Any, history: np.ndarray, k: int = 10, exclude: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """What each interest of one user retrieves on its own.

    `history` is the user's item ids in time order (the model reads the last `model.max_len`);
    items of `exclude` (default: `history`) and item 0 are never retrieved. Returns `top`
    (K, k) item ids of each interest, best first; `scores` (K, k) their cosines; `merged`
    (k,) the user's top-k under the max over interests and `winner` (k,) the interest that
    gives each merged item its score; `routing_mass` (K,) the share of the history's routing
    weight each interest collects (models with `routing` only, else NaN).
    """
    items = np.asarray(history, dtype=np.int64)[-model.max_len :]
    exclude = np.asarray(history if exclude is None else exclude, dtype=np.int64)
    with torch.no_grad():
        item_vectors = model.item_vectors()  # (N + 1, d)
        tensor = torch.from_numpy(items)[None, :].to(item_vectors.device)  # (1, L)
        interests = model.interests(tensor)[0]  # (K, d)
        scores = interests @ item_vectors.T  # (K, N + 1)
        scores[:, 0] = -torch.inf
        scores[:, torch.from_numpy(exclude).to(scores.device)] = -torch.inf
        top_scores, top = torch.topk(scores, k, dim=1)  # (K, k)
        best, winner = scores.max(dim=0)  # (N + 1,)
        merged = torch.topk(best, k).indices
        mass = np.full(interests.shape[0], np.nan)
        if hasattr(model, "routing"):
            routing = model.routing(tensor)[0]  # (L, K)
            mass = (routing.sum(dim=0) / routing.sum()).cpu().numpy()
    return {
        "top": top.cpu().numpy(),
        "scores": top_scores.cpu().numpy(),
        "merged": merged.cpu().numpy(),
        "winner": winner[merged].cpu().numpy(),
        "routing_mass": mass,
    }


# --- text and figures built from results -------------------------------------------------------


_METRIC_LABELS = {
    "recall": "Recall",
    "hit_rate": "HitRate",
    "ndcg": "NDCG",
    "coverage": "Coverage",
    "diversity": "Diversity",
}


def metric_columns(table: pd.DataFrame) -> pd.DataFrame:
    """`table` with columns such as "recall@50" split into two levels: ("Recall", "@50")."""
    pairs = []
    for column in table.columns:
        name, _, cutoff = str(column).partition("@")
        pairs.append((_METRIC_LABELS.get(name, name), f"@{cutoff}" if cutoff else ""))
    shown = table.copy()
    shown.columns = pd.MultiIndex.from_tuples(pairs)
    return shown


def fmt(value: float, digits: int = 3) -> str:
    """A number for generated prose: fixed digits, or a p-value in scientific notation when
    it is below 0.001."""
    if value is None or np.isnan(value):
        return "n/a"
    if 0 < abs(value) < 10 ** (-digits):
        return f"{value:.1e}"
    return f"{value:.{digits}f}"


def plot_sweep(
    ax: Any,
    summary: pd.DataFrame,
    values: Mapping[str, float],
    metric: str = "recall@50",
    log_x: bool = False,
    **line: Any,
) -> None:
    """One sweep on `ax`: the mean of `metric` over seeds against the swept value, with the
    95% interval as a band. `values` maps each setting (an index of `summary`) to its value."""
    points = sorted((value, setting) for setting, value in values.items())
    x = np.array([value for value, _ in points], dtype=float)
    rows = summary.loc[[setting for _, setting in points]]
    mean = rows[f"{metric}_mean"].to_numpy()
    lower = rows[f"{metric}_lower"].to_numpy()
    upper = rows[f"{metric}_upper"].to_numpy()
    ax.plot(x, mean, marker="o", **line)
    ax.fill_between(x, lower, upper, alpha=0.2, color=ax.lines[-1].get_color())
    if log_x:
        ax.set_xscale("log")
