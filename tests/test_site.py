"""`make site`: every lesson and exercise page exists, every local link resolves, figures are
embedded, and no answer from solutions/ reaches the site."""

from __future__ import annotations

import html
import json
import re
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import build_site  # noqa: E402


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    build_site.build(out)
    return out


def test_every_lesson_and_exercise_has_a_page(site):
    for folder in ("notebooks", "exercises"):
        for nb in (ROOT / folder).glob("[0-9][0-9]_*.ipynb"):
            assert (site / folder / f"{nb.stem}.html").is_file(), nb
    index = (site / "index.html").read_text()
    lessons = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    positions = [index.index(f"notebooks/{stem}.html") for stem in lessons]
    assert positions == sorted(positions), "the contents page lists the lessons out of order"


def test_local_links_resolve(site):
    pages = list(site.rglob("*.html"))
    checked = 0
    for page in pages:
        for href in re.findall(r'href="([^"]+)"', page.read_text()):
            url = urlparse(href)
            if url.scheme or href.startswith("#") or not url.path:
                continue
            assert (page.parent / url.path).resolve().is_file(), f"{page.name}: broken link {href}"
            checked += 1
    assert checked > 2 * len(pages)  # at least the previous/contents/next bar on every page


def test_figures_are_embedded_and_pages_link_to_their_neighbours(site):
    page = (site / "notebooks" / "02_lstm_gates_and_cell_state.html").read_text()
    assert len(re.findall(r'<img[^>]+src="data:image/png;base64,', page)) >= 3
    assert 'href="01_rnns_and_vanishing_gradients.html"' in page
    assert 'href="03_vanilla_lstm.html"' in page
    assert 'href="../exercises/02_lstm_gates_and_cell_state.html"' in page


def _text(page: Path) -> str:
    """What a reader sees: tags removed (syntax highlighting splits code into spans), unescaped."""
    return html.unescape(re.sub(r"<[^>]+>", "", page.read_text()))


def test_no_answers_on_the_site(site):
    for sol in (ROOT / "solutions").glob("[0-9][0-9]_*.ipynb"):
        text = _text(site / "exercises" / f"{sol.stem}.html")
        assert "BEGIN SOLUTION" not in text and "raise NotImplementedError()" in text
        sources = ["".join(cell["source"]) for cell in json.loads(sol.read_text())["cells"]]
        given = (ROOT / "exercises" / sol.name).read_text()  # e.g. a docstring may state a line too
        answers = [line.strip() for src in sources
                   for block in re.findall(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", src, re.S)
                   for line in block.splitlines() if len(line.strip()) > 30 and line.strip() not in given]
        assert answers and not any(a in text for a in answers), sol.stem
        # The same test finds code that is on the page: the exercise's own task signatures.
        signatures = [ln.strip() for src in sources for ln in src.splitlines() if ln.startswith("def ")]
        assert signatures and all(sig in text for sig in signatures), sol.stem
