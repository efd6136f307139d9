"""The batch grader end to end: sandboxed kernels, hostile submissions, grades.csv, feedback, the CLI.

tests/submissions/ holds one notebook per way a submission can go wrong (see _make.py there for what
each does and what the grader must make of it) next to good ones; they are graded in one batch.
"""

from __future__ import annotations

import ast
import csv
import importlib.util
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lstmkit.grading import TASKS, grade, tasks_of
from lstmkit.grading.batch import feedback_path
from lstmkit.grading.report import md_text
from lstmkit.grading.sandbox import grading_copy

ROOT = Path(__file__).resolve().parent.parent
SUBMISSIONS = ROOT / "tests" / "submissions"
LIMITS = dict(timeout=60, memory_mb=1536, jobs=2, progress=False, cell_timeout=8, call_timeout=10)


def _make_module():
    spec = importlib.util.spec_from_file_location("submissions_make", SUBMISSIONS / "_make.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MAKE = _make_module()


@pytest.fixture(scope="module")
def adversarial(tmp_path_factory):
    out = tmp_path_factory.mktemp("adversarial")
    start = time.perf_counter()
    results = grade([SUBMISSIONS], out / "grades.csv", secret_seed=1234, feedback_dir=out / "feedback",
                    **LIMITS)
    return out, {r.identifier: r for r in results}, time.perf_counter() - start


def test_submission_folder_matches_its_generator(tmp_path, monkeypatch):
    monkeypatch.setattr(MAKE, "HERE", tmp_path)
    MAKE.main()
    for path in tmp_path.iterdir():
        assert (SUBMISSIONS / path.name).read_text() == path.read_text(), f"rerun {SUBMISSIONS}/_make.py"
    assert {p.name for p in SUBMISSIONS.glob("*.ipynb")} == set(MAKE.EXPECTED)


def test_hostile_submissions_get_their_grade_and_a_reason(adversarial):
    _, results, seconds = adversarial
    assert set(results) == set(MAKE.EXPECTED)
    problems = []
    for ident, (total, max_points, status) in MAKE.EXPECTED.items():
        r = results[ident]
        ok_status = r.status == "ok" if status == "ok" else status in r.status
        if (r.total, r.max_points) != (total, max_points) or not ok_status or "\n" in r.status:
            problems.append(f"{ident}: {r.total}/{r.max_points} {r.status!r}")
    assert not problems, "\n".join(problems)
    assert seconds < 120


def test_grades_csv_and_feedback(adversarial):
    out, results, _ = adversarial
    rows = list(csv.DictReader((out / "grades.csv").open()))
    assert [r["identifier"] for r in rows] == sorted(results)
    header = list(rows[0])
    assert header[:2] == ["identifier", "exercise"] and header[-3:] == ["total", "max_points", "status"]
    exercises = ("01_rnns_and_vanishing_gradients", "02_lstm_gates_and_cell_state",
                 "09_under_the_hood_numba_and_cuda")
    assert set(header[2:-3]) == {t.id for ex in exercises for t in tasks_of(ex)}
    good = next(r for r in rows if r["identifier"] == "good_full.ipynb")
    assert good["rnn_step_backward"] == "3" and good["total"] == "9" and good["sigmoid"] == ""
    for ident, r in results.items():
        text = feedback_path(out / "feedback", ident).read_text()
        assert f"**Score:** {r.total:g} / {r.max_points:g}" in text
    partial = feedback_path(out / "feedback", "good_partial.ipynb").read_text()
    assert "skip the tanh derivative" in partial and "not attempted" in partial
    # both hints for the failed task, the method folded; none for the one not attempted
    for part in ("hint", "method"):
        assert md_text(getattr(TASKS["rnn_step_backward"], part), 1000) in partial
        assert md_text(getattr(TASKS["gradient_norms_through_time"], part), 1000) not in partial
    assert "<details><summary>Still stuck? The method, step by step</summary>" in partial, partial
    broken = feedback_path(out / "feedback", "01_invalid_json.ipynb").read_text()
    assert broken.count("not valid JSON") == 1  # said once, in the status: not under every task
    assert "## rnn_step_forward" not in broken and "Graded by" not in broken  # nothing ran
    overflowing = feedback_path(out / "feedback", "02_overflowing_sigmoid.ipynb").read_text()
    assert "computing them overflowed (RuntimeWarning: overflow encountered in exp)" in overflowing
    assert not list(out.glob(".*")), "temporary files left behind"


def test_rerunning_the_batch_gives_the_same_files(adversarial, tmp_path):
    out, _, _ = adversarial
    grade([SUBMISSIONS], tmp_path / "grades.csv", secret_seed=1234, feedback_dir=tmp_path / "feedback",
          **LIMITS)
    assert (tmp_path / "grades.csv").read_text() == (out / "grades.csv").read_text()
    for md in (out / "feedback").rglob("*.md"):
        assert (tmp_path / "feedback" / md.relative_to(out / "feedback")).read_text() == md.read_text()


def test_solutions_get_full_marks_and_untouched_exercises_zero():
    start = time.perf_counter()
    results = grade([ROOT / "solutions", ROOT / "exercises"], secret_seed=99, timeout=120, jobs=2,
                    progress=False)
    seconds = time.perf_counter() - start
    # Several folders: each identifier starts with its folder's name.
    solutions = [r for r in results if r.identifier.startswith("solutions/")]
    exercises = [r for r in results if r.identifier.startswith("exercises/")]
    assert len(solutions) == len(exercises) == 7
    assert all(r.full_marks and r.status == "ok" for r in solutions), [(r.identifier, r.status)
                                                                        for r in solutions]
    assert all(r.total == 0 and r.status == "ok" for r in exercises), [(r.identifier, r.status)
                                                                        for r in exercises]
    assert {r.exercise for r in solutions} == {r.exercise for r in exercises}
    assert sum(r.max_points for r in solutions) == 48
    assert seconds < 60  # includes one learner's complete set of answers (the 7 solutions)


def test_cli_for_a_learner_and_for_classroom_ci(tmp_path):
    cli = [sys.executable, "-m", "lstmkit", "grade", "--quiet"]
    run = lambda *args: subprocess.run([*cli, *map(str, args)], capture_output=True, text=True)
    res = run(ROOT / "solutions" / "04_stacked_lstm.ipynb")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "1 notebook, 1 with full marks" in res.stdout and "inverted_dropout" in res.stdout
    res = run(ROOT / "exercises" / "04_stacked_lstm.ipynb", "--out", tmp_path / "g.csv")
    assert res.returncode == 1 and "0 with full marks" in res.stdout
    assert (tmp_path / "g.csv").exists() and (tmp_path / "feedback" / "04_stacked_lstm.md").exists()
    res = run(tmp_path / "nothing-here")
    assert res.returncode == 2 and "no such file" in res.stderr
    lessons = [ROOT / "notebooks" / p.name for p in sorted((ROOT / "exercises").glob("*.ipynb"))]
    res = run("--verbose", *lessons, "--out", tmp_path / "lessons" / "g.csv")  # not their exercises
    assert res.returncode == 1 and f"{len(lessons)} notebooks, 0 with full marks" in res.stdout
    assert res.stdout.count("status: not an exercise notebook") == len(lessons) == 7, res.stdout
    assert all(f"the exercise to hand in is exercises/{p.name}" in res.stdout for p in lessons)
    feedback = [f.read_text() for f in (tmp_path / "lessons" / "feedback").glob("*.md")]
    assert len(feedback) == len(lessons)
    assert not any("*Hint:*" in f or "Still stuck" in f for f in feedback)  # nothing was tried
    for bad in (["--timeout", "-1"], ["--timeout", "inf"], ["--timeout", "3"], ["--jobs", "0"],
                ["--memory-mb", "100"], ["--secret-seed", "-5"]):
        res = run(ROOT / "solutions" / "04_stacked_lstm.ipynb", *bad)
        assert res.returncode == 2 and f"argument {bad[0]}: must be" in res.stderr, res.stderr


def test_cli_refuses_before_grading_what_would_fail_after_it(tmp_path):
    """Grading a class takes minutes: a bad seed, an output that cannot be written or a file
    that is no notebook is said at once, with exit code 2, and nothing is written."""
    cli = [sys.executable, "-m", "lstmkit", "grade", "--quiet"]
    run = lambda *args, env=None: subprocess.run([*cli, *map(str, args)], capture_output=True, text=True,
                                                 env=env)
    nb = ROOT / "solutions" / "04_stacked_lstm.ipynb"
    res = run(nb, env={**os.environ, "LSTMKIT_SECRET_SEED": "-3"})
    assert res.returncode == 2 and "LSTMKIT_SECRET_SEED must be 0 or a positive integer" in res.stderr
    res = run(nb, "--out", tmp_path)
    assert res.returncode == 2 and "--out names a folder" in res.stderr
    (tmp_path / "file").write_text("")
    res = run(nb, "--out", tmp_path / "file" / "g.csv")
    assert res.returncode == 2 and "--out: cannot write into" in res.stderr
    res = run(ROOT / "README.md")
    assert res.returncode == 2 and "README.md is not a notebook (.ipynb)" in res.stderr
    res = run(nb, "--timout", "30")
    assert res.returncode == 2 and "did you mean --timeout?" in res.stderr
    assert "usage: lstmkit grade" in res.stderr
    assert list(tmp_path.iterdir()) == [tmp_path / "file"]
    # a class without a secret seed is told; feedback left by an earlier run is pointed out
    folder = tmp_path / "class"
    folder.mkdir()
    for name in ("a", "b"):
        shutil.copy(nb, folder / f"{name}.ipynb")
    res = run(folder, "--out", tmp_path / "g.csv", env={k: v for k, v in os.environ.items()
                                                         if k != "LSTMKIT_SECRET_SEED"})
    assert "note: no secret seed" in res.stderr and "from an earlier run" not in res.stdout
    (folder / "b.ipynb").unlink()
    res = run(folder, "--out", tmp_path / "g.csv", "--secret-seed", "7")
    assert "note: no secret seed" not in res.stderr
    assert "note: 1 other feedback file in " in res.stdout and "(b.md) is from an earlier run" in res.stdout
    res = run(folder)
    assert "(nothing saved: --out grades.csv writes the grades" in res.stdout
    (folder / "notes.ipynb").write_text((ROOT / "notebooks" / "00_welcome.ipynb").read_text())
    res = run(folder, "--secret-seed", "7")  # a notebook of no exercise has no points to count
    assert "2 notebooks, 1 with full marks, 5/5 points in all (100.0%) (1 of an unknown exercise, " \
           "not counted), 1 with a non-ok status" in res.stdout, res.stdout


def test_the_learner_kernel_gets_no_graded_code():
    forbidden = {"lstm_step_forward", "_affine", "sigmoid"}
    tree = ast.parse(grading_copy("lstmkit.reference", forbidden))
    bodies = {n.name: n.body for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert forbidden < set(bodies) and "rnn_step_forward" in bodies  # signatures and docstrings stay
    for name in forbidden:
        *doc, stmt = bodies[name]
        assert len(doc) <= 1 and isinstance(stmt, ast.Raise), name  # ... but no code
        assert "UnavailableWhileGrading" in ast.unparse(stmt)
    assert len(bodies["lstm_step_backward"]) > 2
