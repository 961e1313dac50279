"""Train one model on one prepared dataset, with early stopping, checkpoints and exact resume.

`train(config)` is what notebooks call; `python -m cmi.train --dataset DIR --model NAME` is
the same from a shell. A run lives in `<run_root>/<dataset name>/<model>/<config hash>/`:

- `config.json`   the resolved configuration (`TrainConfig.to_dict()`)
- `history.csv`   one row per validation evaluation: step, mean loss terms, metrics, seconds
- `last.pt`       everything needed to resume (written at each evaluation)
- `best.pt`       the model weights with the best validation Recall@50 so far
- `result.json`   written last: best step, valid and test metrics at the best checkpoint
- `per_user_valid.parquet`, `per_user_test.parquet`  per-user metrics for paired tests

A folder holding `result.json` is a finished run and is returned as it is; a folder holding
only `last.pt` is an interrupted run and continues from its last evaluation, ending with the
same numbers as an uninterrupted run. Several processes (`torchrun --nproc_per_node P`) train
one model with DistributedDataParallel; process 0 evaluates and writes the files.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from cmi.batch import TrainBatch
from cmi.config import TrainConfig
from cmi.sampling import TrainSampler

logger = logging.getLogger(__name__)

KS = (10, 20, 50)  # cut-offs evaluated at every validation
SELECTION_METRIC = "recall@50"  # early stopping and the best checkpoint follow this
CONFIG_FILE = "config.json"
HISTORY_FILE = "history.csv"
RESULT_FILE = "result.json"
LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
MODEL_FIELDS = (  # TrainConfig fields handed to cmi.models.build_model (None: model default)
    "dim",
    "max_len",
    "n_interests",
    "temperature",
    "tau_route",
    "tau_cl",
    "lambda_cl",
    "lambda_orth",
    "lambda_uni",
    "general_interest",
    "n_layers",
    "n_heads",
    "dropout",
    "routing_iterations",
)


class TrainingError(FloatingPointError):
    """A loss became NaN or infinite; the message names the step and the loss term."""


@dataclass
class RunResult:
    """What a finished run reports; `RunResult.load(run_dir)` reads it back."""

    run_dir: Path  # the run's folder
    config: TrainConfig  # the configuration it ran with
    best_step: int  # step of the best validation Recall@50 (0: untrained, e.g. Pop)
    steps: int  # optimiser steps taken
    stopped_early: bool  # True when patience ran out before max_steps
    valid: dict[str, float]  # validation metrics of the best checkpoint
    test: dict[str, float]  # test metrics of the best checkpoint
    history: pd.DataFrame  # one row per evaluation (empty for models without training)
    seconds: dict[str, float] = field(default_factory=dict)  # sampling, training, evaluation
    reused: bool = False  # True when the run was found finished and not trained again

    @classmethod
    def load(cls, run_dir: str | Path) -> RunResult:
        run_dir = Path(run_dir)
        saved = json.loads((run_dir / RESULT_FILE).read_text())
        return cls(
            run_dir=run_dir,
            config=TrainConfig.from_dict(saved["config"]),
            best_step=saved["best_step"],
            steps=saved["steps"],
            stopped_early=saved["stopped_early"],
            valid=saved["valid"],
            test=saved["test"],
            history=pd.read_csv(run_dir / HISTORY_FILE),
            seconds=saved["seconds"],
            reused=True,
        )

    def per_user(self, split: str = "test") -> pd.DataFrame:
        """Per-user metrics of the best checkpoint on `split` ("valid" or "test")."""
        return pd.read_parquet(self.run_dir / f"per_user_{split}.parquet")


# --------------------------------------------------------------------------------------------
# Small helpers: files, devices, processes


def _atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    """Write through a temporary file in the same folder, then rename it over `path`."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _write_json(path: Path, value: Any) -> None:
    _atomic_write(path, lambda p: p.write_text(json.dumps(value, indent=2, sort_keys=True)))


def run_directory(config: TrainConfig, dataset: Any) -> Path:
    """`<run_root>/<dataset name>/<model>/<hash of config and data fingerprint>/`."""
    fingerprint = str((dataset.metadata or {}).get("fingerprint", ""))
    return Path(config.run_root) / dataset.name / config.model / config.config_hash(fingerprint)


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """ "auto" becomes cuda (this process's GPU under torchrun) when available, else cpu."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        name = f"cuda:{local_rank}"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"TrainConfig.device={name!r} but CUDA is not available")
    return device


@dataclass
class _Processes:
    """This process's place among the data-parallel processes (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # True when this module started the process group

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def broadcast_flag(self, flag: bool) -> bool:
        """Process 0's value of `flag`, on every process."""
        if self.world_size == 1:
            return flag
        tensor = torch.tensor([int(flag)], device=self.device)
        dist.broadcast(tensor, src=0)
        return bool(tensor.item())

    def gather(self, value: Any) -> list[Any]:
        """`value` from every process, in rank order."""
        if self.world_size == 1:
            return [value]
        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()


@contextlib.contextmanager
def _processes(config: TrainConfig) -> Iterator[_Processes]:
    """Join the process group when started by torchrun (WORLD_SIZE > 1)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(config.device, local_rank)
    if world_size == 1:
        yield _Processes(device=device)
        return
    owns_group = not dist.is_initialized()
    if owns_group:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    try:
        yield _Processes(dist.get_rank(), dist.get_world_size(), device, owns_group)
    finally:
        if owns_group:
            dist.destroy_process_group()


@contextlib.contextmanager
def _deterministic(device: torch.device) -> Iterator[None]:
    """Deterministic kernels on CPU (free there); restored afterwards for the caller."""
    # NOTE: on CUDA deterministic kernels (index_add, scatter) cost speed, so they stay off
    # and GPU runs are repeatable only up to floating-point reordering.
    if device.type != "cpu":
        yield
        return
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    # NOTE: filling every new tensor with NaN is a debugging aid of deterministic mode that
    # costs memory bandwidth on the (8192, 8192) contrastive logits; CPU results repeat
    # without it (tests/test_train.py checks two runs for identical histories).
    torch.utils.deterministic.fill_uninitialized_memory = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
        torch.utils.deterministic.fill_uninitialized_memory = fill


class _LossModule(nn.Module):
    """`forward(batch) -> (total, terms)`, so DistributedDataParallel sees the loss pass."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: TrainBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        terms = self.model.loss_terms(batch)
        return self.model.total_loss(terms), terms


def build_model(config: TrainConfig, dataset: Any) -> nn.Module:
    """The configured model; hyperparameters left at None take the model's own default.

    Fields the model does not take (CMI's loss weights for a baseline, SASRec's layers for
    CMI) are not passed; a warning names those that were changed from their defaults.
    """
    from cmi.models import build_model as build_registered
    from cmi.models import model_hyperparameters

    accepted = model_hyperparameters(config.model)
    defaults = TrainConfig.__dataclass_fields__
    hyperparameters, ignored = {}, []
    for name in MODEL_FIELDS:
        value = getattr(config, name)
        if name in accepted and value is not None:
            hyperparameters[name] = value
        elif name not in accepted and value != defaults[name].default:
            ignored.append(f"{name}={value!r}")
    if ignored:
        logger.warning("model %r does not use %s", config.model, ", ".join(ignored))
    return build_registered(
        config.model, dataset.n_items, dataset.item_popularity_train, **hyperparameters
    )


# --------------------------------------------------------------------------------------------
# The training run


def train(
    config: TrainConfig | dict[str, Any],
    dataset: Any = None,
    *,
    on_evaluation: Callable[[dict[str, Any]], None] | None = None,
) -> RunResult:
    """Train `config.model` on `dataset` (loaded from `config.dataset` when None), evaluate the
    best checkpoint on validation and test, and return the result (a finished run is reused).

    `on_evaluation(row)` is called on process 0 after each evaluation's files are written; an
    exception it raises interrupts the run, which a later call resumes.
    """
    config = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    if dataset is None:
        from cmi.data import load_dataset

        dataset = load_dataset(config.dataset)
    elif getattr(dataset, "path", None) is not None:
        config = config.replace(dataset=str(dataset.path))  # record where it came from
    run_dir = run_directory(config, dataset)
    if (run_dir / RESULT_FILE).exists():
        logger.info("run %s is finished; reusing its results", run_dir)
        return RunResult.load(run_dir)

    with _processes(config) as processes, _deterministic(processes.device):
        trainer = _Trainer(config, dataset, run_dir, processes, on_evaluation)
        trainer.run()
        processes.barrier()
    result = RunResult.load(run_dir)
    result.reused = False
    return result


class _Trainer:
    """The state of one run and the steps that advance it."""

    def __init__(
        self,
        config: TrainConfig,
        dataset: Any,
        run_dir: Path,
        processes: _Processes,
        on_evaluation: Callable[[dict[str, Any]], None] | None,
    ) -> None:
        self.config = config
        self.dataset = dataset
        self.run_dir = run_dir
        self.processes = processes
        self.device = processes.device
        self.on_evaluation = on_evaluation
        self.amp = config.amp and self.device.type == "cuda"
        if config.amp and not self.amp:
            logger.warning("amp=True needs CUDA; training on %s in float32", self.device)

        if processes.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            _write_json(run_dir / CONFIG_FILE, config.to_dict())
            logger.info(
                "run %s, %d process(es) on %s, config:\n%s",
                run_dir,
                processes.world_size,
                self.device,
                json.dumps(config.to_dict(), indent=2),
            )

        torch.manual_seed(config.seed)
        self.model = build_model(config, dataset).to(self.device)

        # Progress of the run; all of it goes into last.pt.
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self.best_metric = -math.inf
        self.best_step = 0
        self.bad_evaluations = 0
        self.stopped_early = False
        self.seconds = {"sampling": 0.0, "training": 0.0, "evaluation": 0.0}

    # ---------------------------------------------------------------- the whole run

    def run(self) -> None:
        if getattr(self.model, "trainable", True):
            self._train()
        else:
            logger.info("%s has nothing to train; evaluating it as it is", self.config.model)
        if self.processes.is_main:
            self._finish()

    def _train(self) -> None:
        config, processes = self.config, self.processes
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        self.sampler = TrainSampler(
            self.dataset,
            batch_size=max(config.batch_size // processes.world_size, 1),
            max_len=config.max_len,
            min_cut=config.min_cut,
            needs_views=bool(getattr(self.model, "needs_views", False)),
            seed=config.seed,
            rank=processes.rank,
            world_size=processes.world_size,
        )
        self.loss_module: nn.Module = _LossModule(self.model)
        if processes.world_size > 1:
            # A static graph (the same parameters used at every step) lets DDP find parameters
            # a model never uses once, instead of searching the graph at every step.
            self.loss_module = nn.parallel.DistributedDataParallel(
                self.loss_module, static_graph=True
            )
        finished = self._resume()

        bar = tqdm(
            total=config.max_steps,
            initial=self.step,
            desc=f"{config.model} on {self.dataset.name}",
            disable=not (config.progress and processes.is_main),
            leave=False,
        )
        running: dict[str, torch.Tensor] = {}
        steps_since_evaluation = 0
        self.model.train()
        while not finished and self.step < config.max_steps:
            started = time.perf_counter()
            batch = self.sampler.next_batch().to(self.device)
            sampled = time.perf_counter()

            terms, total = self._optimise(batch)
            for name, value in {**terms, "total": total}.items():
                running[name] = running.get(name, 0.0) + value.detach().float()
            steps_since_evaluation += 1
            self.step += 1
            bar.update(1)
            self.seconds["sampling"] += sampled - started
            self.seconds["training"] += time.perf_counter() - started

            if self.step % config.eval_every == 0 or self.step == config.max_steps:
                losses = {
                    f"loss_{name}": float(value) / steps_since_evaluation
                    for name, value in running.items()
                }
                finished = self._evaluate_and_checkpoint(losses)
                bar.set_postfix(
                    loss=round(losses["loss_total"], 4), best=round(self.best_metric, 4)
                )
                running, steps_since_evaluation = {}, 0
        bar.close()

    def _optimise(self, batch: TrainBatch) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """One optimiser step; a NaN or infinite loss stops the run before it is applied."""
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp):
            total, terms = self.loss_module(batch)
        named = {**terms, "total": total}
        values = torch.stack([value.detach().float() for value in named.values()])
        if not bool(torch.isfinite(values).all()):
            name, value = next((n, float(v)) for n, v in zip(named, values) if not v.isfinite())
            raise TrainingError(
                f"{self.config.model}: loss term {name!r} is {value} at step {self.step + 1} "
                f"(run {self.run_dir}; a new call resumes from its last evaluation)"
            )
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        return terms, total

    # ---------------------------------------------------------------- evaluation, stopping

    def _evaluate(self, split: str):
        from cmi.evaluate import evaluate

        return evaluate(
            self.model,
            self.dataset,
            split=split,
            ks=KS,
            target_variant=self.config.target_variant,
            max_len=self.config.max_len,
            batch_users=self.config.eval_batch_users,
            device=self.device,
        )

    def _evaluate_and_checkpoint(self, losses: dict[str, float]) -> bool:
        """Validate (process 0), keep the best weights, write last.pt; True to stop."""
        processes = self.processes
        # Every process's sampler and random state go into last.pt, so resuming is exact.
        sampler_states = processes.gather(self.sampler.state_dict())
        rng_states = processes.gather(_torch_rng_state(self.device))
        stop = False
        if processes.is_main:
            started = time.perf_counter()
            metrics = self._evaluate("valid").metrics
            self.seconds["evaluation"] += time.perf_counter() - started
            value = metrics[SELECTION_METRIC]
            if value > self.best_metric:
                self.best_metric, self.best_step, self.bad_evaluations = value, self.step, 0
                state = {"model": self.model.state_dict(), "step": self.step}
                _atomic_write(self.run_dir / BEST_CHECKPOINT, lambda p: torch.save(state, p))
            else:
                self.bad_evaluations += 1
            stop = self.bad_evaluations >= self.config.patience
            self.stopped_early = stop and self.step < self.config.max_steps

            row = {
                "step": self.step,
                **losses,
                **{f"valid_{name}": value for name, value in metrics.items()},
                "seconds": self.seconds["training"] + self.seconds["evaluation"],
            }
            self.history.append(row)
            logger.info(
                "step %d: loss %.4f, valid %s %.4f (best %.4f at step %d)",
                self.step,
                losses["loss_total"],
                SELECTION_METRIC,
                value,
                self.best_metric,
                self.best_step,
            )
            self._save_last(sampler_states, rng_states, finished=stop)
            _atomic_write(
                self.run_dir / HISTORY_FILE,
                lambda p: pd.DataFrame(self.history).to_csv(p, index=False),
            )
            if self.on_evaluation is not None:
                self.on_evaluation(row)
        return processes.broadcast_flag(stop)

    # ---------------------------------------------------------------- checkpoints

    def _save_last(self, sampler_states: list, rng_states: list, finished: bool) -> None:
        state = {
            "config_hash": self.run_dir.name,
            "world_size": self.processes.world_size,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "samplers": sampler_states,
            "torch_rng": rng_states,
            "step": self.step,
            "history": self.history,
            "best_metric": self.best_metric,
            "best_step": self.best_step,
            "bad_evaluations": self.bad_evaluations,
            "stopped_early": self.stopped_early,
            "finished": finished,
            "seconds": self.seconds,
        }
        _atomic_write(self.run_dir / LAST_CHECKPOINT, lambda p: torch.save(state, p))

    def _resume(self) -> bool:
        """Continue from last.pt when it exists; True if that run had already stopped."""
        path = self.run_dir / LAST_CHECKPOINT
        self.processes.barrier()  # process 0 may have just created the folder
        if not path.exists():
            return False
        state = torch.load(path, map_location=self.device, weights_only=True)
        if state["world_size"] != self.processes.world_size:
            raise ValueError(
                f"{path} was written by {state['world_size']} process(es); resume it with "
                f"as many, not {self.processes.world_size}"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.sampler.load_state_dict(state["samplers"][self.processes.rank])
        _set_torch_rng_state(state["torch_rng"][self.processes.rank], self.device)
        self.step = state["step"]
        self.history = state["history"]
        self.best_metric = state["best_metric"]
        self.best_step = state["best_step"]
        self.bad_evaluations = state["bad_evaluations"]
        self.stopped_early = state["stopped_early"]
        self.seconds = state["seconds"]
        logger.info("resuming %s from step %d", self.run_dir, self.step)
        return state["finished"]

    # ---------------------------------------------------------------- final results

    def _finish(self) -> None:
        """Evaluate the best checkpoint on validation and test and write the results."""
        best = self.run_dir / BEST_CHECKPOINT
        if best.exists():
            state = torch.load(best, map_location=self.device, weights_only=True)
            self.model.load_state_dict(state["model"])
        started = time.perf_counter()
        results = {split: self._evaluate(split) for split in ("valid", "test")}
        self.seconds["evaluation"] += time.perf_counter() - started

        for split, result in results.items():
            _atomic_write(
                self.run_dir / f"per_user_{split}.parquet",
                lambda p, frame=result.per_user: frame.to_parquet(p, index=False),
            )
        columns = ["step", "seconds"] if not self.history else None
        _atomic_write(
            self.run_dir / HISTORY_FILE,
            lambda p: pd.DataFrame(self.history, columns=columns).to_csv(p, index=False),
        )
        self.seconds["total"] = self.seconds["training"] + self.seconds["evaluation"]
        summary = {
            "model": self.config.model,
            "dataset": self.dataset.name,
            "config": self.config.to_dict(),
            "config_hash": self.run_dir.name,
            "dataset_fingerprint": (self.dataset.metadata or {}).get("fingerprint"),
            "best_step": self.best_step,
            "steps": self.step,
            "stopped_early": self.stopped_early,
            "selection_metric": SELECTION_METRIC,
            "valid": results["valid"].metrics,
            "test": results["test"].metrics,
            "seconds": self.seconds,
            "world_size": self.processes.world_size,
            "device": str(self.device),
        }
        _write_json(self.run_dir / RESULT_FILE, summary)
        logger.info(
            "%s finished: best step %d, valid %s %.4f, test %s %.4f",
            self.config.model,
            self.best_step,
            SELECTION_METRIC,
            results["valid"].metrics[SELECTION_METRIC],
            SELECTION_METRIC,
            results["test"].metrics[SELECTION_METRIC],
        )


def _torch_rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_torch_rng_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"].cpu())
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


# --------------------------------------------------------------------------------------------
# Command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cmi.train",
        description="Train and evaluate one model; prints the test metrics of the best step.",
    )
    parser.add_argument("--config", help="a JSON or YAML file of TrainConfig fields")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one TrainConfig field (repeatable)",
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    for name, value in TrainConfig.__dataclass_fields__.items():
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            dest=f"field_{name}",
            metavar="VALUE",
            help=f"TrainConfig.{name} (default {value.default!r})",
        )
    return parser


def config_from_arguments(argv: list[str] | None = None) -> TrainConfig:
    """The TrainConfig a command line asks for: defaults < --config file < flags < --set."""
    arguments = _parser().parse_args(argv)
    values: dict[str, Any] = {}
    if arguments.config:
        import yaml

        values.update(yaml.safe_load(Path(arguments.config).read_text()) or {})
    for name in TrainConfig.__dataclass_fields__:
        flag = getattr(arguments, f"field_{name}")
        if flag is not None:
            values[name] = flag
    return TrainConfig.from_overrides(arguments.set, base=values)


def main(argv: list[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    logging.basicConfig(
        level=arguments.log_level.upper(), format="%(asctime)s %(name)s %(message)s"
    )
    try:
        config = config_from_arguments(argv)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    result = train(config)
    if int(os.environ.get("RANK", "0")) == 0:
        summary = {
            "run_dir": str(result.run_dir),
            "best_step": result.best_step,
            "test": result.test,
        }
        print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
