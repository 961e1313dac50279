"""Tests of the training loop: run files, determinism, exact resume, early stopping, NaN stops,
reuse of finished runs, Pop without training, the command line and 2-process DDP on CPU."""

from __future__ import annotations

import json
import os
import socket

import numpy as np
import pandas as pd
import pytest
import torch
import torch.multiprocessing as mp

import cmi.evaluate
import cmi.train
from cmi.config import TrainConfig
from cmi.data import load_dataset
from cmi.models import build_model
from cmi.models.cmi import CMI
from cmi.train import RunResult, TrainingError, train

SMALL = {
    "model": "cmi",
    "dim": 16,
    "n_interests": 4,
    "max_len": 20,
    "batch_size": 32,
    "max_steps": 12,
    "eval_every": 4,
    "patience": 10,
    "seed": 0,
    "device": "cpu",
    "progress": False,
}


@pytest.fixture(scope="module")
def dataset(tiny_dataset):
    """The shared tiny prepared synthetic dataset (tests/conftest.py), loaded."""
    return load_dataset(tiny_dataset)


def small(tmp_path, **changes) -> dict:
    return {**SMALL, "run_root": str(tmp_path / "runs"), **changes}


def comparable(history: pd.DataFrame) -> pd.DataFrame:
    """The history without its wall-clock column."""
    return history.drop(columns=["seconds"])


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory):
    """One uninterrupted run that several tests compare against."""
    return train(small(tmp_path_factory.mktemp("reference")), dataset)


def test_a_run_writes_its_files_and_reports_the_best_evaluation(dataset, reference):
    run_dir = reference.run_dir
    for name in ("config.json", "history.csv", "last.pt", "best.pt", "result.json"):
        assert (run_dir / name).exists(), name
    assert run_dir.parent.name == "cmi" and run_dir.parent.parent.name == dataset.name
    assert run_dir.name == reference.config.config_hash(_fingerprint(run_dir))
    assert TrainConfig.from_dict(json.loads((run_dir / "config.json").read_text())) == (
        reference.config
    )

    history = reference.history
    assert history["step"].tolist() == [4, 8, 12]
    for column in ("loss_rec", "loss_cl", "loss_orth", "loss_uni", "loss_total"):
        assert np.isfinite(history[column]).all()
    # The total is the weighted sum of the averaged terms (linear, so averaging commutes).
    weighted = (
        history["loss_rec"]
        + 0.05 * history["loss_cl"]
        + 10.0 * history["loss_orth"]
        + 1.0 * history["loss_uni"]
    )
    np.testing.assert_allclose(history["loss_total"], weighted, rtol=1e-5)

    # The best step is the first maximum of validation Recall@50, and the final validation of
    # the best checkpoint reproduces that evaluation.
    best_row = history["valid_recall@50"].idxmax()
    assert reference.best_step == history.loc[best_row, "step"]
    assert reference.valid["recall@50"] == pytest.approx(history.loc[best_row, "valid_recall@50"])
    assert set(reference.test) >= {"recall@50", "hit_rate@20", "ndcg@10"}

    per_user = reference.per_user("test")
    assert len(per_user) == reference.test["n_users"]
    assert per_user["recall@50"].mean() == pytest.approx(reference.test["recall@50"])
    assert reference.seconds["sampling"] < reference.seconds["training"]


def _fingerprint(run_dir) -> str:
    return json.loads((run_dir / "result.json").read_text())["dataset_fingerprint"] or ""


def test_same_seed_gives_identical_runs_and_another_seed_does_not(dataset, reference, tmp_path):
    again = train(small(tmp_path), dataset)
    pd.testing.assert_frame_equal(comparable(again.history), comparable(reference.history))
    assert again.test == reference.test
    other = train(small(tmp_path, seed=1), dataset)
    assert not np.allclose(other.history["loss_rec"], reference.history["loss_rec"])


class Interrupted(Exception):
    pass


def test_a_run_interrupted_after_an_evaluation_resumes_to_the_same_result(
    dataset, reference, tmp_path
):
    def stop_after_second_evaluation(row):
        if row["step"] == 8:
            raise Interrupted

    with pytest.raises(Interrupted):
        train(small(tmp_path), dataset, on_evaluation=stop_after_second_evaluation)
    run_dir = tmp_path / "runs" / dataset.name / "cmi" / reference.run_dir.name
    assert not (run_dir / "result.json").exists()
    assert len(pd.read_csv(run_dir / "history.csv")) == 2

    resumed = train(small(tmp_path), dataset)
    assert not resumed.reused
    pd.testing.assert_frame_equal(comparable(resumed.history), comparable(reference.history))
    assert resumed.test == reference.test and resumed.best_step == reference.best_step


def test_a_run_interrupted_between_evaluations_resumes_to_the_same_result(
    dataset, reference, tmp_path, monkeypatch
):
    calls = {"n": 0}
    original = CMI.loss_terms

    def crash_at_step_ten(self, batch):
        calls["n"] += 1
        if calls["n"] == 10:
            raise Interrupted
        return original(self, batch)

    monkeypatch.setattr(CMI, "loss_terms", crash_at_step_ten)
    with pytest.raises(Interrupted):
        train(small(tmp_path), dataset)
    monkeypatch.setattr(CMI, "loss_terms", original)

    resumed = train(small(tmp_path), dataset)
    pd.testing.assert_frame_equal(comparable(resumed.history), comparable(reference.history))
    assert resumed.test == reference.test


def test_a_finished_run_is_reused_without_training(dataset, reference, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("a finished run must not train again")

    monkeypatch.setattr(cmi.train, "_Trainer", no_training)
    config = reference.config.replace(progress=True)  # a field outside the hash
    again = train(config, dataset)
    assert again.reused and again.run_dir == reference.run_dir
    assert again.test == reference.test
    pd.testing.assert_frame_equal(again.history, reference.history)
    assert RunResult.load(reference.run_dir).best_step == reference.best_step


def test_a_nan_loss_stops_the_run_naming_the_step_and_the_term(dataset, tmp_path, monkeypatch):
    calls = {"n": 0}
    original = CMI.loss_terms

    def nan_contrastive_at_step_three(self, batch):
        calls["n"] += 1
        terms = original(self, batch)
        if calls["n"] == 3:
            terms["cl"] = terms["cl"] * float("nan")
        return terms

    monkeypatch.setattr(CMI, "loss_terms", nan_contrastive_at_step_three)
    with pytest.raises(TrainingError, match=r"loss term 'cl' is nan at step 3") as error:
        train(small(tmp_path), dataset)
    assert isinstance(error.value, FloatingPointError)


def test_early_stopping_follows_validation_recall_with_patience(dataset, tmp_path, monkeypatch):
    scripted = iter([0.10, 0.30, 0.20, 0.30, 0.25])  # no gain after step 8 (strictly better)
    real_evaluate = cmi.evaluate.evaluate

    def scripted_evaluate(model, data, split="valid", **kwargs):
        result = real_evaluate(model, data, split=split, **kwargs)
        value = next(scripted, None)
        if value is not None:
            result.metrics["recall@50"] = value
        return result

    monkeypatch.setattr(cmi.evaluate, "evaluate", scripted_evaluate)
    result = train(small(tmp_path, max_steps=40, patience=3), dataset)
    assert result.history["step"].tolist() == [4, 8, 12, 16, 20]
    assert result.history["valid_recall@50"].tolist() == [0.10, 0.30, 0.20, 0.30, 0.25]
    assert result.best_step == 8 and result.steps == 20 and result.stopped_early


def test_pop_is_evaluated_without_training(dataset, tmp_path):
    result = train(small(tmp_path, model="pop"), dataset)
    assert result.best_step == 0 and result.steps == 0 and result.history.empty
    assert not (result.run_dir / "last.pt").exists()
    model = build_model("pop", dataset.n_items, dataset.item_popularity_train)
    direct = cmi.evaluate.evaluate(model, dataset, split="test", max_len=SMALL["max_len"])
    assert result.test == pytest.approx(direct.metrics)


def test_command_line_flags_and_sets_build_the_config():
    config = cmi.train.config_from_arguments(
        ["--dataset", "data/x", "--model", "sasrec", "--max-steps", "7", "--set", "n_heads=2"]
    )
    assert (config.dataset, config.model, config.max_steps, config.n_heads) == (
        "data/x",
        "sasrec",
        7,
        2,
    )
    assert cmi.train.main(["--dataset", "data/x", "--set", "lr=-1"]) == 2


def test_command_line_trains_and_prints_the_test_metrics(tiny_dataset, tmp_path, capsys):
    arguments = ["--dataset", str(tiny_dataset), "--model", "youtube_dnn", "--max-steps", "3"]
    arguments += ["--set", f"run_root={tmp_path}", "--set", "progress=false", "--dim", "8"]
    assert cmi.train.main(arguments) == 0
    printed = json.loads(capsys.readouterr().out)
    result = RunResult.load(printed["run_dir"])
    assert printed["test"] == result.test and result.steps == 3
    assert result.config.model == "youtube_dnn" and result.config.dim == 8


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ddp_worker(rank, world_size, port, dataset, config, queue):
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE=str(world_size),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    trained = []
    original_train = cmi.train._Trainer._train

    def train_and_keep_weights(self):
        original_train(self)
        trained.append(torch.cat([p.detach().flatten() for p in self.model.parameters()]))

    cmi.train._Trainer._train = train_and_keep_weights
    result = train(config, dataset)
    weights = trained[0]
    queue.put((rank, result.steps, result.test["recall@50"], weights.numpy()))


def test_two_process_gloo_ddp_trains_in_step_and_finishes(dataset, tmp_path):
    config = small(tmp_path, max_steps=4, eval_every=2)
    queue = mp.get_context("spawn").SimpleQueue()
    mp.spawn(_ddp_worker, args=(2, _free_port(), dataset, config, queue), nprocs=2)
    reports = sorted(queue.get() for _ in range(2))
    assert [r[0] for r in reports] == [0, 1]
    assert reports[0][1] == reports[1][1] == 4
    assert reports[0][2] == reports[1][2]  # both read process 0's result
    # Gradients are averaged across processes, so the two copies stay identical although
    # each process trained on different users.
    np.testing.assert_array_equal(reports[0][3], reports[1][3])
    result = train(config, dataset)  # the finished run, read back
    assert result.reused and result.history["step"].tolist() == [2, 4]
