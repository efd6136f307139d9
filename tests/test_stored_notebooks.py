"""The lessons and solutions are stored executed, to be read before anything runs (on GitHub,
on the course site): what they show must be what a finished run shows."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")) + sorted(
    (ROOT / "solutions").glob("[0-9][0-9]_*.ipynb"))
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
# tqdm's bar as a widget's text fallback, or as text: "training:  40%|####  | 200/500 [...]"
PROGRESS_BAR = re.compile(r"\d+%\|.*\| *\d+/\d+")
MAX_OUTPUT_BYTES = 200_000


def _outputs(nb: dict):
    for i, cell in enumerate(nb["cells"]):
        for out in cell.get("outputs", []):
            yield i, out


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_stored_outputs_are_those_of_a_clean_finished_run(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(c.get("execution_count") for c in code), "stored unexecuted: execute it top to bottom"
    for i, out in _outputs(nb):
        where = f"{path.name}, cell {i}"
        assert out["output_type"] != "error", f"{where}: a stored error"
        assert out.get("name") != "stderr", f"{where}: stored stderr: {''.join(out.get('text', ''))[:200]}"
        text = "".join(out.get("text", "")) + "".join(out.get("data", {}).get("text/plain", ""))
        assert not PROGRESS_BAR.search(text), f"{where}: a stored progress bar (execute with TQDM_DISABLE=1)"
        assert len(json.dumps(out)) <= MAX_OUTPUT_BYTES, f"{where}: an output over {MAX_OUTPUT_BYTES} bytes"
    views = {out["data"][WIDGET_VIEW]["model_id"] for _, out in _outputs(nb)
             if WIDGET_VIEW in out.get("data", {})}
    widgets = nb["metadata"].get("widgets", {})
    state = widgets.get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    assert views <= set(state), f"{path.name}: widgets shown without their stored state"
    if not views:
        assert not state, f"{path.name}: stored widget state that no output shows"


def test_readme_and_instructor_guide_name_each_lesson_by_its_title_and_time():
    """The lesson tables say what each lesson's first cell says: its title and its time."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    guide = (ROOT / "docs" / "instructor_guide.md").read_text(encoding="utf-8")
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        nb = json.loads(path.read_text(encoding="utf-8"))
        head = "".join(next(c for c in nb["cells"] if c["cell_type"] == "markdown")["source"])
        number, title = re.match(r"# (\d\d) · (.+)", head).groups()
        minutes = re.search(r"\*\*Time:\*\* about (\d+) minutes", head).group(1)
        row = rf"^\| {number} \| \[{re.escape(title)}\]\(notebooks/{path.name}\) \|.*\| {minutes} min \|$"
        assert re.search(row, readme, re.M), f"README.md: lesson {number} should be {title!r}, {minutes} min"
        assert re.search(rf"^\| {number} \| {re.escape(title)} \| {minutes} min \|", guide, re.M), (
            f"docs/instructor_guide.md: lesson {number} should be {title!r}, {minutes} min")
