"""The task registry: every graded task, its points, its test and its hints, in one place.

A task's test is a function of one :class:`TaskRun`. It draws inputs from ``run.rng``,
computes the expected answer with ``lstmkit.reference`` (always here, in the grader's own
process), calls the learner's function through ``run.call`` and records named checks with
``run.compare`` / ``run.record``. The same test serves both front ends:

* ``check()`` in a notebook: ``run.call`` calls the learner's function in the same kernel,
  on fresh random inputs (a copy of every argument and result goes through the wire format,
  so what passes here passes in the batch grader too);
* ``lstmkit grade``: ``run.call`` sends the arguments to the learner's sandboxed kernel and
  receives the return value as data; inputs come from the instructor's secret seed.

A task's score is its points times the fraction of its checks that passed.

Each task has two hints, both shown only after an attempt that fell short: ``hint``, a nudge
towards the idea (which shapes, which equation, which trap), and ``method``, the way to the
answer step by step, for a learner who is still stuck (see ``report``).
"""

from __future__ import annotations

import warnings
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from lstmkit.grading import _wire

# ----------------------------------------------------------------------------- model


@dataclass(frozen=True)
class Exercise:
    name: str  # "02_lstm_gates_and_cell_state": the lesson's and the notebooks' stem
    title: str
    minutes: int


@dataclass(frozen=True)
class Task:
    id: str
    exercise: str
    points: float
    function: str  # the name the learner's function has in the notebook
    title: str  # what the task asks, in a few words
    checks: tuple[str, ...]  # named checks, each an equal share of the points
    test: Callable[[TaskRun], None] = field(repr=False)
    hint: str = ""  # a nudge towards the idea, without the answer
    method: str = ""  # the way to the answer, step by step
    #: lstmkit functions that would do the task for the learner: {module: {names}}. They are
    #: not available in the learner's kernel while grading.
    forbids: dict[str, frozenset[str]] = field(default_factory=dict, repr=False)


EXERCISES: dict[str, Exercise] = {}
TASKS: dict[str, Task] = {}

#: The lstmkit modules a learner's kernel can import while grading (with the graded functions of
#: the exercise removed from them); every other lstmkit module is missing there.
AVAILABLE_WHILE_GRADING = ("lstmkit._checks", "lstmkit.reference", "lstmkit.data")


def exercise(name: str, title: str, minutes: int) -> Exercise:
    EXERCISES[name] = ex = Exercise(name, title, minutes)
    return ex


def task(task_id: str, *, exercise: str, points: float, title: str, checks: tuple[str, ...],
         hint: str, method: str, function: str | None = None,
         forbids: dict[str, set[str]] | None = None):
    """Decorator: register ``test`` as the test of task ``task_id``."""
    if exercise not in EXERCISES:
        raise ValueError(f"unknown exercise {exercise!r}")

    def register(test):
        if task_id in TASKS:
            raise ValueError(f"task {task_id!r} is registered twice")
        TASKS[task_id] = Task(task_id, exercise, points, function or task_id, title, tuple(checks), test,
                              hint, method, {m: frozenset(n) for m, n in (forbids or {}).items()})
        return test

    return register


def tasks_of(exercise_name: str) -> list[Task]:
    return [t for t in TASKS.values() if t.exercise == exercise_name]


def forbidden_for(exercise_name: str) -> dict[str, set[str]]:
    """Union of the ``forbids`` of an exercise's tasks."""
    out: dict[str, set[str]] = {}
    for t in tasks_of(exercise_name):
        for module, names in t.forbids.items():
            out.setdefault(module, set()).update(names)
    return out


def task_rng(task_id: str, seed: int | None) -> np.random.Generator:
    """The grader's inputs for a task: from the secret seed (and the task id), or fresh."""
    if seed is None:
        return np.random.default_rng()
    return np.random.default_rng([int(seed), zlib.crc32(task_id.encode())])


# ------------------------------------------------------------------ calling the learner


class NotAttempted(Exception):
    """The learner's function raised NotImplementedError."""


class Missing(Exception):
    """No function of that name in the notebook."""


class CallError(Exception):
    """The learner's function raised; ``info`` = {"type", "message", "where"}."""

    def __init__(self, info: dict):
        super().__init__(info.get("message", ""))
        self.info = info


class Fatal(Exception):
    """The task cannot go on (time limit, dead kernel); the message says why, in one line."""


class Environment:
    """Where the learner's functions live. ``call`` raises the exceptions above; after a call
    that returned, ``last_warnings`` holds the warnings it raised ("Category: message")."""

    last_warnings: list[str] = []

    def call(self, name: str, task_id: str, args: tuple, kwargs: dict):  # pragma: no cover
        raise NotImplementedError

    def is_compiled(self, name: str) -> bool | None:
        """Whether ``name`` is compiled with Numba (@njit); None if unknown."""
        return None

    def notes(self) -> list[str]:
        return []


def error_text(info: dict) -> str:
    text = f"raised {info.get('type', 'an error')}"
    if info.get("message"):
        text += f": {info['message']}"
    if info.get("where"):
        text += f" ({info['where']})"
    return text


# ----------------------------------------------------------------------------- a run


@dataclass
class CheckResult:
    name: str
    ok: bool
    message: str


@dataclass
class TaskResult:
    task: str
    points: float
    max_points: float
    status: str  # "passed", "partial", "failed", "not attempted", "missing", "error"
    message: str  # one line
    checks: list[CheckResult]
    hint: str
    notes: list[str] = field(default_factory=list)
    method: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"


class _BadValue(Exception):
    """The learner's return value does not have the documented form."""


class TaskRun:
    """What a task's test sees: an rng, the learner's function, and the check book."""

    def __init__(self, task: Task, env: Environment, rng: np.random.Generator):
        self.task = task
        self.env = env
        self.rng = rng
        self.case = ""  # described in messages, e.g. "B=3, I=4, H=5"
        self.results: dict[str, CheckResult | None] = dict.fromkeys(task.checks)
        self.called = False  # whether the function under test was called at all

    # -------------------------------------------------------------- calls

    def call(self, *args, **kwargs):
        """Call the function under test."""
        self.called = True
        return self.env.call(self.task.function, self.task.id, args, kwargs)

    def warned(self, text: str) -> str | None:
        """The first warning of the last call that returned whose text contains ``text``."""
        return next((w for w in self.env.last_warnings if text in w), None)

    def learner(self, name: str) -> Callable:
        """Another of the learner's functions (e.g. a helper the task builds on)."""

        def other(*args, **kwargs):
            try:
                return self.env.call(name, "", args, kwargs)
            except NotAttempted:
                message = f"{name} is not implemented yet, and this check uses it"
                raise CallError({"type": "NotImplementedError", "message": message}) from None
            except Missing:
                raise CallError({"type": "NameError",
                                 "message": f"{name} is not defined, and this check uses it"}) from None

        return other

    def raises(self, *args, **kwargs) -> dict | None:
        """Call the function under test expecting an exception: its info, or None if none."""
        try:
            self.call(*args, **kwargs)
        except CallError as exc:
            return exc.info
        return None

    # -------------------------------------------------------------- the check book

    def record(self, name: str, ok: bool, message: str = "") -> bool:
        """Record one observation of check ``name``; a check passes if every observation does."""
        if name not in self.results:
            raise KeyError(f"task {self.task.id} has no check {name!r}")
        if self.case and not ok:
            message = f"{message} [case {self.case}]"
        prev = self.results[name]
        if prev is None or (prev.ok and not ok):
            self.results[name] = CheckResult(name, ok, message)
        return ok

    def fail_open(self, names, message: str) -> None:
        for name in names:
            prev = self.results[name]
            if prev is None or prev.ok:
                self.results[name] = CheckResult(name, False, message)

    @contextmanager
    def checking(self, *names: str) -> Iterator[None]:
        """A block whose calls decide ``names``: an exception inside fails those checks only."""
        try:
            yield
        except NotAttempted as exc:
            if all(r is None for r in self.results.values()):
                raise  # nothing observed yet: the task as a whole is not attempted
            self.fail_open(names, f"raised NotImplementedError{': ' + str(exc) if str(exc) else ''}"
                           + self._case_suffix())
        except CallError as exc:
            self.fail_open(names, _wire.one_line(error_text(exc.info), 300) + self._case_suffix())
        except _BadValue as exc:
            self.fail_open(names, str(exc) + self._case_suffix())
        finally:
            self.case = ""

    def _case_suffix(self) -> str:
        return f" [case {self.case}]" if self.case else ""

    # -------------------------------------------------------------- helpers for tests

    def unpack(self, value, n: int, form: str) -> tuple:
        """``value`` must be a tuple/list of ``n`` items, documented as ``form``."""
        if not isinstance(value, (tuple, list)) or len(value) != n:
            raise _BadValue(f"should return {form} ({n} values), got {describe(value)}")
        return tuple(value)

    def mapping(self, value, keys, what: str = "the result") -> dict:
        """value, checked to be a dict with ``keys``; ``what`` names it ("the return value")."""
        if not isinstance(value, dict):
            raise _BadValue(f"{what} should be a dict with the keys {', '.join(map(repr, keys))}, "
                            f"got {describe(value)}")
        missing = [k for k in keys if k not in value]
        if missing:
            s = "s" if len(missing) > 1 else ""
            message = (f"{what} has no key{s} {', '.join(map(repr, missing))} "
                       f"(it has {', '.join(map(repr, list(value)[:8])) or 'none'})")
            if all(f"d{k}" in value for k in missing):
                message += f"; name each gradient after its variable: {missing[0]!r}, not 'd{missing[0]}'"
            raise _BadValue(message)
        return value

    def compare(self, check: str, actual, expected, *, layout: str = "", what: str | None = None,
                rtol: float = 1e-7, mistakes=(), dtype=None) -> bool:
        """Record whether ``actual`` equals ``expected`` to ``rtol`` x max(1, max|expected|).

        ``mistakes``: (description, the value that mistake gives) pairs; when the learner's
        value matches one, the message names the likely mistake.
        """
        ok, message = compare(actual, expected, layout=layout, what=what or check, rtol=rtol,
                              mistakes=mistakes, dtype=dtype)
        return self.record(check, ok, message)

    def compiled(self, check: str, name: str | None = None) -> bool:
        name = name or self.task.function
        state = self.env.is_compiled(name)
        if state is None:
            return self.record(check, False, f"could not tell whether {name} is compiled")
        return self.record(check, state, "compiled by Numba" if state else
                           f"{name} is plain Python: decorate it with @njit (from numba import njit)")


def describe(value) -> str:
    """A short description of a value of unknown type, for messages."""
    if value is None:
        return "None (did you forget `return`?)"
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)} items"
    if isinstance(value, dict):
        return f"a dict with keys {', '.join(map(repr, list(value)[:6]))}"
    return f"a {type(value).__name__}"


def _as_float_array(value):
    if isinstance(value, np.ndarray):
        return value.astype(np.float64) if value.dtype.kind in "biuf" else None
    if isinstance(value, (bool, int, float, np.generic)):
        return np.asarray(value, dtype=np.float64)
    if isinstance(value, (list, tuple)):
        try:
            a = np.asarray(value, dtype=np.float64)
        except (ValueError, TypeError):
            return None
        return a
    return None


def _close(a: np.ndarray, e: np.ndarray, rtol: float) -> tuple[bool, float, tuple]:
    """(within tolerance, max abs error, index of the worst element)."""
    scale = max(1.0, float(np.abs(e).max(initial=0.0))) if np.isfinite(e).all() else 1.0
    diff = np.abs(a - e)
    diff = np.where(np.isnan(a) & np.isnan(e), 0.0, diff)
    if diff.size == 0:
        return True, 0.0, ()
    bad = ~np.isfinite(diff)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        return False, float("inf"), idx
    idx = tuple(int(i) for i in np.unravel_index(int(np.argmax(diff)), diff.shape))
    err = float(diff[idx])
    return err <= rtol * scale, err, idx


def compare(actual, expected, *, layout: str = "", what: str = "the result", rtol: float = 1e-7,
            mistakes=(), dtype=None) -> tuple[bool, str]:
    """(ok, message) for one array-valued result; see ``TaskRun.compare``."""
    e = np.asarray(expected, dtype=np.float64)
    a = _as_float_array(actual)
    shape_text = f"{layout} = {e.shape}" if layout else f"{e.shape}"
    if a is None:
        return False, f"{what} should be a NumPy array of shape {shape_text}, got {describe(actual)}"
    if a.shape != e.shape:
        msg = f"{what} has shape {a.shape}, expected {shape_text}"
        if a.ndim == e.ndim and a.shape == e.shape[::-1] and a.ndim >= 2:
            msg += " (transposed?)"
        return False, msg
    if dtype is not None and isinstance(actual, np.ndarray) and actual.dtype != np.dtype(dtype):
        return False, f"{what} has dtype {actual.dtype}, expected {np.dtype(dtype)} (the dtype of the input)"
    if np.isnan(a).any() and not np.isnan(e).any():
        if a.ndim == 0:
            return False, f"{what} is NaN{_mistake(a, mistakes, rtol)}"
        idx = tuple(int(i) for i in np.argwhere(np.isnan(a))[0])
        return False, (f"{what} contains NaN (first at index {list(idx)}{_gate_of(layout, a.shape, idx)})"
                       f"{_mistake(a, mistakes, rtol)}")
    ok, err, idx = _close(a, e, rtol)
    if ok:
        return True, f"max error {err:.1e}"
    if a.ndim == 0:
        return False, f"{what} is {a[()]:.6g}, expected {e[()]:.6g}{_mistake(a, mistakes, rtol)}"
    where = (f" (at index {list(idx)}{_gate_of(layout, a.shape, idx)}: {a[idx]:.6g}, expected {e[idx]:.6g})"
             if idx else "")
    return False, f"{what} is off by up to {err:.3g}{where}{_mistake(a, mistakes, rtol)}"


def _gate_of(layout: str, shape: tuple, idx: tuple) -> str:
    """", gate o of unit 2" where the layout names an axis 4H (gate blocks i, f, g, o of H
    units each, as in torch): the learner finds the line to fix without working out j // H."""
    axes = [d.strip() for d in layout.strip().strip("()").split(",") if d.strip()]
    if len(axes) != len(shape) or "4H" not in axes:
        return ""
    p = axes.index("4H")
    H = shape[p] // 4
    if H == 0 or shape[p] % 4:
        return ""
    return f", gate {'ifgo'[idx[p] // H]} of unit {idx[p] % H}"


def _mistake(a: np.ndarray, mistakes, rtol: float) -> str:
    for description, value in mistakes:
        v = np.asarray(value, dtype=np.float64)
        if v.shape == a.shape and _close(a, v, max(rtol, 1e-6))[0]:
            return f"; it matches what you get if you {description}"
    return ""


# ------------------------------------------------------------------------ running


def run_task(task: Task, env: Environment, rng: np.random.Generator) -> TaskResult:
    """Run one task's test against the learner's function; never raises for learner errors."""
    run = TaskRun(task, env, rng)
    n = len(task.checks)

    def result(status: str, message: str, default_fail: str, hints: bool = True) -> TaskResult:
        checks = [r if r is not None else CheckResult(name, False, default_fail)
                  for name, r in run.results.items()]
        passed = sum(c.ok for c in checks)
        points = round(task.points * passed / n, 2) if status not in ("not attempted", "missing") else 0.0
        if status == "checked":
            status = "passed" if passed == n else "partial" if passed else "failed"
            message = f"{passed}/{n} check{'s' if n > 1 else ''} passed"
            if passed < n:
                first = next(c for c in checks if not c.ok)
                message += f"; {first.name}: {first.message}"
        return TaskResult(task.id, points, float(task.points), status, _wire.one_line(message, 300), checks,
                          task.hint if hints else "", env.notes(), task.method if hints else "")

    try:
        with warnings.catch_warnings():  # the grader's own arithmetic on odd values must stay quiet
            warnings.simplefilter("ignore")
            task.test(run)
    except NotAttempted as exc:
        text = str(exc) or f"{task.function} raises NotImplementedError"
        return result("not attempted", f"not attempted yet ({text})", "not attempted yet")
    except Missing:
        msg = f"no function named {task.function} in the notebook"
        return result("missing", msg, msg)
    except Fatal as exc:  # the notebook's time ran out, its kernel was lost, ...
        run.fail_open(task.checks, str(exc))
        # hints only where the learner's function was run (see report._hint_earned)
        return result("error", str(exc), str(exc), hints=run.called)
    except CallError as exc:  # outside a `checking` block: fails what is still open
        run.fail_open(task.checks, _wire.one_line(error_text(exc.info), 300))
    except _BadValue as exc:
        run.fail_open(task.checks, str(exc))
    return result("checked", "", "not checked: an earlier step failed")
