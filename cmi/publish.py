"""Publish the built book: push `_build/html` to the `gh-pages` branch of a git remote.

`make publish` calls this after `make book`. The branch holds only the site, in one commit
that replaces the previous one, with a `.nojekyll` file so GitHub Pages serves folders that
start with an underscore.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent


class PublishError(RuntimeError):
    """The site is missing or git refused the push."""


def _git(args: list[str], cwd: Path) -> str:
    completed = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if completed.returncode != 0:
        raise PublishError(f"git {' '.join(args)} failed: {completed.stderr.strip()}")
    return completed.stdout.strip()


def resolve_remote(remote: str, repo: Path = REPO_ROOT) -> str:
    """A remote's URL when `remote` names one of the repository's remotes, else `remote`."""
    completed = subprocess.run(
        ["git", "remote", "get-url", remote], cwd=repo, capture_output=True, text=True
    )
    return completed.stdout.strip() if completed.returncode == 0 else remote


def publish(
    html_dir: Path = REPO_ROOT / "_build" / "html",
    remote: str = "origin",
    branch: str = "gh-pages",
    message: str = "Publish the book",
) -> str:
    """Force-push the contents of `html_dir` as the single commit of `branch` on `remote`."""
    html_dir = Path(html_dir)
    if not (html_dir / "index.html").exists():
        raise PublishError(f"{html_dir}/index.html not found: build the book first (make book)")
    url = resolve_remote(remote)
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "site"
        shutil.copytree(html_dir, site)
        (site / ".nojekyll").touch()
        _git(["init", "-q", "-b", branch], site)
        _git(["add", "-A"], site)
        _git(
            ["-c", "user.name=cmi-study", "-c", "user.email=cmi-study@localhost"]
            + ["commit", "-q", "-m", message],
            site,
        )
        _git(["push", "-q", "--force", url, f"{branch}:{branch}"], site)
        commit = _git(["rev-parse", "HEAD"], site)
    logger.info("published %s to %s (%s)", html_dir, url, branch)
    return commit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cmi.publish", description=__doc__)
    parser.add_argument("--remote", default="origin", help="a remote name or a URL / path")
    parser.add_argument("--branch", default="gh-pages")
    parser.add_argument("--html", type=Path, default=REPO_ROOT / "_build" / "html")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        commit = publish(args.html, args.remote, args.branch)
    except PublishError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"published {commit[:10]} to {args.remote} {args.branch}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
