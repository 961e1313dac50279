"""Throughput benchmark: training and evaluation speed of every model, as a share of the machine.

For each model of `cmi.models.MODELS` on the KuaiRand slice and the synthetic default world it
measures training throughput (sequences per second; CMI encodes two views per user, so its
count is users and the model sees twice as many sequences), the time split of a training step
(sampler, forward, backward, optimiser), full-ranking evaluation throughput (users per second)
and peak memory. A dense float32 matrix product measured in the same run gives the machine's
matmul rate, and every figure is also written as the fraction of that rate its estimated
floating-point work achieves. A last part ranks a 100,000-item catalogue (K = 8, d = 64) with
`cmi.evaluate.rank_top_items` under a few batch settings, next to the plain per-interest
scoring loop that the CPU tiling of `cmi.evaluate` replaced.

    .venv/bin/python benchmarks/throughput.py            # the full run, a few minutes
    .venv/bin/python benchmarks/throughput.py --quick    # tiny sizes, a check that it runs

Figures are printed and written to benchmarks/results/throughput.json. This is a measurement,
not a test: nothing is asserted about timings.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import platform
import resource
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from cmi.config import TrainConfig
from cmi.data import PreparedDataset, load_dataset
from cmi.evaluate import rank_top_items
from cmi.models import MODELS
from cmi.ragged import Ragged
from cmi.sampling import TrainSampler
from cmi.train import build_model

REPO_ROOT = Path(__file__).resolve().parent.parent

DEFAULT_KUAIRAND_ROOT = REPO_ROOT.parent / "shared" / "data" / "KuaiRand-Pure" / "data"
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
MEBIBYTE = 2**20
PHASES = ("sampler", "forward", "backward", "optimizer")


# --------------------------------------------------------------------------------------------
# Timing, memory and the machine's matmul rate


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that wall-clock time covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_seconds(run: Callable[[], Any], device: torch.device, repeats: int) -> float:
    """The fastest of `repeats` timed calls after one untimed call. Other processes on a shared
    machine only ever slow a call down, so the minimum is the least disturbed figure."""
    run()
    synchronize(device)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        synchronize(device)
        times.append(time.perf_counter() - started)
    return min(times)


def matmul_rate(device: torch.device, size: int, repeats: int) -> dict[str, float]:
    """GFLOP/s of a (size, size) x (size, size) float32 product: best and median of repeats."""
    generator = torch.Generator().manual_seed(0)
    left = torch.randn(size, size, generator=generator).to(device)
    right = torch.randn(size, size, generator=generator).to(device)
    flops = 2.0 * size**3
    torch.mm(left, right)
    synchronize(device)
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(left, right)
        synchronize(device)
        rates.append(flops / (time.perf_counter() - started) / 1e9)
    return {"size": size, "best_gflops": max(rates), "median_gflops": statistics.median(rates)}


def release_freed_memory() -> None:
    """Collect garbage and ask glibc to hand freed pages back, so RSS baselines mean something."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class PeakMemory:
    """Peak memory above the level at entry, in MiB, of the code inside a `with` block.

    CUDA: `torch.cuda.max_memory_allocated` (tensors only). CPU: the process's resident set
    size sampled every few milliseconds by psutil in a thread; without psutil, the growth of
    `ru_maxrss` (which only moves when the process sets a new lifetime high, so it reads 0
    for a phase that stays below an earlier peak).
    """

    def __init__(self, device: torch.device, interval: float = 0.002) -> None:
        self.device = device
        self.interval = interval
        self.mebibytes = float("nan")
        self.method = ""

    def __enter__(self) -> PeakMemory:
        release_freed_memory()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
            self.method = "torch.cuda.max_memory_allocated"
            return self
        try:
            import psutil
        except ImportError:
            self.process = None
            self.start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            self.method = "ru_maxrss growth"
            return self
        self.process = psutil.Process()
        self.start = self.process.memory_info().rss
        self.peak = self.start
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        self.method = "psutil rss sampled every 2 ms"
        return self

    def _sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.interval)

    def __exit__(self, *exception: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        elif self.process is None:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        else:
            self.running = False
            self.thread.join()
            peak = max(self.peak, self.process.memory_info().rss)
        self.mebibytes = max(peak - self.start, 0) / MEBIBYTE


# --------------------------------------------------------------------------------------------
# Floating-point work. Only the dense products that dominate are counted (element-wise work,
# softmaxes, norms and the optimiser are left out), and a training step counts as 3x its
# forward pass (the backward pass of a product takes two products of the same size). Every
# count is 2 * (multiply-adds). B: users of the batch, L: its history width, d: embedding
# size, K: interests, M: negatives (the batch shares its B negatives).


def sampled_softmax_flops(rows: int, interests: int, negatives: int, dim: int, choice: str) -> int:
    """Scores of the positive under every interest, then of the negatives under the max over
    interests ("max": all K) or under the one interest chosen for the positive ("target")."""
    positive = 2 * rows * interests * dim
    scored_interests = interests if choice == "max" else 1
    return positive + 2 * rows * scored_interests * negatives * dim


def routing_flops(rows: int, interests: int, length: int, dim: int, iterations: int) -> int:
    """Capsule routing: each iteration pools (K, L) x (L, d); all but the last also update the
    logits with (L, d) x (d, K) agreements."""
    return (2 * iterations - 1) * 2 * rows * interests * length * dim


def forward_flops(name: str, model: nn.Module, batch: Any) -> int:
    """Estimated forward FLOPs of `model.loss_terms(batch)` for registry model `name`."""
    rows, length = batch.history.shape  # B, L
    negatives = batch.negative.shape[0]  # M
    dim, interests = model.dim, model.n_interests
    gru_per_position = 2 * 2 * 3 * dim * dim  # input and hidden products of three gates

    if name == "pop":
        return 0
    if name == "youtube_dnn":
        body = 2 * rows * length * dim + 2 * (2 * rows * dim * dim)  # mean pooling, 2 layers
        return body + sampled_softmax_flops(rows, 1, negatives, dim, "max")
    if name == "gru4rec":
        body = rows * length * gru_per_position
        return body + sampled_softmax_flops(rows, 1, negatives, dim, "max")
    if name == "sasrec":
        # Per block: query/key/value (3 d^2), output (d^2) and feed-forward (2 d^2) products
        # per position, and the attention scores and weighted values (2 L d per position;
        # counted whole, as the kernel computes the causal square).
        per_block = 2 * rows * length * 6 * dim * dim + 2 * 2 * rows * length * length * dim
        body = len(model.blocks) * per_block
        return body + sampled_softmax_flops(rows, 1, negatives, dim, "max")
    if name == "mind":
        body = 2 * rows * length * dim * dim  # the shared bilinear map S e_t
        body += routing_flops(rows, interests, length, dim, model.routing_iterations)
        body += 2 * 2 * rows * interests * dim  # label-aware attention and its weighted sum
        return body + sampled_softmax_flops(rows, 1, negatives, dim, "max")
    if name == "comirec_dr":
        body = 2 * rows * length * interests * dim * dim  # one map per (position, interest)
        body += routing_flops(rows, interests, length, dim, model.routing_iterations)
        return body + sampled_softmax_flops(rows, interests, negatives, dim, "target")
    if name == "comirec_sa":
        hidden = model.hidden.out_features  # d_a
        body = 2 * rows * length * dim * hidden  # W1
        body += 2 * rows * length * hidden * interests  # W2
        body += 2 * rows * length * interests * dim  # attention pooling
        return body + sampled_softmax_flops(rows, interests, negatives, dim, "target")
    if name == "cmi":
        # Both views of every user go through the encoder as one (2B, L_view) batch.
        view_rows, view_length = 2 * rows, batch.view_a.shape[1]
        body = 2 * 2 * view_rows * view_length * interests * dim  # routing scores and pooling
        if model.use_general_interest:
            body += view_rows * view_length * gru_per_position  # GRU over each view
            body += 2 * view_rows * dim * dim  # general-interest projection
        body += sampled_softmax_flops(view_rows, interests, negatives, dim, "max")
        if model.lambda_cl > 0:
            body += 2 * 2 * (rows * interests) ** 2 * dim  # S and S^T over B*K interests
        return body
    raise ValueError(f"no FLOP estimate for model {name!r}; add one to forward_flops")


def scoring_flops_per_user(model: nn.Module) -> int:
    """Full ranking: K dot products of length d with each of the N + 1 item vectors."""
    items = model.item_vectors()
    return 2 * model.n_interests * items.shape[1] * items.shape[0]


# --------------------------------------------------------------------------------------------
# Datasets


def prepare_datasets(arguments: argparse.Namespace) -> dict[str, Path]:
    """Prepared folders by name; KuaiRand is left out, with the reason printed, when absent."""
    from data_prep.synthetic import prepare_synthetic

    folders: dict[str, Path] = {}
    root = Path(arguments.kuairand_root)
    if "kuairand" not in arguments.datasets:
        pass
    elif root.is_dir():
        from data_prep.kuairand import prepare_kuairand

        folders["kuairand"] = Path(prepare_kuairand(root, arguments.data_dir, "kuairand"))
    else:
        print(f"skipping KuaiRand: {root} is not a folder (set --kuairand-root)")
    if "synthetic" in arguments.datasets:
        if arguments.quick:
            # A small world keeps the check fast; its folder name keeps it apart.
            folders["synthetic"] = Path(
                prepare_synthetic(arguments.data_dir, "synthetic_quick", n_users=300, n_items=400)
            )
        else:
            folders["synthetic"] = Path(prepare_synthetic(arguments.data_dir, "synthetic"))
    return folders


# --------------------------------------------------------------------------------------------
# Training and evaluation of the registry's models


def train_steps(
    name: str,
    model: nn.Module,
    dataset: PreparedDataset,
    arguments: argparse.Namespace,
    device: torch.device,
    matmul_gflops: float,
) -> dict[str, Any]:
    """Time warm-up + timed optimiser steps phase by phase, as `cmi.train` runs them."""
    sampler = TrainSampler(
        dataset,
        batch_size=arguments.batch_size,
        max_len=arguments.max_len,
        needs_views=model.needs_views,
        seed=0,
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    model.train()
    phase_seconds = {phase: [] for phase in PHASES}
    flops = []

    def step(record: bool) -> None:
        marks = [time.perf_counter()]
        batch = sampler.next_batch().to(device)
        synchronize(device)
        marks.append(time.perf_counter())
        loss = model.total_loss(model.loss_terms(batch))
        synchronize(device)
        marks.append(time.perf_counter())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        synchronize(device)
        marks.append(time.perf_counter())
        optimizer.step()
        synchronize(device)
        marks.append(time.perf_counter())
        if record:
            for phase, start, end in zip(PHASES, marks[:-1], marks[1:], strict=True):
                phase_seconds[phase].append(end - start)
            flops.append(3 * forward_flops(name, model, batch))

    for _ in range(arguments.warmup_steps):
        step(record=False)
    with PeakMemory(device) as memory:
        for _ in range(arguments.steps):
            step(record=True)

    totals = {phase: sum(values) for phase, values in phase_seconds.items()}
    seconds = sum(totals.values())
    step_totals = [sum(values) for values in zip(*phase_seconds.values(), strict=True)]
    achieved = sum(flops) / seconds / 1e9
    return {
        "batch_size": sampler.batch_size,
        "steps": arguments.steps,
        "seconds_per_step_mean": seconds / arguments.steps,
        "seconds_per_step_median": statistics.median(step_totals),
        "sequences_per_second": sampler.batch_size * arguments.steps / seconds,
        "sequences_per_second_median_step": sampler.batch_size / statistics.median(step_totals),
        "model_sequences_per_user": 2 if model.needs_views else 1,
        "phase_share": {phase: totals[phase] / seconds for phase in PHASES},
        "phase_seconds_mean": {phase: totals[phase] / arguments.steps for phase in PHASES},
        "gflop_per_step": sum(flops) / len(flops) / 1e9,
        "achieved_gflops": achieved,
        "fraction_of_matmul": achieved / matmul_gflops,
        "peak_memory_mib": memory.mebibytes,
        "memory_method": memory.method,
    }


def profile_operators(
    name: str, model: nn.Module, dataset: PreparedDataset, arguments: argparse.Namespace
) -> list[dict[str, Any]]:
    """torch.profiler over a few extra steps: the operators with the most own CPU time."""
    from torch.profiler import ProfilerActivity, profile

    sampler = TrainSampler(
        dataset, arguments.batch_size, arguments.max_len, needs_views=model.needs_views, seed=1
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    device = next(model.parameters()).device
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as profiler:
        for _ in range(arguments.profile_steps):
            batch = sampler.next_batch().to(device)
            loss = model.total_loss(model.loss_terms(batch))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        synchronize(device)
    events = sorted(profiler.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(event.self_cpu_time_total for event in events) or 1.0
    return [
        {
            "operator": event.key,
            "calls": event.count,
            "self_cpu_ms_per_step": event.self_cpu_time_total / 1e3 / arguments.profile_steps,
            "self_cpu_share": event.self_cpu_time_total / total,
        }
        for event in events[:8]
    ]


def evaluation_throughput(
    model: nn.Module,
    dataset: PreparedDataset,
    arguments: argparse.Namespace,
    device: torch.device,
    matmul_gflops: float,
) -> dict[str, Any]:
    """Full ranking (top 50 of all items, history masked) of every user's test history."""
    histories = dataset.history("test")
    users = np.arange(min(dataset.n_users, arguments.eval_users or dataset.n_users))

    def rank() -> np.ndarray:
        return rank_top_items(
            model, histories, users, k=50, max_len=arguments.max_len, device=device
        )

    with PeakMemory(device) as memory:
        seconds = best_seconds(rank, device, arguments.eval_repeats)
    with torch.inference_mode():
        flops = scoring_flops_per_user(model) * len(users)
    achieved = flops / seconds / 1e9
    return {
        "users": len(users),
        "users_per_second": len(users) / seconds,
        "scoring_gflops": achieved,
        "fraction_of_matmul": achieved / matmul_gflops,
        "peak_memory_mib": memory.mebibytes,
    }


def benchmark_models(
    dataset_name: str,
    folder: Path,
    arguments: argparse.Namespace,
    device: torch.device,
    matmul_gflops: float,
) -> list[dict[str, Any]]:
    dataset = load_dataset(folder)
    rows = []
    for name in arguments.models:
        config = TrainConfig(
            model=name,
            dataset=str(folder),
            max_len=arguments.max_len,
            batch_size=arguments.batch_size,
            device=str(device),
            progress=False,
        )
        torch.manual_seed(0)
        model = build_model(config, dataset).to(device)
        row: dict[str, Any] = {
            "dataset": dataset_name,
            "model": name,
            "parameters": sum(p.numel() for p in model.parameters()),
        }
        if getattr(model, "trainable", True):
            row["train"] = train_steps(name, model, dataset, arguments, device, matmul_gflops)
            if name in arguments.profile_models:
                row["operators"] = profile_operators(name, model, dataset, arguments)
        row["evaluate"] = evaluation_throughput(model, dataset, arguments, device, matmul_gflops)
        print(f"  {dataset_name} {name}: done", flush=True)
        rows.append(row)
        del model
        release_freed_memory()
    return rows


# --------------------------------------------------------------------------------------------
# Ranking a large random catalogue


class RandomInterests(nn.Module):
    """A stand-in model for a large catalogue: fixed random interests per user and random item
    vectors. Each user's history starts with item `user + 1`, which tells `interests` whose
    row it is (that item is then masked like any history item)."""

    def __init__(self, n_users: int, n_items: int, n_interests: int, dim: int) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.user_interests = torch.randn(n_users, n_interests, dim, generator=generator)
        self.items = torch.randn(n_items + 1, dim, generator=generator)
        self.n_interests = n_interests

    def interests(self, history: torch.Tensor) -> torch.Tensor:
        """(B, L) -> (B, K, d): the interests of the user named by each row's first item."""
        return self.user_interests.to(history.device)[history[:, 0] - 1]

    def item_vectors(self) -> torch.Tensor:
        return self.items


def per_interest_loop_top(
    interests: torch.Tensor, item_vectors: torch.Tensor, k: int
) -> torch.Tensor:
    """The scoring the CPU tiling replaced, for comparison: one (B, N + 1) product per
    interest folded with an in-place maximum, then the top-k (masking left out)."""
    scores = interests[:, 0] @ item_vectors.T  # (B, N + 1)
    for interest in range(1, interests.shape[1]):
        torch.maximum(scores, interests[:, interest] @ item_vectors.T, out=scores)
    return torch.topk(scores, k, dim=1).indices


def large_catalogue(
    arguments: argparse.Namespace, device: torch.device, matmul_gflops: float
) -> dict[str, Any]:
    """Users per second and share of the matmul rate when ranking N items for K = 8, d = 64."""
    n_users, n_items = arguments.catalogue_users, arguments.catalogue_items
    n_interests, dim, history_length = 8, 64, 20
    model = RandomInterests(n_users, n_items, n_interests, dim)
    rng = np.random.default_rng(0)
    others = rng.integers(1, n_items + 1, size=(n_users, history_length - 1))
    first = np.arange(1, n_users + 1)[:, None]
    histories = Ragged.from_lists(np.concatenate([first, others], axis=1).tolist())
    users = np.arange(n_users)
    flops = 2 * n_interests * dim * (n_items + 1) * n_users

    settings = [(1024, None), (256, None), (4096, None), (1024, 16384)]
    rows = []
    for batch_users, item_chunk in settings:
        batch_users = min(batch_users, n_users)

        def rank(batch_users=batch_users, item_chunk=item_chunk) -> np.ndarray:
            return rank_top_items(
                model,
                histories,
                users,
                k=50,
                max_len=history_length,
                batch_users=batch_users,
                item_chunk=item_chunk,
                device=device,
            )

        with PeakMemory(device) as memory:
            seconds = best_seconds(rank, device, arguments.eval_repeats)
        rows.append(
            {
                "kernel": "cmi.evaluate.rank_top_items",
                "batch_users": batch_users,
                "item_chunk": item_chunk,
                "users_per_second": n_users / seconds,
                "gflops": flops / seconds / 1e9,
                "fraction_of_matmul": flops / seconds / 1e9 / matmul_gflops,
                "peak_memory_mib": memory.mebibytes,
            }
        )

    # The replaced kernel on one batch of users (scoring and top-k only, no masking).
    batch = min(1024, n_users)
    interests = model.user_interests[:batch].to(device)
    items = model.items.to(device)
    with torch.inference_mode():
        seconds = best_seconds(
            lambda: per_interest_loop_top(interests, items, 50), device, arguments.eval_repeats
        )
    batch_flops = 2 * n_interests * dim * (n_items + 1) * batch
    rows.append(
        {
            "kernel": "per-interest loop (before the tiling)",
            "batch_users": batch,
            "item_chunk": None,
            "users_per_second": batch / seconds,
            "gflops": batch_flops / seconds / 1e9,
            "fraction_of_matmul": batch_flops / seconds / 1e9 / matmul_gflops,
            "peak_memory_mib": float("nan"),
        }
    )
    return {
        "users": n_users,
        "items": n_items,
        "n_interests": n_interests,
        "dim": dim,
        "k": 50,
        "gflop_per_user": 2 * n_interests * dim * (n_items + 1) / 1e9,
        "runs": rows,
    }


# --------------------------------------------------------------------------------------------
# Report


def model_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    records = []
    for row in rows:
        train = row.get("train", {})
        evaluate = row["evaluate"]
        records.append(
            {
                "dataset": row["dataset"],
                "model": row["model"],
                "train seq/s": train.get("sequences_per_second", np.nan),
                "GFLOP/step": train.get("gflop_per_step", np.nan),
                "train GFLOP/s": train.get("achieved_gflops", np.nan),
                "train frac": train.get("fraction_of_matmul", np.nan),
                "sampler %": 100 * train.get("phase_share", {}).get("sampler", np.nan),
                "fwd %": 100 * train.get("phase_share", {}).get("forward", np.nan),
                "bwd %": 100 * train.get("phase_share", {}).get("backward", np.nan),
                "opt %": 100 * train.get("phase_share", {}).get("optimizer", np.nan),
                "train MiB": train.get("peak_memory_mib", np.nan),
                "eval users/s": evaluate["users_per_second"],
                "eval frac": evaluate["fraction_of_matmul"],
                "eval MiB": evaluate["peak_memory_mib"],
            }
        )
    return pd.DataFrame(records)


def machine_description(device: torch.device) -> dict[str, Any]:
    description = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        description["gpu"] = torch.cuda.get_device_name(device)
    return description


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument(
        "--datasets",
        nargs="+",
        default=["kuairand", "synthetic"],
        choices=["kuairand", "synthetic"],
    )
    parser.add_argument("--steps", type=int, default=15, help="timed steps per model (15)")
    parser.add_argument("--warmup-steps", type=int, default=2, help="untimed first steps (2)")
    parser.add_argument("--batch-size", type=int, default=256, help="users per step (256)")
    parser.add_argument("--max-len", type=int, default=50, help="history cap L (50)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N")
    parser.add_argument("--kuairand-root", default=str(DEFAULT_KUAIRAND_ROOT))
    parser.add_argument("--data-dir", default=str(REPO_ROOT / "data"))
    parser.add_argument(
        "--profile-models",
        nargs="*",
        default=["cmi"],
        help="models whose training steps also go through torch.profiler (default cmi)",
    )
    parser.add_argument("--profile-steps", type=int, default=5)
    parser.add_argument("--eval-repeats", type=int, default=2, help="timed repeats, best kept")
    parser.add_argument(
        "--eval-users", type=int, default=0, help="users ranked per model (0: all users)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads (0: torch's default, one per core)",
    )
    parser.add_argument("--catalogue-items", type=int, default=100_000)
    parser.add_argument("--catalogue-users", type=int, default=2048)
    parser.add_argument("--matmul-size", type=int, default=2048)
    parser.add_argument("--output", help="JSON path (default results/throughput.json)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that it runs")
    arguments = parser.parse_args(argv)
    if arguments.output is None:
        name = "throughput_quick.json" if arguments.quick else "throughput.json"
        arguments.output = str(RESULTS_DIR / name)
    if arguments.quick:
        arguments.steps, arguments.warmup_steps, arguments.profile_steps = 3, 1, 2
        arguments.batch_size, arguments.max_len = 32, 20
        arguments.eval_repeats, arguments.matmul_size, arguments.eval_users = 1, 512, 256
        arguments.catalogue_items, arguments.catalogue_users = 5000, 64
    return arguments


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    device = torch.device(arguments.device)
    if arguments.threads:
        torch.set_num_threads(arguments.threads)
    if device.type == "cpu":
        # cmi.train runs CPU training with deterministic kernels; the benchmark does the same.
        torch.use_deterministic_algorithms(True, warn_only=True)
    started = time.perf_counter()
    load_before = os.getloadavg()

    rate = matmul_rate(device, arguments.matmul_size, repeats=5)
    print(
        f"matmul rate ({arguments.matmul_size}^2 float32 on {device}): "
        f"best {rate['best_gflops']:.1f} GFLOP/s, median {rate['median_gflops']:.1f}"
    )
    reference = rate["best_gflops"]

    folders = prepare_datasets(arguments)
    rows = []
    for name, folder in folders.items():
        rows.extend(benchmark_models(name, folder, arguments, device, reference))
    catalogue = large_catalogue(arguments, device, reference)
    rate_after = matmul_rate(device, arguments.matmul_size, repeats=5)

    results = {
        "settings": {
            key: value for key, value in vars(arguments).items() if key not in ("output",)
        },
        "machine": machine_description(device),
        "load_average": {"start": load_before, "end": os.getloadavg()},
        "matmul": {"start": rate, "end": rate_after, "reference_gflops": reference},
        "flop_counting": (
            "dominant dense products only; training = 3 x forward; evaluation = "
            "2 K d (N + 1) per user; fractions are of matmul.start.best_gflops"
        ),
        "models": rows,
        "large_catalogue": catalogue,
        "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "seconds": time.perf_counter() - started,
    }
    output = Path(arguments.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2, default=str))

    pd.set_option("display.width", 200)
    table = model_table(rows)
    if len(table):
        print("\nTraining and evaluation (fractions of the matmul rate)")
        print(table.to_string(index=False, float_format=lambda value: f"{value:.3g}"))
    for row in rows:
        for operator in row.get("operators", []):
            if operator is row["operators"][0]:
                print(f"\ntorch.profiler, {row['dataset']} {row['model']}: top operators")
            print(
                f"  {operator['operator']:<40} {operator['self_cpu_ms_per_step']:8.2f} ms/step "
                f"{100 * operator['self_cpu_share']:5.1f} %"
            )
    print(
        f"\nRanking {catalogue['items']:,} items for {catalogue['users']} users "
        f"(K={catalogue['n_interests']}, d={catalogue['dim']}, top {catalogue['k']})"
    )
    print(
        pd.DataFrame(catalogue["runs"]).to_string(
            index=False, float_format=lambda value: f"{value:.3g}"
        )
    )
    print(
        f"\nload average {load_before} -> {os.getloadavg()}; matmul at the end "
        f"{rate_after['best_gflops']:.1f} GFLOP/s; {results['seconds']:.0f} s; "
        f"written to {output}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
