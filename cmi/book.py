"""Execute the book's notebooks with papermill and build the Jupyter Book.

`python -m cmi.book --profile cpu --dataset synthetic` runs every chapter notebook that exists
under `notebooks/`, in dependency order, with the parameters of a profile (`cmi/profiles/*.yml`),
writes the executed copies to `book/chapters/`, writes the reproducibility page, and then runs
`jupyter-book build` with warnings as errors. A failing notebook stops the batch with the
notebook, the cell and the error, and the book is not built.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import nbformat
import papermill
import yaml
from papermill.exceptions import PapermillExecutionError

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
PROFILE_DIR = Path(__file__).resolve().parent / "profiles"
KERNEL_NAME = "python3"


@dataclass(frozen=True)
class Chapter:
    """One notebook of the book and the chapters whose outputs it reads."""

    name: str
    depends_on: tuple[str, ...] = ()


CHAPTERS = (
    Chapter("01_data"),
    Chapter("02_model"),
    Chapter("03_training", depends_on=("01_data",)),
    Chapter("04_ablations", depends_on=("03_training",)),
    Chapter("05_interests", depends_on=("04_ablations",)),
)


class BookError(RuntimeError):
    """A problem the runner reports in one message: bad parameters or a failed notebook."""


@dataclass
class Execution:
    """What happened to one notebook in a batch."""

    chapter: str
    status: str = "pending"  # pending, ok, failed, skipped
    seconds: float = 0.0
    parameters: dict[str, Any] = field(default_factory=dict)
    error: str = ""


def load_profile(name_or_path: str) -> dict[str, Any]:
    """Read a profile: `{"common": {...}, "notebooks": {chapter: {...}}}`."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PROFILE_DIR / f"{name_or_path}.yml"
    if not path.exists():
        known = sorted(p.stem for p in PROFILE_DIR.glob("*.yml"))
        raise BookError(f"profile {name_or_path!r} not found: expected one of {known} or a file")
    profile = yaml.safe_load(path.read_text()) or {}
    unknown = set(profile) - {"common", "notebooks"}
    if unknown:
        raise BookError(f"profile {path}: unknown sections {sorted(unknown)}")
    profile.setdefault("common", {})
    profile.setdefault("notebooks", {})
    profile["path"] = str(path)
    profile["name"] = path.stem
    return profile


def parse_assignment(text: str) -> tuple[str, Any]:
    """`name=value` with the value read as YAML (numbers, lists, booleans, strings)."""
    if "=" not in text:
        raise BookError(f"--set expects name=value, got {text!r}")
    name, raw = text.split("=", 1)
    return name.strip(), yaml.safe_load(raw) if raw.strip() else ""


def declared_parameters(notebook: Path) -> dict[str, Any]:
    """The names and defaults of a notebook's `parameters` cell."""
    inspected = papermill.inspect_notebook(str(notebook))
    return {name: info["default"] for name, info in inspected.items()}


def resolve_parameters(
    chapters: list[Chapter],
    notebook_dir: Path,
    profile: dict[str, Any],
    overrides: dict[str, Any],
    known_chapters: list[Chapter] | None = None,
) -> dict[str, dict[str, Any]]:
    """Each chapter's parameters: profile common values, then its own, then the overrides.

    A name that no notebook declares (among `known_chapters`, by default `chapters`), or a
    chapter section naming a parameter its notebook lacks, is an error rather than the
    warning papermill would give.
    """
    known = known_chapters or chapters
    declared = {c.name: declared_parameters(notebook_dir / f"{c.name}.ipynb") for c in known}
    all_declared = set().union(*declared.values()) if declared else set()
    for source, values in [("profile common section", profile["common"]), ("--set", overrides)]:
        unknown = sorted(set(values) - all_declared)
        if unknown:
            raise BookError(
                f"unknown parameter(s) {unknown} in {source}: no notebook declares them; "
                f"declared parameters are {sorted(all_declared)}"
            )
    for chapter_name, values in profile["notebooks"].items():
        if chapter_name not in declared:
            continue
        unknown = sorted(set(values) - set(declared[chapter_name]))
        if unknown:
            raise BookError(
                f"unknown parameter(s) {unknown} for notebook {chapter_name} in profile "
                f"{profile['name']}: it declares {sorted(declared[chapter_name])}"
            )
    resolved = {}
    for chapter in chapters:  # only the chapters that run get parameters
        names = declared[chapter.name]
        merged = {k: v for k, v in profile["common"].items() if k in names}
        merged.update(profile["notebooks"].get(chapter.name, {}))
        merged.update({k: v for k, v in overrides.items() if k in names})
        resolved[chapter.name] = merged
    return resolved


def _mark_parameter_cells(path: Path) -> None:
    """Hide the parameter cells: the defaults are superseded, the injected values fold away."""
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if "parameters" in tags and "remove-cell" not in tags:
            tags.append("remove-cell")
        if "injected-parameters" in tags and "hide-cell" not in tags:
            tags.append("hide-cell")
        if tags:
            cell.setdefault("metadata", {})["tags"] = tags
    nbformat.write(notebook, path)


def execute_chapter(
    chapter: Chapter, notebook_dir: Path, output_dir: Path, parameters: dict[str, Any], cwd: Path
) -> Execution:
    """Run one notebook; the executed copy replaces the old one only when it succeeded."""
    source = notebook_dir / f"{chapter.name}.ipynb"
    target = output_dir / f"{chapter.name}.ipynb"
    partial = output_dir / f".{chapter.name}.partial.ipynb"
    execution = Execution(chapter.name, parameters=parameters)
    start = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(source),
            str(partial),
            parameters=parameters,
            kernel_name=KERNEL_NAME,
            cwd=str(cwd),
            progress_bar=False,
        )
    except PapermillExecutionError as error:
        execution.status = "failed"
        first_line = ((error.source or "").strip().splitlines() or [""])[0]
        execution.error = (
            f"notebook {source} failed in cell {error.cell_index} of the executed copy "
            f"(execution count {error.exec_count}, starting {first_line!r})"
            f": {error.ename}: {error.evalue}"
        )
        failed_copy = output_dir / f".{chapter.name}.failed.ipynb"
        if partial.exists():
            os.replace(partial, failed_copy)
        target.unlink(missing_ok=True)  # never build the book from a stale copy
        return execution
    finally:
        execution.seconds = time.perf_counter() - start
    _mark_parameter_cells(partial)
    os.replace(partial, target)
    execution.status = "ok"
    return execution


def run_batch(
    chapters: list[Chapter],
    notebook_dir: Path,
    output_dir: Path,
    parameters: dict[str, dict[str, Any]],
    cwd: Path,
    jobs: int = 1,
) -> list[Execution]:
    """Execute chapters in dependency order, up to `jobs` at a time; stop at the first failure."""
    output_dir.mkdir(parents=True, exist_ok=True)
    names = {c.name for c in chapters}
    pending = {c.name: c for c in chapters}
    finished: dict[str, Execution] = {}
    running: dict[concurrent.futures.Future, str] = {}
    failed = False
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        while (pending and not failed) or running:
            ready = [
                c
                for c in pending.values()
                if all(d in finished or d not in names for d in c.depends_on)
            ]
            while ready and len(running) < max(1, jobs) and not failed:
                chapter = ready.pop(0)
                del pending[chapter.name]
                logger.info("executing %s", chapter.name)
                future = pool.submit(
                    execute_chapter,
                    chapter,
                    notebook_dir,
                    output_dir,
                    parameters[chapter.name],
                    cwd,
                )
                running[future] = chapter.name
            done, _ = concurrent.futures.wait(
                running, return_when=concurrent.futures.FIRST_COMPLETED
            )
            for future in done:
                execution = future.result()
                del running[future]
                finished[execution.chapter] = execution
                logger.info(
                    "%s: %s in %.1f s", execution.chapter, execution.status, execution.seconds
                )
                failed = failed or execution.status == "failed"
    for name in pending:
        finished[name] = Execution(name, status="skipped")
    return [finished[c.name] for c in chapters]


def _package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def write_reproducibility_page(
    path: Path, profile: dict[str, Any], executions: list[Execution], dataset: str
) -> None:
    """The book's record of how it was made: versions, hardware, profile, execution table."""
    import torch

    packages = ["torch", "numpy", "pandas", "papermill", "jupyter-book", "sphinx", "myst-nb"]
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    lines = [
        "# Reproducibility",
        "",
        "This page is written by the runner (`python -m cmi.book`) each time the book is built.",
        "",
        "## Environment",
        "",
        "| item | value |",
        "| --- | --- |",
        f"| built | {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')} |",
        f"| python | {platform.python_version()} |",
        f"| platform | {platform.platform()} |",
        f"| CPU cores | {os.cpu_count()} |",
        f"| GPU | {gpu} |",
        f"| profile | `{profile['name']}` |",
        f"| dataset | `{dataset}` |",
    ]
    lines += [f"| {name} | {_package_version(name)} |" for name in packages]
    lines += [
        "",
        "## Execution",
        "",
        "| notebook | status | seconds | parameters |",
        "| --- | --- | ---: | --- |",
    ]
    for execution in executions:
        shown = ", ".join(f"{k}={v}" for k, v in sorted(execution.parameters.items()))
        lines.append(
            f"| {execution.chapter} | {execution.status} | {execution.seconds:.1f} | {shown} |"
        )
    total = sum(e.seconds for e in executions)
    lines += ["", f"Total notebook time: {total:.0f} s.", ""]
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines))
    os.replace(tmp, path)


def build_book(book_root: Path) -> None:
    """`jupyter-book build` with warnings as errors; a failure raises BookError."""
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    command = [str(jupyter_book), "build", str(book_root), "-W", "-n", "--keep-going"]
    logger.info("building: %s", " ".join(command))
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        tail = "\n".join((completed.stdout + completed.stderr).splitlines()[-40:])
        raise BookError(f"jupyter-book build failed (exit {completed.returncode}):\n{tail}")


def run(
    profile_name: str = "cpu",
    dataset: str = "synthetic",
    data_root: str | None = None,
    overrides: dict[str, Any] | None = None,
    only: list[str] | None = None,
    book_root: Path = REPO_ROOT,
    notebook_dir: Path = REPO_ROOT / "notebooks",
    jobs: int | None = None,
    build: bool = True,
) -> list[Execution]:
    """Execute the chapters and build the book; the entry point behind `make book`."""
    profile = load_profile(profile_name)
    chapters = [c for c in CHAPTERS if (notebook_dir / f"{c.name}.ipynb").exists()]
    existing = list(chapters)
    if only:
        unknown = sorted(set(only) - {c.name for c in chapters})
        if unknown:
            raise BookError(f"--only names unknown notebooks {unknown}")
        chapters = [c for c in chapters if c.name in only]
    overrides = dict(overrides or {})
    overrides["dataset"] = dataset
    if data_root:
        overrides["data_root"] = str(Path(data_root).resolve())
    output_dir = book_root / "book" / "chapters"
    overrides.setdefault("results_dir", str((output_dir / "results").resolve()))
    parameters = resolve_parameters(chapters, notebook_dir, profile, overrides, existing)
    if jobs is None:
        jobs = _default_jobs(parameters)
    _assign_gpus(parameters, jobs)

    executions = run_batch(chapters, notebook_dir, output_dir, parameters, REPO_ROOT, jobs)
    write_reproducibility_page(
        book_root / "book" / "reproducibility.md", profile, executions, dataset
    )
    failures = [e for e in executions if e.status == "failed"]
    if failures:
        raise BookError("; ".join(e.error for e in failures) + " (the book was not built)")
    if build:
        build_book(book_root)
    return executions


def _default_jobs(parameters: dict[str, dict[str, Any]]) -> int:
    """One notebook at a time on CPU; one per GPU when the profile asks for CUDA."""
    import torch

    wants_cuda = any(str(p.get("device", "")).startswith("cuda") for p in parameters.values())
    if wants_cuda and torch.cuda.is_available():
        return max(1, torch.cuda.device_count())
    return 1


def _assign_gpus(parameters: dict[str, dict[str, Any]], jobs: int) -> None:
    """With several GPUs, give each chapter its own device, round robin."""
    if jobs <= 1:
        return
    cuda_chapters = [n for n, p in parameters.items() if str(p.get("device")) == "cuda"]
    for index, name in enumerate(cuda_chapters):
        parameters[name]["device"] = f"cuda:{index % jobs}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cmi.book", description=__doc__)
    parser.add_argument("--profile", default="cpu", help="smoke, cpu, gpu or a YAML file")
    parser.add_argument("--dataset", default="synthetic", help="synthetic, kuairand or wechat")
    parser.add_argument("--data-root", default=None, help="folder of the raw files")
    parser.add_argument(
        "--set", dest="assignments", action="append", default=[], metavar="NAME=VALUE"
    )
    parser.add_argument("--only", nargs="+", default=None, help="run only these notebooks")
    parser.add_argument("--jobs", type=int, default=None, help="notebooks run at once")
    parser.add_argument("--book-root", type=Path, default=REPO_ROOT)
    parser.add_argument("--no-build", action="store_true", help="execute notebooks only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        overrides = dict(parse_assignment(a) for a in args.assignments)
        run(
            args.profile,
            args.dataset,
            args.data_root,
            overrides,
            only=args.only,
            book_root=args.book_root,
            jobs=args.jobs,
            build=not args.no_build,
        )
    except BookError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    html = args.book_root / "_build" / "html" / "index.html"
    if not args.no_build:
        print(f"book built: {html}")
    return 0


def copy_book_sources(target: Path) -> None:
    """Copy the book's hand-written sources to `target`, for building it elsewhere (tests)."""
    target.mkdir(parents=True, exist_ok=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(REPO_ROOT / name, target / name)
    shutil.copytree(
        REPO_ROOT / "book",
        target / "book",
        dirs_exist_ok=True,
        ignore=shutil.ignore_patterns("chapters", "reproducibility.md"),
    )


if __name__ == "__main__":
    sys.exit(main())
