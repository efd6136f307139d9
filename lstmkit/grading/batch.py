"""The batch grader: ``lstmkit grade SUBMISSIONS... --out grades.csv``.

For each submitted notebook, in parallel across cores:

1. read it here (size-capped JSON; a broken file is graded 0 with the reason), and find out
   which exercise it answers (notebook metadata, else the file name's ``NN_`` prefix);
2. start a fresh sandboxed kernel (``_child.py``: its own process group, an address-space
   limit, no lstmkit implementation of the graded functions) and run the code cells in
   order, each with a time limit; a cell that kills the kernel or cannot be interrupted is
   skipped and the kernel restarted, so one bad cell never costs the rest of the notebook;
3. for each task, call the learner's function in that kernel on inputs drawn from the
   secret seed and compare what comes back with ``lstmkit.reference`` here;
4. write one row per submission to ``grades.csv`` and a Markdown feedback file, atomically.

Nothing the learner's kernel says about scores is read: it only returns function values.
Re-running over the same folder with the same seed gives the same file.
"""

from __future__ import annotations

import ast
import csv
import io
import json
import os
import re
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from lstmkit.grading import _wire
from lstmkit.grading.registry import (
    EXERCISES,
    TASKS,
    CallError,
    Environment,
    Fatal,
    Missing,
    NotAttempted,
    TaskResult,
    forbidden_for,
    run_task,
    task_rng,
    tasks_of,
)
from lstmkit.grading.report import feedback_markdown, fmt_points
from lstmkit.grading.sandbox import AST_LOCK, PACKAGE_DIR, CallTimeout, Kernel, KernelDied, stand_in_sources

MAX_NOTEBOOK_BYTES = 20 * 2**20
MAX_CODE_CELLS = 400
OUTPUT_NOTE_CHARS = 1_000_000


@dataclass
class Limits:
    timeout: float = 120.0  # wall-clock seconds per notebook, everything included
    memory_mb: int = 3072  # address-space limit of the learner's kernel
    cell_timeout: float | None = None  # per code cell; default timeout / 4
    call_timeout: float | None = None  # per call of a learner's function; default timeout / 8

    @property
    def cell(self) -> float:
        return self.cell_timeout or max(5.0, self.timeout / 4)

    @property
    def call(self) -> float:
        return self.call_timeout or max(5.0, self.timeout / 8)


@dataclass
class Submission:
    path: Path
    identifier: str


@dataclass
class SubmissionResult:
    identifier: str
    exercise: str | None
    results: list[TaskResult]
    status: str
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def total(self) -> float:
        return round(sum(r.points for r in self.results), 2)

    @property
    def max_points(self) -> float:
        if self.exercise is None:
            return 0.0
        return float(sum(t.points for t in tasks_of(self.exercise)))

    @property
    def full_marks(self) -> bool:
        return self.exercise is not None and self.total >= self.max_points


# ------------------------------------------------------------------------ discovery


def find_submissions(paths) -> list[Submission]:
    """Notebooks named by ``paths`` (files, or folders searched recursively), with identifiers:
    the path relative to the folder given (after the folder's own name, where several paths are
    given: one folder per group or section), or the file name for a file given directly; the
    full path where two would be the same."""
    found: list[tuple[Path, str]] = []
    seen: set[Path] = set()
    paths = list(paths)
    for p in map(Path, paths):
        if p.is_dir():
            prefix = f"{p.resolve().name}/" if len(paths) > 1 else ""
            candidates = [(nb, prefix + nb.relative_to(p).as_posix()) for nb in sorted(p.rglob("*.ipynb"))
                          if ".ipynb_checkpoints" not in nb.parts and nb.is_file()]
        elif p.exists():
            if p.suffix != ".ipynb":
                raise ValueError(f"{p} is not a notebook (.ipynb)")
            candidates = [(p, p.name)]
        else:
            raise FileNotFoundError(f"no such file or folder: {p}")
        for nb, ident in candidates:
            if nb.resolve() not in seen:  # the same notebook named twice is graded once
                seen.add(nb.resolve())
                found.append((nb, ident))
    names = [ident for _, ident in found]
    out = []
    for nb, ident in found:
        if names.count(ident) > 1:
            ident = nb.as_posix()
        out.append(Submission(nb, ident))
    return sorted(out, key=lambda s: s.identifier)


_PREFIX = re.compile(r"^(\d\d)_")


def identify_exercise(nb: dict | None, path: Path, sources: list[str]) -> str | None:
    """Notebook metadata first, then the file name's NN_ prefix, then the tasks it checks."""
    name = _metadata_exercise(nb)
    if name in EXERCISES:
        return name
    for part in reversed(path.parts):  # the file name, then its folders (nbgrader: .../<assignment>/x.ipynb)
        stem = part[:-6] if part.endswith(".ipynb") else part
        if stem in EXERCISES:
            return stem
        m = _PREFIX.match(part)
        if m:
            return next((name for name in EXERCISES if name.startswith(m.group(1) + "_")), None)
    votes: dict[str, int] = {}
    for tid in _checked_tasks(sources):
        votes[TASKS[tid].exercise] = votes.get(TASKS[tid].exercise, 0) + 1
    return max(sorted(votes), key=votes.get) if votes else None


def _metadata_exercise(nb) -> str | None:
    """The exercise that the notebook's lstmkit metadata names (written by the builder), if any."""
    meta = nb.get("metadata") if isinstance(nb, dict) else None
    lstmkit = meta.get("lstmkit") if isinstance(meta, dict) else None
    name = lstmkit.get("exercise") if isinstance(lstmkit, dict) else None
    return name if isinstance(name, str) and name else None


def _checked_tasks(sources: list[str]) -> list[str]:
    """The known task ids of every check("task_id", ...) in the code, in order, with repeats."""
    return [tid for src in sources for tid in re.findall(r"check\(\s*['\"](\w+)['\"]", src) if tid in TASKS]


def _answers(nb: dict, sources: list[str], exercise: str) -> bool:
    """Whether a notebook matched to `exercise` may hold answers to it: it has the lstmkit
    metadata, a check() of one of its tasks, or defines at least half of its functions. The
    lesson of the same name does none of these (run as a submission, a lesson failed in most
    cells and scored nothing)."""
    if _metadata_exercise(nb) is not None:
        return True
    if any(TASKS[t].exercise == exercise for t in _checked_tasks(sources)):
        return True
    functions = {t.function for t in tasks_of(exercise)}
    names = "|".join(map(re.escape, sorted(functions)))
    defines = re.compile(rf"^\s*(?:def\s+({names})\s*\(|({names})\s*=[^=])", re.MULTILINE)
    defined = {a or b for src in sources for a, b in defines.findall(src)}
    # at least half of them: lesson 02 writes out a sigmoid, one of exercise 02's three functions
    return 2 * len(defined) >= len(functions)


def read_notebook(path: Path) -> tuple[dict | None, list[str], str | None]:
    """(notebook, code cell sources, error): never raises."""
    try:
        size = path.stat().st_size
        if size > MAX_NOTEBOOK_BYTES:
            limit = MAX_NOTEBOOK_BYTES // 2**20
            return None, [], f"invalid notebook: {size / 2**20:.0f} MiB is over the {limit} MiB limit"
        raw = path.read_bytes()
    except OSError as exc:
        return None, [], f"unreadable file: {_wire.one_line(exc.strerror or exc, 120)}"
    try:
        nb = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        return None, [], (f"invalid notebook: not valid JSON, so not a notebook as Jupyter saves it "
                          f"(damaged, or saved in another format?) ({_wire.one_line(exc, 120)})")
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        return None, [], "invalid notebook: no list of cells"
    sources = []
    for cell in nb["cells"]:
        if isinstance(cell, dict) and cell.get("cell_type") == "code":
            src = cell.get("source", "")
            if isinstance(src, list):
                src = "".join(s for s in src if isinstance(s, str))
            if isinstance(src, str) and src.strip():
                sources.append(src)
    if not sources:
        return nb, [], "no code cells: nothing to run (is this the notebook you worked in?)"
    if len(sources) > MAX_CODE_CELLS:
        return nb, [], f"invalid notebook: {len(sources)} code cells (limit {MAX_CODE_CELLS})"
    return nb, sources, None


# ------------------------------------------------------------------- static analysis


def _python_source(src: str) -> ast.Module | None:
    with AST_LOCK:  # IPython's transformers parse too
        try:
            from IPython.core.inputtransformer2 import TransformerManager

            src = TransformerManager().transform_cell(src)
        except Exception:
            pass
        try:
            return ast.parse(src)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return None


_JIT_NAMES = {"njit", "jit", "generated_jit"}


def _is_jit(expr: ast.expr) -> bool:
    if isinstance(expr, ast.Call):
        return _is_jit(expr.func)
    if isinstance(expr, ast.Name):
        return expr.id in _JIT_NAMES
    if isinstance(expr, ast.Attribute):
        return expr.attr in _JIT_NAMES
    return False


def analyse(sources: list[str]) -> dict:
    """What the grader reads from the source itself (trusted: it is data, not a kernel's claim):
    the functions compiled with Numba, and whether the notebook redefines ``check``."""
    compiled: set[str] = set()
    redefines_check = False
    for src in sources:
        tree = _python_source(src)
        if tree is None:
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                if any(_is_jit(d) for d in getattr(node, "decorator_list", [])):
                    compiled.add(node.name)
                if node.name == "check":
                    redefines_check = True
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if isinstance(target, ast.Name):
                        if target.id == "check":
                            redefines_check = True
                        if node.value is not None and _is_jit(node.value):
                            compiled.add(target.id)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                module = getattr(node, "module", "") or ""
                for alias in node.names:
                    if (alias.asname or alias.name) == "check" and module != "lstmkit.grading":
                        redefines_check = True
    return {"compiled": compiled, "redefines_check": redefines_check}


# --------------------------------------------------------------------- one notebook


class _Session:
    """One submission's kernel: started on demand, restarted (skipping the cell that killed
    it) when it dies, always within the notebook's deadline."""

    def __init__(self, sources: list[str], exercise: str, limits: Limits, blocked: list[str],
                 workdir: Path, deadline: float):
        self.sources = sources
        self.exercise = exercise
        self.limits = limits
        self.blocked = blocked
        self.workdir = workdir
        self.deadline = deadline
        self.skip: set[int] = set()
        self.notes: dict[str, None] = {}  # ordered set of one-line notes
        self.output_chars = 0
        self.starts = 0
        self._kernel: Kernel | None = None
        self._forbidden = {m: sorted(n) for m, n in forbidden_for(exercise).items()}

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def note(self, text: str) -> None:
        self.notes.setdefault(_wire.one_line(re.sub(r"0x[0-9a-fA-F]{6,}", "0x…", text), 200))

    def _cell_name(self, idx: int) -> str:
        first = next((line.strip() for line in self.sources[idx].splitlines() if line.strip()), "")
        return f"code cell {idx + 1} ({_wire.one_line(first, 40)})"

    def lost_kernel(self) -> None:
        if self._kernel is not None:
            self._kernel.close()
        self._kernel = None

    def close(self) -> None:
        self.lost_kernel()

    def time_up(self) -> Fatal:
        msg = f"the notebook's time limit ({self.limits.timeout:g} s) ran out"
        self.note(msg)
        return Fatal(msg)

    def kernel(self) -> Kernel:
        if self._kernel is not None and self._kernel.alive:
            return self._kernel
        self.lost_kernel()
        while True:
            if self.remaining() <= 0:
                raise self.time_up()
            if self.starts > len(self.sources) + 2:
                raise Fatal("the kernel kept dying")
            self.starts += 1
            k = Kernel(exercise=self.exercise, sources=_sources_for(self.exercise, self._forbidden),
                       blocked_paths=self.blocked, memory_mb=self.limits.memory_mb, workdir=self.workdir)
            try:
                k.start(timeout=min(60.0, max(self.remaining(), 0.1)))
            except (KernelDied, CallTimeout) as exc:
                k.close()
                reason = exc.reason if isinstance(exc, KernelDied) else "it did not start in time"
                if self.remaining() <= 0:
                    raise self.time_up() from None
                self.note(f"the kernel could not start: {reason}")
                raise Fatal(f"the kernel could not start: {reason}") from None
            if self._run_cells(k):
                self._kernel = k
                return k

    def _run_cells(self, k: Kernel) -> bool:
        """Run every cell not skipped; False if the kernel died (and must be restarted)."""
        for idx, src in enumerate(self.sources):
            if idx in self.skip:
                continue
            limit = min(self.limits.cell, self.remaining())
            if limit <= 0:
                k.close()
                raise self.time_up()
            try:
                out = k.run_cell(src, timeout=limit)
            except CallTimeout as exc:
                if limit < self.limits.cell:  # the notebook's own deadline, not the cell's
                    k.close()
                    raise self.time_up() from None
                if exc.alive:
                    self.note(f"{self._cell_name(idx)} ran past the {self.limits.cell:g} s cell limit "
                              f"and was interrupted")
                    self.skip.add(idx)  # a restarted kernel will not wait for it again
                    continue
                self.note(f"{self._cell_name(idx)} ran past the {self.limits.cell:g} s cell limit, could not "
                          f"be interrupted and was skipped")
                self.skip.add(idx)
                k.close()
                return False
            except KernelDied as exc:
                self.note(f"{self._cell_name(idx)} stopped the kernel ({exc.reason}); it was skipped")
                self.skip.add(idx)
                k.close()
                return False
            self.output_chars = max(self.output_chars, out.output_chars)
            if out.error is not None:
                self.note(_cell_error_note(self._cell_name(idx), out.error, self.limits.memory_mb))
                if out.error.get("type") == "MemoryError":
                    # What the cell grabbed may still be held (by its globals or the traceback):
                    # start again without it rather than grade a kernel with no memory left.
                    self.skip.add(idx)
                    k.close()
                    return False
        return True


_SOURCES_CACHE: dict[tuple, dict[str, str]] = {}


def _sources_for(exercise: str, forbidden: dict[str, list[str]]) -> dict[str, str]:
    key = (exercise, tuple((m, tuple(n)) for m, n in sorted(forbidden.items())))
    if key not in _SOURCES_CACHE:
        _SOURCES_CACHE[key] = stand_in_sources({m: set(n) for m, n in forbidden.items()})
    return _SOURCES_CACHE[key]


def _cell_error_note(cell: str, error: dict, memory_mb: int) -> str:
    kind = error.get("type", "")
    if kind == "MemoryError":
        return f"{cell} ran out of memory (MemoryError; the limit is {memory_mb} MiB) and was skipped"
    if kind == "KeyboardInterrupt":
        return f"{cell} was interrupted"
    if kind == "SystemExit":
        return f"{cell} called sys.exit() (ignored)"
    text = f"{cell} raised {kind}"
    if error.get("message"):  # (IPython's name for the cell means nothing to the learner)
        text += ": " + re.sub(r"\(<ipython-input-[\w-]+>, line (\d+)\)", r"(line \1 of the cell)",
                              error["message"])
    return text


class _KernelEnvironment(Environment):
    def __init__(self, session: _Session, compiled: set[str]):
        self.session = session
        self.compiled = compiled

    def call(self, name: str, task_id: str, args: tuple, kwargs: dict):
        s = self.session
        kernel = s.kernel()
        limit = min(s.limits.call, s.remaining())
        if limit <= 0:
            raise s.time_up()
        try:
            reply = kernel.call(name, task_id, args, kwargs, timeout=limit)
        except CallTimeout as exc:
            if not exc.alive:
                s.lost_kernel()
            if limit < s.limits.call:
                raise s.time_up() from None
            s.note(f"{name} ran past the {s.limits.call:g} s limit for one call")
            raise Fatal(f"{name} did not return within {s.limits.call:g} s") from None
        except KernelDied as exc:
            s.lost_kernel()
            s.note(f"calling {name} stopped the kernel ({exc.reason})")
            raise Fatal(f"calling {name} stopped the kernel ({exc.reason})") from None
        if reply.get("missing"):
            raise Missing(name)
        if reply["ok"]:
            self.last_warnings = reply["warnings"]
            return reply["value"]
        if reply.get("not_implemented"):
            raise NotAttempted(reply["error"].get("message", ""))
        info = reply["error"]
        if info.get("type") == "UnavailableWhileGrading":
            s.note(f"{name} calls lstmkit's own implementation, which is not available while grading")
        raise CallError(info)

    def is_compiled(self, name: str) -> bool | None:
        return name in self.compiled


def _blocked_paths(submission_roots: list[Path], outputs: list[Path]) -> list[str]:
    """Folders the learner's kernel may not read: the lstmkit package, the solutions, the other
    submissions and the grader's outputs; never one that holds Python itself."""
    candidates = [PACKAGE_DIR, PACKAGE_DIR.parent / "solutions", *submission_roots, *outputs]
    homes = {sys.prefix, sys.base_prefix, sys.exec_prefix, tempfile.gettempdir()}
    protected = [Path(p).resolve() for p in homes]
    import numpy

    protected.append(Path(numpy.__file__).resolve().parent)
    out = []
    for c in candidates:
        c = Path(c).resolve()
        if not c.exists() or any(p == c or c in p.parents for p in protected):
            continue
        out.append(str(c))
    return sorted(set(out))


def grade_notebook(sub: Submission, *, secret_seed: int, limits: Limits,
                   blocked: list[str]) -> SubmissionResult:
    """Grade one notebook; never raises (a grader bug becomes the status of this row)."""
    start = time.monotonic()
    try:
        result = _grade_notebook(sub, secret_seed, limits, blocked, start)
    except Exception as exc:  # pragma: no cover - a bug in the grader must not end the batch
        result = SubmissionResult(sub.identifier, None, [], f"grader error: {_wire.one_line(repr(exc), 160)}")
    result.seconds = time.monotonic() - start
    return result


def _zero(exercise: str | None, message: str) -> list[TaskResult]:
    if exercise is None:
        return []
    # no hint: nothing of the learner's ran (see report._hint_earned)
    return [TaskResult(t.id, 0.0, float(t.points), "error", message, [], "") for t in tasks_of(exercise)]


def _grade_notebook(sub: Submission, secret_seed: int, limits: Limits, blocked: list[str],
                    start: float) -> SubmissionResult:
    nb, sources, problem = read_notebook(sub.path)
    exercise = identify_exercise(nb, sub.path, sources)
    if problem:
        return SubmissionResult(sub.identifier, exercise, _zero(exercise, problem), problem)
    if exercise is None:
        problem = ("unknown exercise: no lstmkit metadata, no file name that starts with an exercise's "
                   f"number ({', '.join(sorted({e[:2] for e in EXERCISES}))}), no check() of a known task")
        return SubmissionResult(sub.identifier, None, [], problem)
    if not _answers(nb, sources, exercise):
        problem = (f"not an exercise notebook (a lesson?): the exercise to hand in is "
                   f"exercises/{exercise}.ipynb (this one has no lstmkit metadata, no check() of a task "
                   f"of {exercise}, and not half of its functions)")
        return SubmissionResult(sub.identifier, exercise, _zero(exercise, problem), problem)
    static = analyse(sources)
    workdir = Path(tempfile.mkdtemp(prefix="lstmkit-grade-"))
    session = _Session(sources, exercise, limits, blocked, workdir, start + limits.timeout)
    env = _KernelEnvironment(session, static["compiled"])
    results = []
    try:
        for task in tasks_of(exercise):
            results.append(run_task(task, env, task_rng(task.id, secret_seed)))
    finally:
        session.close()
        shutil.rmtree(workdir, ignore_errors=True)
    notes = list(session.notes)
    if static["redefines_check"]:
        notes.append("the notebook redefines check() (ignored: the grader calls your functions itself)")
    if session.output_chars > OUTPUT_NOTE_CHARS:
        notes.append(f"the notebook printed {session.output_chars / 1e6:.1f} million characters (discarded)")
    status = "; ".join(notes[:2]) + (f" (+{len(notes) - 2} more)" if len(notes) > 2 else "")
    return SubmissionResult(sub.identifier, exercise, results, _wire.one_line(status or "ok", 300), notes)


# ------------------------------------------------------------------------ the batch


def grade(paths, out_csv=None, *, secret_seed: int = 0, timeout: float = 120.0, memory_mb: int = 3072,
          jobs: int | None = None, feedback_dir=None, progress: bool = True,
          cell_timeout: float | None = None, call_timeout: float | None = None) -> list[SubmissionResult]:
    """Grade every notebook under ``paths``; write ``out_csv`` and feedback files if given.

    secret_seed: the instructor's seed for the test inputs (not stored anywhere).
    timeout: wall-clock seconds per notebook; memory_mb: the learner kernel's address space.
    jobs: notebooks graded at once (default: the number of CPU cores).
    Returns one SubmissionResult per notebook, sorted by identifier.
    """
    subs = find_submissions(paths)
    limits = Limits(timeout=timeout, memory_mb=memory_mb, cell_timeout=cell_timeout,
                    call_timeout=call_timeout)
    roots = [Path(p) for p in paths]
    outputs = [Path(out_csv).resolve().parent / Path(out_csv).name] if out_csv else []
    if feedback_dir:
        outputs.append(Path(feedback_dir))
    blocked = _blocked_paths(roots, outputs)
    jobs = max(1, jobs or os.cpu_count() or 1)
    results: dict[str, SubmissionResult] = {}
    bar = _progress(len(subs), progress)
    try:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(grade_notebook, s, secret_seed=secret_seed, limits=limits, blocked=blocked)
                       for s in subs]
            for fut in as_completed(futures):
                r = fut.result()
                results[r.identifier] = r
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    ordered = [results[s.identifier] for s in subs]
    if out_csv:
        write_csv(ordered, Path(out_csv))
    if feedback_dir:
        write_feedback(ordered, Path(feedback_dir))
    return ordered


def _progress(total: int, enabled: bool):
    if not enabled or total == 0:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="grading", unit="notebook", leave=False, file=sys.stderr)


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def task_columns(results: list[SubmissionResult]) -> list[str]:
    exercises = {r.exercise for r in results if r.exercise}
    return [t.id for t in TASKS.values() if t.exercise in exercises]


def write_csv(results: list[SubmissionResult], path: Path) -> None:
    columns = task_columns(results)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["identifier", "exercise", *columns, "total", "max_points", "status"])
    for r in results:
        by_task = {t.task: t for t in r.results}
        w.writerow([r.identifier, r.exercise or "", *(fmt_points(by_task[c].points) if c in by_task else ""
                                                     for c in columns),
                    fmt_points(r.total), fmt_points(r.max_points), r.status])
    _atomic_write(path, buf.getvalue())


def feedback_path(folder: Path, identifier: str) -> Path:
    parts = [p for p in Path(identifier).with_suffix(".md").parts if p not in ("", ".", "..", "/")]
    return folder.joinpath(*parts) if parts else folder / "feedback.md"


def write_feedback(results: list[SubmissionResult], folder: Path) -> None:
    titles = {t.id: t.title for t in TASKS.values()}
    for r in results:
        ex = EXERCISES.get(r.exercise) if r.exercise else None
        text = feedback_markdown(r.identifier, f"{ex.name} ({ex.title})" if ex else "", r.results, r.total,
                                 r.max_points, r.status, r.notes, titles)
        _atomic_write(feedback_path(folder, r.identifier), text)


def summary_line(results: list[SubmissionResult], out_csv=None, feedback_dir=None) -> str:
    n = len(results)
    full = sum(r.full_marks for r in results)
    flagged = sum(r.status != "ok" for r in results)
    got, most = sum(r.total for r in results), sum(r.max_points for r in results)
    pct = f" ({100 * got / most:.1f}%)" if most else ""
    unknown = sum(r.exercise is None for r in results)  # no points to count: said apart
    apart = f" ({unknown} of an unknown exercise, not counted)" if unknown else ""
    text = (f"lstmkit grade: {n} notebook{'s' * (n != 1)}, {full} with full marks, "
            f"{fmt_points(got)}/{fmt_points(most)} points in all{pct}{apart}, {flagged} with a non-ok status")
    written = [str(p) for p in (out_csv, feedback_dir) if p]
    return text + (f"; wrote {' and '.join(written)}" if written else "")
