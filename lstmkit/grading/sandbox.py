"""The grader's side of a learner's sandboxed kernel (the kernel itself is ``_child.py``).

A :class:`Kernel` is one child process running a fresh IPython shell. The grader sends it
code cells to run and calls of the learner's functions with arguments the grader chose; the
child answers with the values those functions returned, in the safe wire format of
``_wire.py``. Every wait has a deadline: on a deadline the child first gets SIGINT (a
KeyboardInterrupt in the learner's code, so the kernel survives a ``while True: pass``), then,
two seconds later, SIGKILL to its whole process group.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import select
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from lstmkit.grading import _wire
from lstmkit.grading.registry import AVAILABLE_WHILE_GRADING

CHILD = Path(__file__).with_name("_child.py")
PACKAGE_DIR = Path(__file__).resolve().parent.parent  # lstmkit/
INTERRUPT_GRACE_S = 2.0

#: lstmkit modules a learner's kernel may import while grading (graded functions removed).
STAND_IN_MODULES = AVAILABLE_WHILE_GRADING

# What the child may inherit from the grader's environment (never the secret seed).
_ENV_KEEP = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "SYSTEMROOT", "LSTMKIT_GRADING_DEBUG")


class KernelDied(Exception):
    """The child exited, was killed, or broke the protocol; ``reason`` says which, in one line."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class CallTimeout(Exception):
    """A call or cell ran past its limit; ``alive`` tells whether SIGINT saved the kernel."""

    def __init__(self, alive: bool):
        super().__init__("timeout")
        self.alive = alive


@dataclass
class CellOutcome:
    error: dict | None  # {"type", "message", "where"} from the child (learner-controlled text)
    output_chars: int


# CPython before 3.12 keeps the AST converter's recursion depth per interpreter, not per
# thread: the batch grader's threads parsing at the same time failed now and then with
# "AST constructor recursion depth mismatch". Every ast.parse in the grader's process holds this.
AST_LOCK = threading.Lock()


def grading_copy(module: str, forbidden: set[str]) -> str:
    """The source of ``module`` with the bodies of ``forbidden`` functions replaced by a raise.

    Only the filtered source reaches the learner's kernel, so the graded code is not in that
    process's memory at all.
    """
    spec = importlib.util.find_spec(module)
    with AST_LOCK:
        tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name in forbidden:
                message = (f"{module}.{node.name} is not available while grading: this exercise asks you "
                           f"to write it yourself")
                doc = ast.get_docstring(node)
                body = [ast.Expr(ast.Constant(doc))] if doc else []
                body.append(ast.parse(f"raise UnavailableWhileGrading({message!r})").body[0])
                node.body = body
        return ast.unparse(tree)


def stand_in_sources(forbidden: dict[str, set[str]]) -> dict[str, str]:
    """Sources of the lstmkit modules the kernel may import, keyed by module name."""
    return {m: grading_copy(m, forbidden.get(m, set())) for m in STAND_IN_MODULES}


def child_env(workdir: Path) -> dict[str, str]:
    env = {k: os.environ[k] for k in _ENV_KEEP if k in os.environ}
    one = "1"
    env.update({
        "HOME": str(workdir), "IPYTHONDIR": str(workdir / ".ipython"), "MPLCONFIGDIR": str(workdir / ".mpl"),
        "NUMBA_CACHE_DIR": str(workdir / ".numba"), "TMPDIR": str(workdir),
        "MPLBACKEND": "Agg", "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": one,
        "OMP_NUM_THREADS": one, "OPENBLAS_NUM_THREADS": one, "MKL_NUM_THREADS": one,
        "NUMBA_NUM_THREADS": one, "MALLOC_ARENA_MAX": "2", "TQDM_DISABLE": one,
        "PYTHONWARNINGS": "ignore",
    })
    return env


class Kernel:
    """One sandboxed learner kernel. Use as a context manager; every method takes a deadline."""

    def __init__(self, *, exercise: str, sources: dict[str, str], blocked_paths: list[str],
                 memory_mb: int, workdir: Path):
        self.exercise = exercise
        self.sources = sources
        self.blocked_paths = blocked_paths
        self.memory_mb = memory_mb
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None
        self.dead_reason: str | None = None

    # ------------------------------------------------------------------ life cycle

    def start(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        debug = os.environ.get("LSTMKIT_GRADING_DEBUG") == "1"
        self.proc = subprocess.Popen(
            [sys.executable, "-I", str(CHILD), str(self.memory_mb)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None if debug else subprocess.DEVNULL,
            cwd=self.workdir, env=child_env(self.workdir), start_new_session=True, close_fds=True,
        )
        self._send({"op": "setup", "modules": self.sources, "exercise": self.exercise,
                    "blocked_paths": self.blocked_paths}, deadline)
        reply = self._receive(deadline, what="start")
        if reply.get("op") != "ready":
            self._die("the kernel did not start")

    def close(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - a zombie we cannot reap
            pass
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def alive(self) -> bool:
        return self.dead_reason is None and self.proc is not None and self.proc.poll() is None

    # ------------------------------------------------------------------ operations

    def run_cell(self, source: str, timeout: float) -> CellOutcome:
        """Run one code cell. Raises CallTimeout or KernelDied."""
        deadline = time.monotonic() + timeout
        self._send({"op": "run", "source": source}, deadline)
        reply = self._receive_or_interrupt(deadline)
        error = reply.get("error")
        if error is not None and not isinstance(error, dict):
            self._die("the kernel broke the protocol")
        chars = reply.get("output_chars")
        return CellOutcome(error=_clean_error(error), output_chars=chars if isinstance(chars, int) else 0)

    def call(self, name: str, task: str, args: tuple, kwargs: dict, timeout: float) -> dict:
        """Call the learner's function ``name`` (or the one passed to ``check(task, ...)``).

        Returns {"ok": True, "value": decoded, "warnings": [str, ...]} (the warnings the call
        raised, "Category: message", at most 5) or {"ok": False, "error": {...}, "not_implemented":
        bool} or {"ok": False, "missing": True}. Raises CallTimeout or KernelDied.
        """
        deadline = time.monotonic() + timeout
        self._send({"op": "call", "name": name, "task": task, "args": _wire.encode(tuple(args)),
                    "kwargs": _wire.encode(dict(kwargs))}, deadline)
        reply = self._receive_or_interrupt(deadline)
        if reply.get("ok") is True:
            try:
                said = reply.get("warnings")
                said = [_wire.one_line(str(w), 240) for w in said[:5]] if isinstance(said, list) else []
                return {"ok": True, "value": _wire.decode(reply.get("value")), "warnings": said}
            except _wire.WireError as exc:
                self._die(f"the kernel sent a value that does not decode ({exc})")
        if reply.get("missing") is True:
            return {"ok": False, "missing": True}
        error = _clean_error(reply.get("error"))
        if error is None:
            self._die("the kernel broke the protocol")
        return {"ok": False, "error": error, "not_implemented": reply.get("not_implemented") is True}

    # ------------------------------------------------------------------ plumbing

    def _die(self, reason: str):
        self.dead_reason = self.dead_reason or reason
        self.close()
        raise KernelDied(self.dead_reason)

    def _exit_reason(self) -> str:
        code = self.proc.poll() if self.proc else None
        if code is None:
            try:
                code = self.proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                return "the kernel stopped answering"
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            return f"the kernel was killed by {name}"
        return f"the kernel exited with code {code}"

    def _send(self, message: dict, deadline: float) -> None:
        if self.dead_reason:
            raise KernelDied(self.dead_reason)
        data = _wire.pack(message)
        fd = self.proc.stdin.fileno()
        while data:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CallTimeout(alive=False)
            try:
                if not _ready(fd, select.POLLOUT, remaining):
                    continue
                k = os.write(fd, data[: 1 << 16])
            except (BrokenPipeError, OSError):
                self._die(self._exit_reason())
            data = data[k:]

    def _read_exact(self, n: int, deadline: float, mid_frame: bool = False) -> bytes:
        fd = self.proc.stdout.fileno()
        chunks = []
        while n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if chunks or mid_frame:  # a reply cut in half cannot be resumed safely
                    self._die("the kernel stopped in the middle of a reply")
                raise CallTimeout(alive=True)
            if not _ready(fd, select.POLLIN, remaining):
                continue
            b = os.read(fd, min(n, 1 << 20))
            if not b:
                self._die(self._exit_reason())
            chunks.append(b)
            n -= len(b)
        return b"".join(chunks)

    def _receive(self, deadline: float, what: str = "") -> dict:
        try:
            n = _wire.unpack_length(self._read_exact(_wire.HEADER, deadline))
            return _wire.parse(self._read_exact(n, deadline, mid_frame=True))
        except _wire.WireError as exc:
            self._die(f"the kernel broke the protocol ({exc})")
        except CallTimeout:
            if what == "start":
                self._die("the kernel did not start in time")
            raise

    def _receive_or_interrupt(self, deadline: float) -> dict:
        """Wait for a reply; at the deadline interrupt, then kill. Raises CallTimeout/KernelDied."""
        try:
            return self._receive(deadline)
        except CallTimeout:
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGINT)
        except (ProcessLookupError, PermissionError):
            self._die(self._exit_reason())
        try:
            self._receive(time.monotonic() + INTERRUPT_GRACE_S)
        except CallTimeout:
            self.dead_reason = "it ran past its time limit and did not stop when interrupted"
            self.close()
            raise CallTimeout(alive=False) from None
        except KernelDied:
            raise CallTimeout(alive=False) from None
        raise CallTimeout(alive=True)


def _ready(fd: int, event: int, timeout: float) -> bool:
    """Whether ``fd`` is ready (or closed at the other end) within ``timeout`` seconds. poll(),
    not select(): no limit on descriptor numbers in a long batch."""
    poller = select.poll()
    poller.register(fd, event)
    return bool(poller.poll(max(0, int(timeout * 1000) + 1)))


def _clean_error(error) -> dict | None:
    """A learner-controlled error description, reduced to three short strings."""
    if error is None or not isinstance(error, dict):
        return None
    return {k: _wire.one_line(str(error.get(k, "")), 240) for k in ("type", "message", "where")}
