"""The book runner: parameters, failures, the smoke-profile book build, and publishing."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from cmi import book
from cmi.publish import PublishError, publish

REPO_ROOT = Path(__file__).resolve().parent.parent


def _write_notebook(path: Path, parameters: str, body: str) -> None:
    notebook = nbformat.v4.new_notebook()
    parameter_cell = nbformat.v4.new_code_cell(parameters)
    parameter_cell.metadata["tags"] = ["parameters"]
    notebook.cells = [
        nbformat.v4.new_markdown_cell("# A test chapter"),
        parameter_cell,
        nbformat.v4.new_code_cell(body),
    ]
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    notebook.metadata["language_info"] = {"name": "python"}
    nbformat.write(notebook, path)


def test_profiles_load_and_name_known_sections():
    for name in ("smoke", "cpu", "gpu"):
        profile = book.load_profile(name)
        assert profile["name"] == name
        assert "seeds" in profile["common"]
    with pytest.raises(book.BookError, match="profile 'nope' not found"):
        book.load_profile("nope")


def test_parse_assignment_reads_yaml_values():
    assert book.parse_assignment("seeds=[0, 1]") == ("seeds", [0, 1])
    assert book.parse_assignment("max_steps=20") == ("max_steps", 20)
    assert book.parse_assignment("device=cuda") == ("device", "cuda")
    with pytest.raises(book.BookError, match="name=value"):
        book.parse_assignment("seeds")


def test_unknown_parameter_is_an_error(tmp_path):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    _write_notebook(notebooks / "01_data.ipynb", "dataset = 'x'\nresults_dir = ''", "pass")
    profile = {"name": "t", "common": {}, "notebooks": {}}
    chapters = [book.Chapter("01_data")]
    with pytest.raises(book.BookError, match=r"unknown parameter\(s\) \['bogus'\] in --set"):
        book.resolve_parameters(chapters, notebooks, profile, {"bogus": 1})
    profile["notebooks"] = {"01_data": {"typo": 3}}
    with pytest.raises(book.BookError, match=r"\['typo'\] for notebook 01_data"):
        book.resolve_parameters(chapters, notebooks, profile, {})
    profile["notebooks"] = {}
    profile["common"] = {"dataset": "from-profile"}
    resolved = book.resolve_parameters(chapters, notebooks, profile, {"results_dir": "r"})
    assert resolved == {"01_data": {"dataset": "from-profile", "results_dir": "r"}}


def test_cli_reports_unknown_parameter_without_traceback():
    completed = subprocess.run(
        [sys.executable, "-m", "cmi.book", "--profile", "smoke", "--set", "no_such=1"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 2
    assert "no_such" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_failing_notebook_stops_the_batch_and_leaves_no_stale_copy(tmp_path):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    parameters = "dataset = 'x'\nresults_dir = ''"
    _write_notebook(notebooks / "01_data.ipynb", parameters, "raise ValueError('planted failure')")
    _write_notebook(notebooks / "03_training.ipynb", parameters, "print('never runs')")
    book_root = tmp_path / "site"
    stale = book_root / "book" / "chapters" / "01_data.ipynb"
    stale.parent.mkdir(parents=True)
    stale.write_text("{}")

    profile = tmp_path / "tiny.yml"
    profile.write_text("common:\n  dataset: synthetic\nnotebooks: {}\n")

    with pytest.raises(book.BookError) as raised:
        book.run(str(profile), book_root=book_root, notebook_dir=notebooks, build=True)

    message = str(raised.value)
    assert "01_data.ipynb" in message and "cell 3" in message  # after the injected cell
    assert "raise ValueError('planted failure')" in message
    assert "ValueError: planted failure" in message
    assert "not built" in message
    assert not stale.exists()
    assert not (book_root / "book" / "chapters" / "03_training.ipynb").exists()
    assert not (book_root / "_build").exists()
    page = (book_root / "book" / "reproducibility.md").read_text()
    assert "| 01_data | failed |" in page and "| 03_training | skipped |" in page


def test_publish_pushes_the_site_to_a_local_bare_repository(tmp_path):
    html = tmp_path / "html"
    html.mkdir()
    (html / "index.html").write_text("<html>book</html>")
    (html / "_static").mkdir()
    (html / "_static" / "style.css").write_text("body {}")
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)

    first = publish(html, str(remote))
    (html / "index.html").write_text("<html>book, second edition</html>")
    second = publish(html, str(remote))

    assert first != second
    files = subprocess.run(
        ["git", "ls-tree", "-r", "--name-only", "gh-pages"],
        cwd=remote,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert sorted(files) == [".nojekyll", "_static/style.css", "index.html"]
    shown = subprocess.run(
        ["git", "show", "gh-pages:index.html"], cwd=remote, capture_output=True, text=True
    ).stdout
    assert "second edition" in shown
    log = subprocess.run(
        ["git", "rev-list", "--count", "gh-pages"], cwd=remote, capture_output=True, text=True
    ).stdout
    assert log.strip() == "1"  # each publication replaces the branch


def test_publish_without_a_built_site_is_a_clear_error(tmp_path):
    with pytest.raises(PublishError, match="index.html not found"):
        publish(tmp_path / "missing", str(tmp_path / "remote.git"))


def _metric_values(node):
    """Every number stored under a key that names a ranking metric, at any depth."""
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, int | float) and any(
                key.startswith(m) for m in ("recall@", "hit_rate@", "ndcg@")
            ):
                yield key, value
            else:
                yield from _metric_values(value)
    elif isinstance(node, list):
        for value in node:
            yield from _metric_values(value)


@pytest.mark.slow
def test_smoke_book_builds_with_warnings_as_errors(tmp_path):
    """Every notebook runs with the smoke profile, its results are sane, and the book builds."""
    book_root = tmp_path / "site"
    book.copy_book_sources(book_root)
    overrides = {"data_dir": str(tmp_path / "data"), "run_root": str(tmp_path / "runs")}
    executions = book.run("smoke", overrides=overrides, book_root=book_root, build=True)

    assert [e.status for e in executions] == ["ok"] * len(executions)
    assert {e.chapter for e in executions} == {c.name for c in book.CHAPTERS}
    html = book_root / "_build" / "html"
    for chapter in book.CHAPTERS:
        assert (html / "book" / "chapters" / f"{chapter.name}.html").exists()
    assert (html / "book" / "reproducibility.html").exists()

    results_dir = book_root / "book" / "chapters" / "results"
    results = {
        c.name: json.loads((results_dir / f"{c.name}.json").read_text()) for c in book.CHAPTERS
    }
    values = list(_metric_values(results))
    assert values, "no ranking metric was recorded"
    for key, value in values:
        assert math.isnan(value) or 0.0 <= value <= 1.0, (key, value)
    _check_training_results(results["03_training"])
    _check_ablation_results(results["04_ablations"])
    # Runs are reused across chapters: chapter 4's full CMI is chapter 3's CMI, not a retraining.
    assert (
        results["04_ablations"]["run_dirs"]["full CMI"]
        == results["03_training"]["run_dirs"]["cmi"][: len(results["04_ablations"]["seeds"])]
    )
    _check_interest_results(results["05_interests"])


def _check_training_results(training: dict) -> None:
    """Chapter 3: every registered model, every seed, and CMI above Pop on the synthetic world."""
    from cmi.models import MODELS

    assert set(training["summary"]) == set(MODELS)
    assert set(training["paired_tests_recall@50"]) == set(MODELS) - {"cmi"}
    runs = {(run["model"], run["seed"]) for run in training["runs"]}
    assert runs == {(model, seed) for model in MODELS for seed in training["seeds"]}
    mean = {model: row["mean"]["recall@50"] for model, row in training["summary"].items()}
    assert mean["cmi"] > mean["pop"], mean
    oracle = training["oracle"]
    assert oracle is not None  # the smoke book runs on the synthetic world
    assert oracle["recall@50"] >= max(mean.values())  # no model beats the true probabilities


def _check_ablation_results(ablations: dict) -> None:
    """Chapter 4: each setting of the declared grid with each seed; full CMI is chapter 3's CMI."""
    from cmi.study import ablation_settings

    settings = ablation_settings(ablations["grid"])
    assert ablations["settings"] == settings
    runs = {(run["setting"], run["seed"]) for run in ablations["runs"]}
    assert runs == {(name, seed) for name in settings for seed in ablations["seeds"]}
    assert set(ablations["paired_tests_recall@50"]) == set(settings) - {"full CMI"}
    assert set(ablations["verdicts"]) >= {"without L_cl", "without L_orth", "without L_uni"}


def _check_interest_results(interests: dict) -> None:
    """Chapter 5: agreement measures in range and usage shares that add up."""
    for row in interests["agreement"]:
        assert 0.0 <= row["nmi"] <= 1.0 and -1.0 <= row["ari"] <= 1.0
    assert {row["setting"] for row in interests["agreement"]} >= {"full CMI", "without L_orth"}
    for row in interests["usage"]:
        assert 0 <= row["unused categories"] < row["K"]
        assert 1.0 <= row["effective categories (items)"] <= row["K"] + 1e-9
    for name, figures in interests["diversity"].items():
        for metric, value in figures["mean"].items():
            assert 0.0 <= value <= 1.0, (name, metric, value)
