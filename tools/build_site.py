"""Render the executed lessons and the exercises (without answers) to a static HTML site.

    python tools/build_site.py [OUT_DIR]        (what `make site` runs; default _site/)

Layout: OUT/index.html (contents in lesson order), OUT/notebooks/NN_topic.html and
OUT/exercises/NN_topic.html, each with a bar of previous / contents / next links. Links between
notebooks (``01_x.ipynb``, ``../exercises/01_x.ipynb``) are rewritten to the .html pages, and
figures are embedded in the pages, so the folder can be published as it is (GitHub Pages).
"""

from __future__ import annotations

import html
import json
import re
import shutil
import sys
from pathlib import Path

import nbformat
from nbconvert import HTMLExporter

ROOT = Path(__file__).resolve().parent.parent
STYLE = """<style>
.course-nav{position:sticky;top:0;z-index:10;display:flex;justify-content:space-between;gap:1em;
  padding:.5em 1em;background:#f5f7fa;border-bottom:1px solid #d0d7de;font:14px system-ui,sans-serif}
.course-nav a{text-decoration:none;color:#0b5cad}
</style>"""


def title_of(path: Path) -> str:
    """The notebook's first Markdown heading, without the leading '#'."""
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            m = re.search(r"^#\s+(.+)$", "".join(cell["source"]), re.M)
            if m:
                return m.group(1).strip()
    return path.stem


def nav_bar(prev: tuple[str, str] | None, nxt: tuple[str, str] | None, home: str) -> str:
    left = f'<a href="{prev[0]}">&larr; {html.escape(prev[1])}</a>' if prev else "<span></span>"
    right = f'<a href="{nxt[0]}">{html.escape(nxt[1])} &rarr;</a>' if nxt else "<span></span>"
    return f'<nav class="course-nav">{left}<a href="{home}">Contents</a>{right}</nav>'


def render(path: Path, nav: str) -> str:
    body, _ = HTMLExporter(template_name="lab").from_notebook_node(nbformat.read(path, as_version=4))
    to_html = lambda m: f'href="{m.group(1)}.html{m.group(2) or ""}"'
    body = re.sub(r'href="([^":]+?)\.ipynb(#[^"]*)?"', to_html, body)
    body = body.replace("</head>", STYLE + "</head>", 1)
    m = re.search(r"<body[^>]*>", body)
    return body[: m.end()] + nav + body[m.end():]


def build(out: Path) -> list[Path]:
    """Write the site into ``out`` (replacing it); return the pages written."""
    lessons = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    exercises = {p.stem: p for p in sorted((ROOT / "exercises").glob("[0-9][0-9]_*.ipynb"))}
    if out.exists():
        shutil.rmtree(out)
    (out / "notebooks").mkdir(parents=True)
    (out / "exercises").mkdir()
    written = []
    titles = {p.stem: title_of(p) for p in lessons}
    for k, path in enumerate(lessons):
        prev = (f"{lessons[k - 1].stem}.html", titles[lessons[k - 1].stem]) if k else None
        nxt = (f"{lessons[k + 1].stem}.html", titles[lessons[k + 1].stem]) if k + 1 < len(lessons) else None
        page = out / "notebooks" / f"{path.stem}.html"
        page.write_text(render(path, nav_bar(prev, nxt, "../index.html")))
        written.append(page)
    for stem, path in exercises.items():
        lesson = (f"../notebooks/{stem}.html", titles[stem]) if stem in titles else None
        page = out / "exercises" / f"{stem}.html"
        page.write_text(render(path, nav_bar(lesson, None, "../index.html")))
        written.append(page)

    rows = []
    for path in lessons:
        ex = f' &middot; <a href="exercises/{path.stem}.html">exercise</a>' if path.stem in exercises else ""
        rows.append(f'<li><a href="notebooks/{path.stem}.html">{html.escape(titles[path.stem])}</a>{ex}</li>')
    index = out / "index.html"
    index.write_text(f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>The LSTM course</title>{STYLE}
<style>body{{max-width:46em;margin:2em auto;font:16px/1.5 system-ui,sans-serif;padding:0 1em}}
ul.lessons{{list-style:none;padding:0}} ul.lessons li{{margin:.4em 0}}</style></head>
<body><h1>The LSTM course</h1>
<p>From why plain RNNs forget to how the LSTM's gates fix it, the stacked, bidirectional, CNN-LSTM and
ConvLSTM variants, their applications, and the kernels that make them fast. Each lesson is shown
executed; each exercise without its answers (run it in Jupyter to use the instant checks).</p>
<ul class="lessons">
{chr(10).join(rows)}
</ul></body></html>
""")
    return [index, *written]


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "_site"
    pages = build(target)
    print(f"wrote {len(pages)} pages to {target}")
