"""``check()``: instant feedback on one task, inside the learner's notebook.

    from lstmkit.grading import check
    check("lstm_step_forward", lstm_step_forward)

runs the task's tests on fresh random inputs against ``lstmkit.reference`` and shows what
passed, what failed and why, with a hint. It never raises for the learner's mistakes (an
unfinished task shows "not attempted yet"), so an untouched exercise runs top to bottom.

Under nbgrader (``NBGRADER_EXECUTION`` is set during ``nbgrader validate`` and ``autograde``)
a grade cell must fail for nbgrader to see a failure, so there ``check`` raises an
AssertionError when no check passed, returns the partial points (a number nbgrader reads as
partial credit) when some did, and returns None on full marks. It never writes to stderr:
warnings from the learner's code are caught and shown as notes.
"""

from __future__ import annotations

import difflib
import os
import sys
import types
import warnings
from contextlib import contextmanager

from lstmkit.grading import _wire
from lstmkit.grading.registry import (
    AVAILABLE_WHILE_GRADING,
    TASKS,
    CallError,
    Environment,
    Missing,
    NotAttempted,
    TaskResult,
    forbidden_for,
    run_task,
    task_rng,
)
from lstmkit.grading.report import CheckView, headline


class LocalEnvironment(Environment):
    """The learner's functions in this very kernel; values still make the wire round trip, and the
    lstmkit functions that the batch grader withholds (``forbidden``) raise during the call, so that
    what passes here passes there too."""

    def __init__(self, namespace: dict, overrides: dict, forbidden: dict[str, set[str]] | None = None):
        self.namespace = namespace
        self.overrides = overrides
        self.forbidden = forbidden or {}
        self._notes: list[str] = []
        self._looked_at: set[str] = set()

    def _note_unavailable_modules(self, fn) -> None:
        """A note for each lstmkit module ``fn`` (or a function it calls) uses that the grader's
        kernel will not have."""
        for module in sorted(_lstmkit_uses(fn)):
            note = (f"{module} is used here but is not available while grading "
                    f"(`lstmkit grade` runs your notebook without it)")
            if note not in self._notes:
                self._notes.append(note)

    @contextmanager
    def _withheld(self):
        """Make the withheld lstmkit functions raise, however the learner's code reaches them."""
        swapped = []
        for module_name, names in self.forbidden.items():
            module = sys.modules.get(module_name)
            for name in sorted(names):
                fn = getattr(module, name, None) if module is not None else None
                if isinstance(fn, types.FunctionType) and not fn.__code__.co_freevars:
                    swapped.append((fn, fn.__code__))
                    fn.__code__ = _raiser(f"{module_name}.{name}")
        try:
            yield
        finally:
            for fn, code in swapped:
                fn.__code__ = code

    def _lookup(self, name: str):
        fn = self.overrides.get(name)
        if fn is None:
            fn = self.namespace.get(name)
        return fn if callable(fn) else None

    def call(self, name: str, task_id: str, args: tuple, kwargs: dict):
        fn = self._lookup(name)
        if fn is None:
            raise Missing(name)
        if name not in self._looked_at:
            self._looked_at.add(name)
            self._note_unavailable_modules(fn)
        args, kwargs = _wire.roundtrip(tuple(args)), _wire.roundtrip(dict(kwargs))
        with warnings.catch_warnings(record=True) as caught, self._withheld():
            warnings.simplefilter("default")  # once per line of code: a warning in a loop is one note
            try:
                value = fn(*args, **kwargs)
            except NotImplementedError as exc:
                raise NotAttempted(str(exc)) from None
            except Exception as exc:
                info = _wire.describe_exception(exc, skip_files=("lstmkit/grading", "<lstmkit"))
                raise CallError(info) from None
        self.last_warnings = [f"{w.category.__name__}: {_wire.one_line(str(w.message), 240)}"
                              for w in caught[:5]]
        for w in caught:
            note = f"{name} caused a {w.category.__name__}: {_wire.one_line(str(w.message), 160)}"
            if note not in self._notes:
                self._notes.append(note)
        try:
            return _wire.roundtrip(value)
        except _wire.WireError as exc:
            raise CallError({"type": "an unusable return value", "message": str(exc), "where": ""}) from None

    def is_compiled(self, name: str) -> bool | None:
        fn = self._lookup(name)
        if fn is None:
            return None
        return type(fn).__module__.startswith("numba") and hasattr(fn, "py_func")

    def notes(self) -> list[str]:
        return list(self._notes)


def _unavailable(module_name) -> str | None:
    """The lstmkit module (two levels) that ``module_name`` belongs to, if the grader withholds it."""
    if not isinstance(module_name, str) or not module_name.startswith("lstmkit."):
        return None
    if module_name.startswith("lstmkit.grading") or module_name in AVAILABLE_WHILE_GRADING:
        return None
    return ".".join(module_name.split(".")[:2])


def _lstmkit_uses(fn, depth: int = 0, seen: set | None = None) -> set[str]:
    """Withheld lstmkit modules that ``fn``'s code names through its globals, following the
    learner's own functions a few calls deep. A heuristic for a note, not a guarantee."""
    seen = seen if seen is not None else set()
    fn = getattr(fn, "py_func", fn)  # a Numba dispatcher's Python function
    code, glob = getattr(fn, "__code__", None), getattr(fn, "__globals__", None)
    if code is None or glob is None or id(fn) in seen or depth > 3:
        return set()
    seen.add(id(fn))
    names, stack = set(), [code]
    while stack:
        c = stack.pop()
        names |= set(c.co_names)
        stack += [k for k in c.co_consts if isinstance(k, types.CodeType)]
    found = set()
    for name in names:
        value = glob.get(name)
        if value is None:
            continue
        if isinstance(value, types.ModuleType) and value.__name__ == "lstmkit":
            found |= {m for n in names if (m := _unavailable(f"lstmkit.{n}"))
                      and f"lstmkit.{n}" in sys.modules}
            continue
        module = _unavailable(value.__name__ if isinstance(value, types.ModuleType)
                              else getattr(value, "__module__", None))
        if module:
            found.add(module)
        elif isinstance(value, types.FunctionType) or hasattr(value, "py_func"):
            found |= _lstmkit_uses(value, depth + 1, seen)
    return found


def _raiser(qualname: str) -> types.CodeType:
    """The code of a function that raises what the grader's stand-in raises (a builtin exception:
    the code runs with the withheld function's own globals)."""
    message = (f"{qualname} is not available while grading: this exercise asks you to write it yourself "
               f"(`lstmkit grade` runs your notebook without it)")
    namespace: dict = {}
    source = f"def withheld(*args, **kwargs):\n    raise RuntimeError({message!r})"
    exec(compile(source, "<lstmkit: withheld while grading>", "exec"), namespace)
    return namespace["withheld"].__code__


def _in_nbgrader() -> bool:
    return bool(os.environ.get("NBGRADER_EXECUTION"))


def _display(view: CheckView) -> None:
    try:
        from IPython import get_ipython
        from IPython.display import display

        if get_ipython() is not None:
            display(view)
            return
    except ImportError:  # pragma: no cover - IPython is always there with Jupyter
        pass
    print(repr(view))


def check(task_id: str, fn=None, *, seed: int | None = None) -> float | None:
    """Check your function for task ``task_id`` and show the result.

    fn: your function (by default, the notebook's global of the task's function name).
    seed: draw the test inputs from this seed instead of fresh random ones.
    Returns None (or, under nbgrader, the partial points; see the module docstring).
    """
    task = TASKS.get(task_id)
    if task is None:
        near = difflib.get_close_matches(str(task_id), TASKS, n=1)
        guess = f" (did you mean {near[0]!r}?)" if near else ""
        raise ValueError(f"unknown task {task_id!r}{guess}; the tasks are: {', '.join(sorted(TASKS))}")
    namespace = sys._getframe(1).f_globals
    if fn is not None and not callable(fn):
        raise TypeError(f"check({task_id!r}, fn): fn must be your function {task.function}, "
                        f"got {type(fn).__name__}")
    env = LocalEnvironment(namespace, {task.function: fn} if fn is not None else {},
                           forbidden_for(task.exercise))
    result: TaskResult = run_task(task, env, task_rng(task_id, seed))
    _display(CheckView(result, task.function, task.title))
    if _in_nbgrader():
        if result.points <= 0:
            raise AssertionError(f"{task_id}: {headline(result, task.function)}; {result.message}") from None
        if result.points < result.max_points:
            return result.points
    return None
