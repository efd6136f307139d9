"""Binder and Colab links, built from the repository's public address kept in ONE place:
``repository`` under ``[tool.lstmkit]`` in pyproject.toml (https://github.com/OWNER/NAME).

    python tools/course_links.py           (what `make links` runs) rewrites
      - README.md between the markers <!-- cloud:begin --> and <!-- cloud:end -->: a Binder link
        for the whole course and a Colab link for each lesson;
      - the first cell of every lesson and solution notebook: the lines that install lstmkit
        when the notebook runs on Colab (a no-op anywhere else). Exercises take their first
        cell from the solutions, so it then rebuilds them (`lstmkit exercises build`).
    python tools/course_links.py --check   lists what is out of date and exits with 1 if any.

While the address is empty, both are left out: a link to nowhere helps nobody.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import nbformat

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- cloud:begin -->", "<!-- cloud:end -->"
COLAB_HEAD = "# On Google Colab, install lstmkit first (anywhere else these lines do nothing)."
GITHUB = re.compile(r"^https://github\.com/([\w.-]+)/([\w.-]+?)/?$")


def repository(root: Path = ROOT) -> str:
    """The configured address, '' when unset; ValueError unless it is a GitHub repository."""
    config = tomllib.loads((root / "pyproject.toml").read_text())
    repo = config.get("tool", {}).get("lstmkit", {}).get("repository", "").strip()
    if repo and not GITHUB.match(repo):
        raise ValueError("[tool.lstmkit] repository in pyproject.toml must look like "
                         f"https://github.com/OWNER/NAME, got {repo!r}")
    return repo.rstrip("/")


def lessons(root: Path = ROOT) -> list[Path]:
    return sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def readme_section(repo: str, root: Path = ROOT) -> str:
    """The Markdown between the README markers."""
    if not repo:
        return ""
    owner_name = GITHUB.match(repo).group(1, 2)
    binder = f"https://mybinder.org/v2/gh/{'/'.join(owner_name)}/HEAD?urlpath=lab/tree/notebooks"
    colab = f"https://colab.research.google.com/github/{'/'.join(owner_name)}/blob/main"
    rows = [f"| {p.stem[:2]} | [open in Colab]({colab}/notebooks/{p.name}) |" for p in lessons(root)]
    return "\n".join([
        "## Run it in the cloud", "",
        f"[Open the whole course on Binder]({binder}) (JupyterLab with everything installed, from",
        "`environment.yml`; the first start takes a few minutes), or open one lesson on Google",
        "Colab: its first cell installs `lstmkit` there.", "",
        "| # | Colab |", "|---|-------|", *rows, ""])


def colab_lines(repo: str) -> str:
    """The lines a first cell starts with (nothing while the address is unset)."""
    if not repo:
        return ""
    return (f"{COLAB_HEAD}\nimport sys\n\nif \"google.colab\" in sys.modules:\n"
            f"    %pip install --quiet \"lstmkit @ git+{repo}\"\n\n")


def with_colab_lines(source: str, repo: str) -> str:
    """A first cell's source with its Colab lines replaced by the current ones."""
    if source.startswith(COLAB_HEAD):
        source = source.split("%pip install", 1)[1].split("\n", 1)[1].lstrip("\n")
    return colab_lines(repo) + source


def notebooks(root: Path = ROOT) -> list[Path]:
    return lessons(root) + sorted((root / "solutions").glob("[0-9][0-9]_*.ipynb"))


def update(root: Path = ROOT, check: bool = False) -> list[str]:
    """Bring README.md and the notebooks' first cells up to date (or only report, with
    check=True); returns the paths that were (or would be) changed."""
    repo = repository(root)
    changed = []
    readme = (root / "README.md").read_text()
    head, rest = readme.split(BEGIN, 1)
    body, tail = rest.split(END, 1)
    section = readme_section(repo, root)
    if body.strip("\n") != section.strip("\n"):
        changed.append("README.md")
        if not check:
            (root / "README.md").write_text(f"{head}{BEGIN}\n{section}{END}{tail}")
    for path in notebooks(root):
        nb = nbformat.read(path, as_version=4)
        cell = nb.cells[0]
        new = with_colab_lines(cell.source, repo)
        if new != cell.source:
            changed.append(str(path.relative_to(root)))
            if not check:
                cell.source = new
                nbformat.write(nb, path)
    return changed


def main(argv: list[str]) -> int:
    check = "--check" in argv
    changed = update(check=check)
    for path in changed:
        print(("out of date: " if check else "updated: ") + path)
    if check:
        if changed:
            print("run `make links` to rebuild them from [tool.lstmkit] repository in pyproject.toml")
        return 1 if changed else 0
    if any(p.startswith("solutions/") for p in changed):
        subprocess.run([sys.executable, "-m", "lstmkit", "exercises", "build"], cwd=ROOT, check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
