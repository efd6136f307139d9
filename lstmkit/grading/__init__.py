"""Exercises and their grading: instant ``check()`` for learners, ``grade()`` for instructors.

* ``check("task_id", fn)``: in an exercise notebook, runs the task's tests on fresh inputs
  against ``lstmkit.reference`` and shows what passed and what failed, with a hint.
* ``grade(paths, out_csv, ...)`` (``lstmkit grade`` on the command line): runs each submitted
  notebook in a sandboxed kernel of its own, calls the learner's functions on inputs from a
  secret seed and compares the results here, in the grader's process.
* ``build_exercises()`` (``lstmkit exercises build``): writes ``exercises/`` from ``solutions/``.
* ``TASKS`` / ``EXERCISES``: the registry (task id -> points, checks, test, hint).

See docs/grading.md.
"""

from __future__ import annotations

from lstmkit.grading import tasks as _tasks  # noqa: F401  (registers every task)
from lstmkit.grading.instant import check
from lstmkit.grading.registry import EXERCISES, TASKS, tasks_of

__all__ = ["check", "grade", "build_exercises", "TASKS", "EXERCISES", "tasks_of"]


def grade(*args, **kwargs):
    """See ``lstmkit.grading.batch.grade``."""
    from lstmkit.grading.batch import grade as _grade

    return _grade(*args, **kwargs)


def build_exercises(*args, **kwargs):
    """See ``lstmkit.grading.builder.build_exercises``."""
    from lstmkit.grading.builder import build_exercises as _build

    return _build(*args, **kwargs)
