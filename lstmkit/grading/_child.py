"""The learner's kernel while grading: a fresh IPython shell in a locked-down child process.

Run by the grader as ``python -I _child.py MEMORY_MB`` (by path, so that the real lstmkit
package is never imported here). It is the only place a learner's code runs during batch
grading, and it is trusted with nothing: it runs the notebook's code cells when told to and
calls the learner's functions on arguments the grader sends, returning whatever they return.
Expected answers, the secret seed and every comparison stay in the grader's process.

Before any learner code runs, this process

* caps its own address space (RLIMIT_AS), the size of files it may write and core dumps;
* moves its protocol pipes to private descriptors and points stdin/stdout/stderr at
  /dev/null, so learner output (even megabytes of it, even from C) costs nothing;
* replaces ``lstmkit`` with a stand-in: ``lstmkit.grading.check`` records and returns,
  ``lstmkit.reference`` is a copy whose graded functions raise ``UnavailableWhileGrading``
  (their code is not even loaded here), ``lstmkit.data`` and ``lstmkit._checks`` are the real
  ones, and every other lstmkit module fails to import;
* installs an audit hook (PEP 578) that refuses to open files of the lstmkit package, the
  solutions and the grader's inputs and outputs, to read other processes' /proc entries, to
  start processes, and to send signals to any process but itself.

The audit hook stops ordinary and moderately creative cheating; it is not a security
boundary against deliberate attacks through ctypes. Run the grader in a container for that.
"""

import os
import resource
import signal
import sys


def _limit_resources(memory_mb: int) -> None:
    """Soft and hard limits, so learner code cannot raise them again (where the OS enforces them:
    Linux does; macOS ignores RLIMIT_AS, and the wall-clock limits still apply)."""
    limits = [(resource.RLIMIT_CORE, 0), (resource.RLIMIT_FSIZE, 256 * 2**20)]
    if memory_mb > 0:
        limits.append((resource.RLIMIT_AS, memory_mb * 2**20))
    for which, value in limits:
        try:
            resource.setrlimit(which, (value, value))
        except (ValueError, OSError):
            pass


def _private_pipes(debug: bool) -> tuple[int, int]:
    """Move the protocol to new descriptors; stdin/stdout (and stderr) become /dev/null."""
    pin, pout = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1) if debug else (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    return pin, pout


class _Sink:
    """sys.stdout/sys.stderr for learner code: counts characters and throws them away."""

    encoding = "utf-8"
    errors = "replace"

    def __init__(self):
        self.count = 0

    def write(self, s):
        n = len(s)
        self.count += n
        return n

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def flush(self):
        pass

    def isatty(self):
        return False

    def fileno(self):
        return 1  # /dev/null

    def readable(self):
        return False

    def writable(self):
        return True

    @property
    def closed(self):
        return False


_in_learner = False  # SIGINT interrupts learner code only, never the protocol


def _on_sigint(signum, frame):
    if _in_learner:
        raise KeyboardInterrupt


def main() -> None:
    global _in_learner
    memory_mb = int(sys.argv[1])
    debug = os.environ.get("LSTMKIT_GRADING_DEBUG") == "1"
    _limit_resources(memory_mb)
    pin, pout = _private_pipes(debug)
    signal.signal(signal.SIGINT, _on_sigint)

    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, here)
    import _wire  # noqa: E402  (loaded by path, before the lock-down)

    sys.path.pop(0)

    def read_exact(n):
        chunks = []
        while n:
            b = os.read(pin, n)
            if not b:
                os._exit(0)  # the grader went away
            chunks.append(b)
            n -= len(b)
        return b"".join(chunks)

    def receive():
        n = _wire.unpack_length(read_exact(_wire.HEADER))
        return _wire.parse(read_exact(n))

    def send(msg):
        data = _wire.pack(msg)
        while data:
            k = os.write(pout, data)
            data = data[k:]

    setup = receive()
    stubs = _install_lstmkit(setup["modules"], setup["exercise"])
    shell = _make_shell()
    sink = _Sink()
    sys.stdout = sys.stderr = sink
    _install_audit_hook(setup["blocked_paths"], (pin, pout))
    send({"op": "ready"})

    import warnings

    user_ns = shell.user_ns
    while True:
        msg = receive()
        op = msg.get("op")
        if op == "run":
            error = None
            _in_learner = True
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    result = shell.run_cell(msg["source"], store_history=False)
            except BaseException as exc:  # IPython catches nearly everything itself
                result = None
                error = exc
            finally:
                _in_learner = False
            if result is not None:
                error = result.error_before_exec or result.error_in_exec
            send({"op": "ran", "error": None if error is None else _wire.describe_exception(error),
                  "output_chars": sink.count})
        elif op == "call":
            fn = user_ns.get(msg["name"])
            if not callable(fn):
                fn = stubs["checked"].get(msg.get("task"))
            if not callable(fn):
                send({"ok": False, "missing": True})
                continue
            try:
                args = _wire.decode(msg["args"])
                kwargs = _wire.decode(msg["kwargs"])
            except Exception as exc:
                send({"ok": False, "error": _wire.describe_exception(exc)})
                continue
            reply = None
            _in_learner = True
            try:
                # The warnings the call raised, for the grader (did a sigmoid overflow?): a few,
                # short, once per line of code ("default"), so that a loop that warns a million
                # times costs neither time nor memory.
                said: list[str] = []

                def keep(message, category, *_, said=said):
                    if len(said) < 5:
                        said.append(f"{category.__name__}: {str(message)[:200]}")

                with warnings.catch_warnings():
                    warnings.simplefilter("default")
                    warnings.showwarning = keep
                    value = fn(*args, **kwargs)
                _in_learner = False
                reply = {"ok": True, "value": _wire.encode(value), "warnings": said}
                _wire.pack(reply)  # too large? find out here, not in send()
            except BaseException as exc:
                _in_learner = False
                info = _wire.describe_exception(exc, skip_files=("<lstmkit.",))
                reply = {"ok": False, "error": info, "not_implemented": isinstance(exc, NotImplementedError)}
            send(reply)
        elif op == "exit":
            os._exit(0)
        else:
            send({"ok": False, "error": {"type": "ProtocolError", "message": f"unknown op {op!r}",
                                         "where": ""}})


def _install_lstmkit(sources: dict, exercise: str) -> dict:
    """Put the stand-in lstmkit package in front of the real one (which is never loaded here)."""
    import importlib.abc
    import importlib.machinery

    class UnavailableWhileGrading(RuntimeError):
        """Raised by lstmkit functions that an exercise asks the learner to write."""

    checked = {}

    def check(task_id, fn=None, *args, **kwargs):
        """While grading, check() only remembers which function was meant; the grader calls it."""
        if callable(fn):
            checked[str(task_id)] = fn
        return None

    def fill(module, name):
        if name == "lstmkit":
            module.__path__ = []
            module.__version__ = "grading"
            module.UnavailableWhileGrading = UnavailableWhileGrading

            def __getattr__(attr):
                import importlib

                try:
                    return importlib.import_module(f"lstmkit.{attr}")
                except ImportError as exc:
                    raise AttributeError(str(exc)) from None

            module.__getattr__ = __getattr__
        elif name == "lstmkit.grading":
            module.__path__ = []
            module.check = check
            module.UnavailableWhileGrading = UnavailableWhileGrading
        else:
            module.UnavailableWhileGrading = UnavailableWhileGrading
            code = compile(sources[name], f"<{name}: the grader's copy>", "exec")
            exec(code, module.__dict__)

    class Loader(importlib.abc.Loader):
        def create_module(self, spec):
            return None

        def exec_module(self, module):
            fill(module, module.__name__)

    class Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path=None, target=None):
            if fullname != "lstmkit" and not fullname.startswith("lstmkit."):
                return None
            if fullname in ("lstmkit", "lstmkit.grading") or fullname in sources:
                spec = importlib.machinery.ModuleSpec(fullname, Loader(),
                                                      is_package=fullname in ("lstmkit", "lstmkit.grading"))
                spec.origin = "grading stand-in"
                return spec
            available = ", ".join(sorted(n for n in sources if not n.startswith("lstmkit._")))
            raise ModuleNotFoundError(
                f"{fullname} is not available while grading exercise {exercise}: the grader runs your "
                f"own code (available: lstmkit.grading.check, {available})", name=fullname)

    for name in list(sys.modules):
        if name == "lstmkit" or name.startswith("lstmkit."):
            del sys.modules[name]
    sys.meta_path.insert(0, Finder())
    return {"checked": checked}


def _make_shell():
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    class GradingShell(InteractiveShell):
        def enable_gui(self, gui=None):  # %matplotlib inline and friends: nothing to show here
            return None

        def ask_exit(self):  # exit() / quit() in a cell: ignored, the grader decides when to stop
            self.exit_now = False

    config = Config()
    config.HistoryManager.enabled = False
    config.InteractiveShell.colors = "nocolor"
    shell = GradingShell.instance(config=config)
    shell.showtraceback = lambda *a, **k: None  # tracebacks go nowhere; errors are reported as data
    shell.showsyntaxerror = lambda *a, **k: None
    return shell


def _install_audit_hook(blocked_paths, private_fds) -> None:
    blocked = tuple(os.path.realpath(p).rstrip(os.sep) + os.sep for p in blocked_paths)
    me = os.getpid()
    proc = "/proc/"
    spawn = {"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
             "os.forkpty", "pty.spawn", "os.startfile"}

    def hook(event, args):
        if event == "open":
            path = args[0]
            if isinstance(path, int):
                if path in private_fds:
                    raise PermissionError("this file descriptor belongs to the grader")
                return
            if isinstance(path, bytes):
                path = os.fsdecode(path)
            if not isinstance(path, str):
                return
            full = os.path.realpath(path)
            if full.startswith(proc):
                head = full[len(proc):].split(os.sep, 1)[0]
                if head.isdigit() and int(head) != me:
                    raise PermissionError(f"reading {full} is not allowed while grading")
            if (full + os.sep).startswith(blocked):
                raise PermissionError(f"reading {path} is not allowed while grading")
        elif event in spawn:
            raise PermissionError(f"starting other programs ({event}) is not allowed while grading")
        elif event in ("os.kill", "os.killpg") and args[0] not in (me, 0):
            raise PermissionError("signalling other processes is not allowed while grading")

    sys.addaudithook(hook)


if __name__ == "__main__":
    main()
