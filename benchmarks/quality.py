"""Quality benchmark: test Recall, NDCG and HitRate at 50 of every model on a fixed budget.

Each model of `cmi.models.MODELS` is trained with `cmi.train.train` (by default 400 steps,
validation every 100, batch 256, histories capped at 50; the book's cpu profile uses 200, 50
and 128, which the options can match) and its test metrics at the best validation step are
tabulated. On the synthetic default world an oracle
row ranks items by the true generative probability of the test day, read from the saved
ground truth,

    p(u, i) = (1 - exploration) * user_interest[u, day, category(i)] * weight_in_category(i)
              + exploration * item_popularity(i),

and goes through the same ranking and metric code (`cmi.evaluate`) as the models. The oracle
is the probability of a view; positives are views watched long enough, so it is a strong
reference, not an upper bound. The world is the default one, not tuned for any model.

    .venv/bin/python benchmarks/quality.py                      # synthetic, with the oracle
    .venv/bin/python benchmarks/quality.py --dataset kuairand   # the KuaiRand slice
    .venv/bin/python benchmarks/quality.py --quick              # tiny budget, a check

Runs are kept under runs/benchmarks (a rerun reuses finished runs); the table is printed and
written to benchmarks/results/quality_<dataset>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from cmi.config import TrainConfig
from cmi.data import PreparedDataset, load_dataset
from cmi.evaluate import hit_rate_at, ndcg_at, rank_top_items, recall_at
from cmi.models import MODELS
from cmi.ragged import Ragged
from cmi.train import train

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_KUAIRAND_ROOT = REPO_ROOT.parent / "shared" / "data" / "KuaiRand-Pure" / "data"
CUTOFF = 50
METRICS = (f"recall@{CUTOFF}", f"ndcg@{CUTOFF}", f"hit_rate@{CUTOFF}")
SHOWN = (*METRICS, f"coverage@{CUTOFF}")


# --------------------------------------------------------------------------------------------
# The oracle


def oracle_vectors(dataset: PreparedDataset, day: int) -> tuple[np.ndarray, np.ndarray]:
    """User vectors (U, C + 1) and item vectors (N + 1, C + 1) whose dot product is the true
    probability p(u, i) of day `day`: [(1 - e) w_u, e] . [onehot(category) * weight, pop]."""
    truth = dataset.ground_truth
    exploration = float(truth["exploration"])
    category = truth["item_category"].astype(np.int64)  # (N + 1,), -1 at item 0
    interest = truth["user_interest"][:, day, :]  # (U, D, C) -> (U, C)
    n_categories = interest.shape[1]

    users = np.concatenate(
        [(1.0 - exploration) * interest, np.full((len(interest), 1), exploration)], axis=1
    )  # (U, C + 1)
    items = np.zeros((len(category), n_categories + 1))  # (N + 1, C + 1)
    known = np.flatnonzero(category >= 0)
    items[known, category[known]] = truth["item_weight_in_category"][known]
    items[:, n_categories] = truth["item_popularity"]
    return users, items


class OracleModel(nn.Module):
    """A stand-in recommender with one interest per user: that user's oracle vector.

    `rank_top_items` hands a model histories, not user ids, so the ranking is done in one
    batch of exactly the users given to `expect`, and the history of that batch is checked
    against theirs before the users' rows are returned.
    """

    def __init__(self, user_vectors: np.ndarray, item_vectors: np.ndarray) -> None:
        super().__init__()
        self.user_vectors = torch.from_numpy(user_vectors)  # (U, C + 1) float64
        self.items = torch.from_numpy(item_vectors)  # (N + 1, C + 1) float64
        self.n_interests = 1
        self.rows: np.ndarray | None = None
        self.expected_history: torch.Tensor | None = None

    def expect(self, users: np.ndarray, histories: Ragged, max_len: int) -> None:
        self.rows = users
        self.expected_history = torch.from_numpy(histories.padded(users, max_len, keep="last"))

    def interests(self, history: torch.Tensor) -> torch.Tensor:
        """(B, L) -> (B, 1, C + 1), the rows of the users set by `expect`."""
        if self.expected_history is None or not torch.equal(history, self.expected_history):
            raise RuntimeError(
                "OracleModel got a history batch that is not the one announced by expect(); "
                "rank all users in one batch (batch_users=len(users))"
            )
        return self.user_vectors[torch.from_numpy(self.rows)][:, None, :]

    def item_vectors(self) -> torch.Tensor:
        return self.items


def oracle_metrics(dataset: PreparedDataset, max_len: int) -> dict[str, Any]:
    """Test metrics of ranking by the true probabilities of the test day, plus a check that a
    plain numpy ranking of the same scores gives the same Recall@50."""
    day = int(dataset.metadata["days"]["test_day"])
    user_vectors, item_vectors = oracle_vectors(dataset, day)
    histories = dataset.history("test")
    targets = dataset.targets("test")
    users = np.arange(dataset.n_users)

    model = OracleModel(user_vectors, item_vectors)
    model.expect(users, histories, max_len)
    top = rank_top_items(model, histories, users, k=CUTOFF, max_len=max_len, batch_users=len(users))
    metrics = {
        f"recall@{CUTOFF}": float(np.nanmean(recall_at(top, targets, CUTOFF))),
        f"ndcg@{CUTOFF}": float(np.nanmean(ndcg_at(top, targets, CUTOFF))),
        f"hit_rate@{CUTOFF}": float(np.nanmean(hit_rate_at(top, targets, CUTOFF))),
        "n_users": int((targets.lengths > 0).sum()),
    }

    # The check: the same scores ranked with numpy, history rows and item 0 excluded.
    scores = user_vectors @ item_vectors.T  # (U, N + 1)
    scores[:, 0] = -np.inf
    rows = np.repeat(users, histories.lengths)
    scores[rows, histories.values] = -np.inf
    direct = np.argsort(-scores, axis=1, kind="stable")[:, :CUTOFF]
    direct_recall = float(np.nanmean(recall_at(direct, targets, CUTOFF)))
    metrics["check_numpy_recall"] = direct_recall
    width = item_vectors.shape[0]
    keys = users[:, None] * width + top  # one int64 key per (user, recommended item)
    direct_keys = users[:, None] * width + direct
    metrics["check_same_items_share"] = float(np.isin(keys, direct_keys).mean())
    metrics["day"] = day
    return metrics


# --------------------------------------------------------------------------------------------
# Training the models


def prepare(arguments: argparse.Namespace) -> Path | None:
    """The prepared dataset folder, or None (with the reason printed) when KuaiRand is absent."""
    if arguments.dataset == "kuairand":
        root = Path(arguments.kuairand_root)
        if not root.is_dir():
            print(f"skipping KuaiRand: {root} is not a folder (set --kuairand-root)")
            return None
        from data_prep.kuairand import prepare_kuairand

        return Path(prepare_kuairand(root, arguments.data_dir, "kuairand"))
    from data_prep.synthetic import prepare_synthetic

    if arguments.quick:
        # A small world keeps the check fast; its folder name keeps it apart.
        return Path(
            prepare_synthetic(arguments.data_dir, "synthetic_quick", n_users=300, n_items=400)
        )
    return Path(prepare_synthetic(arguments.data_dir, "synthetic"))


def train_models(
    folder: Path, dataset: PreparedDataset, arguments: argparse.Namespace
) -> list[dict[str, Any]]:
    rows = []
    for name in arguments.models:
        for seed in arguments.seeds:
            config = TrainConfig(
                model=name,
                dataset=str(folder),
                max_steps=arguments.max_steps,
                eval_every=arguments.eval_every,
                batch_size=arguments.batch_size,
                max_len=arguments.max_len,
                seed=seed,
                device=arguments.device,
                progress=False,
                run_root=arguments.run_root,
            )
            started = time.perf_counter()
            result = train(config, dataset)
            print(
                f"  {name} seed {seed}: test recall@{CUTOFF} "
                f"{result.test[f'recall@{CUTOFF}']:.4f} "
                f"({'reused' if result.reused else f'{time.perf_counter() - started:.0f} s'})",
                flush=True,
            )
            rows.append(
                {
                    "model": name,
                    "seed": seed,
                    **{metric: result.test[metric] for metric in SHOWN},
                    "valid_recall@50": result.valid[f"recall@{CUTOFF}"],
                    "best_step": result.best_step,
                    "steps": result.steps,
                    "train_seconds": result.seconds.get("training", 0.0),
                    "total_seconds": result.seconds.get("total", 0.0),
                    "reused": result.reused,
                    "run_dir": str(result.run_dir),
                }
            )
    return rows


def summary_table(rows: list[dict[str, Any]], oracle: dict[str, Any] | None) -> pd.DataFrame:
    """Mean over seeds per model (with the spread when there are several seeds), oracle last."""
    frame = pd.DataFrame(rows)
    grouped = frame.groupby("model", sort=False)
    table = grouped[list(SHOWN) + ["best_step", "train_seconds"]].mean()
    table.insert(0, "seeds", grouped.size())
    if frame["seed"].nunique() > 1:
        table[f"recall@{CUTOFF} std"] = grouped[f"recall@{CUTOFF}"].std()
    if oracle is not None:
        table.loc["oracle (true probabilities)"] = {
            "seeds": 0,
            **{metric: oracle[metric] for metric in METRICS},
        }
    return table


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="synthetic", choices=["synthetic", "kuairand"])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--max-steps", type=int, default=400)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--max-len", type=int, default=50)
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N, auto")
    parser.add_argument("--run-root", default=str(REPO_ROOT / "runs" / "benchmarks"))
    parser.add_argument("--data-dir", default=str(REPO_ROOT / "data"))
    parser.add_argument("--kuairand-root", default=str(DEFAULT_KUAIRAND_ROOT))
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--output", help="JSON path (default results/quality_<dataset>.json)")
    parser.add_argument("--quick", action="store_true", help="tiny budget: checks that it runs")
    arguments = parser.parse_args(argv)
    if arguments.quick:
        arguments.max_steps, arguments.eval_every, arguments.batch_size = 20, 10, 64
        arguments.run_root = str(REPO_ROOT / "runs" / "benchmarks_quick")
    if arguments.output is None:
        suffix = "_quick" if arguments.quick else ""
        name = f"quality_{arguments.dataset}{suffix}.json"
        arguments.output = str(REPO_ROOT / "benchmarks" / "results" / name)
    return arguments


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    if arguments.threads:
        torch.set_num_threads(arguments.threads)
    started = time.perf_counter()
    load_before = os.getloadavg()
    folder = prepare(arguments)
    if folder is None:
        return 0
    dataset = load_dataset(folder)

    oracle = None
    if dataset.ground_truth is not None:
        oracle = oracle_metrics(dataset, arguments.max_len)
    else:
        print(f"no oracle on {dataset.name}: the dataset has no ground truth")
    rows = train_models(folder, dataset, arguments)
    table = summary_table(rows, oracle)

    results = {
        "dataset": dataset.name,
        "dataset_path": str(folder),
        "fingerprint": dataset.metadata.get("fingerprint"),
        "settings": {key: value for key, value in vars(arguments).items() if key != "output"},
        "torch_threads": torch.get_num_threads(),
        "load_average": {"start": load_before, "end": os.getloadavg()},
        "runs": rows,
        "oracle": oracle,
        "table": json.loads(table.reset_index().to_json(orient="records")),
        "seconds": time.perf_counter() - started,
    }
    output = Path(arguments.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2))

    pd.set_option("display.width", 200)
    print(
        f"\nTest metrics on {dataset.name} ({arguments.max_steps} steps, batch "
        f"{arguments.batch_size}, max_len {arguments.max_len}, seeds {arguments.seeds})"
    )
    print(table.to_string(float_format=lambda value: f"{value:.4f}"))
    if oracle is not None:
        print(
            f"oracle check: numpy ranking recall@{CUTOFF} {oracle['check_numpy_recall']:.4f}, "
            f"same top-{CUTOFF} items {100 * oracle['check_same_items_share']:.2f} %"
        )
    print(f"load average {load_before} -> {os.getloadavg()}; written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
