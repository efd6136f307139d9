"""nbgrader's own view of the notebooks: metadata it accepts, solutions that pass, exercises that fail.

nbgrader executes each notebook with NBGRADER_EXECUTION=validate; check() then raises for a task
that is not done, so a blank exercise scores nothing, and writes nothing to stderr.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from nbgrader import validator as nbgrader_validator

from lstmkit.grading import tasks_of

ROOT = Path(__file__).resolve().parent.parent
NAMES = [p.stem for p in sorted((ROOT / "solutions").glob("[0-9][0-9]_*.ipynb"))]


def _validate(path: Path, **kwargs) -> dict:
    validator = nbgrader_validator.Validator(**kwargs)
    validator.execute_retries = 0
    return validator.validate(str(path))


@pytest.mark.parametrize("name", NAMES)
def test_nbgrader_validate_passes_the_solution(name):
    results = _validate(ROOT / "solutions" / f"{name}.ipynb")
    assert not results.get("failed") and not results.get("type_changed"), results


@pytest.mark.parametrize("name", NAMES)
def test_nbgrader_finds_every_graded_test_failing_in_the_untouched_exercise(name):
    path = ROOT / "exercises" / f"{name}.ipynb"
    results = _validate(path)
    failed = results.get("failed", [])
    assert len(failed) == len(tasks_of(name)), results  # every grade cell fails ...
    for cell in failed:
        assert "not attempted yet" in cell["error"]  # ... because nothing was attempted
    assert not _passed_cells(path)


def _passed_cells(path: Path) -> list:
    """What `nbgrader validate --invert` reports: the grade cells that pass."""
    results = _validate(path, invert=True)
    return results.get("passed", [])


def test_grade_cells_are_the_only_check_calls():
    for name in NAMES:
        nb = json.loads((ROOT / "exercises" / f"{name}.ipynb").read_text())
        for cell in nb["cells"]:
            graded = cell["metadata"].get("nbgrader", {}).get("grade", False)
            assert graded == cell["source"].startswith("check("), (name, cell["source"][:40])
