"""Binder and Colab links come from one setting ([tool.lstmkit] repository in pyproject.toml)
and stay in step with it: `make links` writes them, and this test fails when they are stale."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import course_links as links  # noqa: E402

REPO = "https://github.com/owner/lstm-course"


def test_readme_and_first_cells_match_the_configured_address():
    assert links.update(ROOT, check=True) == [], "run `make links`"


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    for name in ("README.md", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    for folder in ("notebooks", "solutions"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    return tmp_path


def _set_repository(root: Path, repo: str) -> None:
    path = root / "pyproject.toml"
    text = path.read_text()
    start = text.index("[tool.lstmkit]")
    key = text.index("repository = ", start)
    end = text.index("\n", key)
    path.write_text(text[:key] + f'repository = "{repo}"' + text[end:])


def test_setting_the_address_writes_every_link_and_unsetting_removes_them(copy):
    before = {p: nbformat.read(p, as_version=4).cells[0].source for p in links.notebooks(copy)}
    readme_before = (copy / "README.md").read_text()
    _set_repository(copy, REPO)
    changed = links.update(copy)
    assert "README.md" in changed and len(changed) == 1 + len(before)
    readme = (copy / "README.md").read_text()
    assert "https://mybinder.org/v2/gh/owner/lstm-course/HEAD?urlpath=lab/tree/notebooks" in readme
    colab = "https://colab.research.google.com/github/owner/lstm-course/blob/main/notebooks/"
    for lesson in links.lessons(copy):
        assert f"{colab}{lesson.name}" in readme
    for path, old in before.items():
        source = nbformat.read(path, as_version=4).cells[0].source
        assert source == links.colab_lines(REPO) + old
        assert f'%pip install --quiet "lstmkit @ git+{REPO}"' in source
    assert links.update(copy) == []  # a second run has nothing to do
    _set_repository(copy, "")
    links.update(copy)
    assert (copy / "README.md").read_text() == readme_before
    assert {p: nbformat.read(p, as_version=4).cells[0].source for p in before} == before


class _Shell:
    def __init__(self):
        self.magics = []

    def run_line_magic(self, name, line, _stack_depth=1):
        self.magics.append((name, line))


@pytest.mark.parametrize("on_colab", [False, True])
def test_colab_lines_install_only_on_colab(monkeypatch, on_colab):
    from IPython.core.inputtransformer2 import TransformerManager

    code = TransformerManager().transform_cell(links.colab_lines(REPO))
    shell = _Shell()
    if on_colab:
        monkeypatch.setitem(sys.modules, "google.colab", object())
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    exec(code, {"get_ipython": lambda: shell})
    assert shell.magics == ([("pip", f'install --quiet "lstmkit @ git+{REPO}"')] if on_colab else [])


def test_an_address_that_is_not_a_github_repository_is_refused(copy):
    _set_repository(copy, "github.com/owner")
    with pytest.raises(ValueError, match="https://github.com/OWNER/NAME"):
        links.repository(copy)
