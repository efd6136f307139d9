"""The ``lstmkit`` console command: ``doctor`` (check a machine), ``bench`` (the backends
against torch), ``grade`` (grade exercise notebooks) and ``exercises`` (build exercises/ from
solutions/).

Subcommands import what they need lazily, so ``lstmkit --help`` is instant.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import importlib.metadata as md
import platform
import sys
import time

from lstmkit import bench  # numpy only: torch and the kernels are imported inside bench.run

# (distribution, import name, required, why)
_PACKAGES = [
    ("numpy", "numpy", True, "arrays for everything"),
    ("scipy", "scipy", True, "BLAS for the Numba kernels"),
    ("numba", "numba", True, "the CPU kernels"),
    ("numba-cuda", "numba.cuda", True, "the CUDA kernels, on a GPU or the simulator"),
    ("torch", "torch", True, "the lstmkit.nn modules"),
    ("matplotlib", "matplotlib", True, "the lessons' figures"),
    ("ipywidgets", "ipywidgets", True, "the lessons' interactive explorers"),
    ("jupyterlab", "jupyterlab", True, "the course's front end"),
    ("tqdm", "tqdm", True, "progress bars"),
]


def _line(ok: bool | None, what: str, detail: str) -> str:
    mark = {True: "ok  ", False: "FAIL", None: "note"}[ok]
    return f"  [{mark}] {what:<22} {detail}"


def doctor(out=None) -> int:
    """Check that this machine can run the course; print one line per check.

    Returns 0 when everything required works, 1 otherwise (each failure line says the fix).
    """
    out = out or sys.stdout
    say = lambda s: print(s, file=out)
    # On a terminal, a line that says what a long check is doing, which its result overwrites
    # (the first compile of the kernels takes ~10 s, and the screen would otherwise sit still).
    tty = getattr(out, "isatty", lambda: False)()
    meanwhile = (lambda s: print(s, end="\r", file=out, flush=True)) if tty else (lambda s: None)
    failures = 0
    say(f"lstmkit doctor: Python {platform.python_version()} on {platform.system()} {platform.machine()}")

    for dist, module, required, why in _PACKAGES:
        try:
            version = md.version(dist)
            importlib.import_module(module)
            say(_line(True, dist, f"{version} ({why})"))
        except Exception as exc:  # not installed, or installed but broken
            failures += required
            say(_line(False, dist, f"missing or broken ({type(exc).__name__}: {exc}); "
                                   f"fix: pip install '{dist}' (or re-run `make lab`)"))

    failures += _check_widget_frontend(say)
    failures += _check_kernel(say, meanwhile)
    _check_cuda(say)

    say("")
    say("everything required works" if not failures else
        f"{failures} problem(s): fix the FAIL lines above, then run `lstmkit doctor` again")
    return 1 if failures else 0


def _check_widget_frontend(say) -> int:
    """ipywidgets 8 needs the jupyterlab_widgets extension in the Lab front end."""
    try:
        version = md.version("jupyterlab_widgets")
        say(_line(True, "widget front end", f"jupyterlab_widgets {version}: sliders render in JupyterLab"))
        return 0
    except md.PackageNotFoundError:
        say(_line(False, "widget front end", "jupyterlab_widgets is not installed, so widgets show as "
                                             "text; fix: pip install jupyterlab_widgets"))
        return 1


def _check_kernel(say, meanwhile=lambda s: None) -> int:
    """Compile (or load from the cache) every CPU kernel, timed; then run the float32 LSTM
    kernel and compare it with the reference."""
    meanwhile(f"  [....] {'all CPU kernels':<22} compiling (once per environment, ~10 s) ...")
    try:
        import numpy as np

        from lstmkit.kernels import cpu

        start = time.perf_counter()
        cpu.compile_all()  # so that no lesson waits for the compiler
        say(_line(True, "all CPU kernels", f"ready in {time.perf_counter() - start:.1f} s (compiled once "
                                           "per environment, then loaded from Numba's cache)"))
        rng = np.random.default_rng(0)
        T, B, I, H = 10, 4, 8, 16
        args = [rng.standard_normal(s).astype(np.float32) for s in
                [(T, B, I), (B, H), (B, H), (4 * H, I), (4 * H, H), (4 * H,), (4 * H,)]]
        y, *_ = cpu.lstm_forward(*args)
        start = time.perf_counter()
        cpu.lstm_forward(*args)
        took = time.perf_counter() - start
        from lstmkit import reference

        err = float(np.abs(reference.lstm_forward(*[a.astype(np.float64) for a in args])[0] - y).max())
        ok = err < 1e-5
        say(_line(ok, "numba kernel", f"LSTM forward (T={T}, B={B}, H={H}) in {took * 1e3:.2f} ms; "
                                      f"max error vs reference {err:.1e}"))
        return 0 if ok else 1
    except Exception as exc:
        say(_line(False, "numba kernel", f"failed: {type(exc).__name__}: {exc}; fix: reinstall numba "
                                         "and scipy (`make lab`)"))
        return 1


def _check_cuda(say) -> None:
    """A GPU is optional: report what the CUDA backend will use."""
    try:
        from lstmkit.devices import cuda_status

        status = cuda_status()
        optional = "; optional: no lesson needs a GPU" if status.mode == "none" else ""
        say(_line(True if status.mode != "none" else None, "cuda", f"{status}{optional}"))
    except Exception as exc:  # informational only
        say(_line(None, "cuda", f"could not be checked ({type(exc).__name__}: {exc})"))


# Below this, a learner kernel (Python, NumPy, the kernel's own machinery) cannot start: with
# --memory-mb 100 every notebook failed with "the kernel exited with code 1"; 512 started.
MIN_MEMORY_MB = 512


# Below this, a notebook's time runs out while its kernel starts (about 2 s) and its first cells
# run: every notebook would score 0. (Cells and calls get at least 5 s each of what remains.)
MIN_TIMEOUT_S = 10


def _seconds(text: str) -> float:
    """argparse type: a notebook's time limit, MIN_TIMEOUT_S seconds or more."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not MIN_TIMEOUT_S <= value < 1e6:  # (and not nan or inf, which the kernel's polls cannot wait for)
        raise argparse.ArgumentTypeError(f"must be a number of seconds from {MIN_TIMEOUT_S} (starting a "
                                         f"kernel and running the first cells takes a few) up to a "
                                         f"million, got {text!r}")
    return value


def _integer(text: str) -> int:
    """int(text), or -1 where text is no integer (a value that each caller refuses)."""
    try:
        return int(text)
    except ValueError:
        return -1


def secret_seed(text: str) -> int:
    """argparse type (and the check of $LSTMKIT_SECRET_SEED): 0 or a positive integer."""
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or a positive integer, got {text!r}")
    return value


def _memory_mb(text: str) -> int:
    """argparse type: 0 (no limit) or at least MIN_MEMORY_MB."""
    value = _integer(text)
    if value != 0 and value < MIN_MEMORY_MB:
        raise argparse.ArgumentTypeError(f"must be 0 (no limit) or at least {MIN_MEMORY_MB} MiB (a "
                                         f"kernel with Python and NumPy needs that much), got {text!r}")
    return value


def _add_grading_commands(sub) -> dict:
    """``grade`` and ``exercises build``, whose code lives in lstmkit.grading.commands (imported
    lazily); returns their parsers by command."""
    g = sub.add_parser("grade", help="grade submitted exercise notebooks (files or folders)",
                       description="Run each notebook in a sandboxed kernel of its own, call the "
                                   "learner's functions on inputs from a secret seed and compare with "
                                   "lstmkit.reference. Exit code 0 when every notebook has full marks, "
                                   "1 otherwise, 2 when nothing was graded (no notebook, a bad "
                                   "option).")
    g.add_argument("submissions", nargs="+", metavar="SUBMISSION", help="notebook files or folders of them")
    g.add_argument("--out", metavar="CSV", help="write grades (one row per notebook) to this CSV file")
    g.add_argument("--secret-seed", type=secret_seed, default=None, metavar="N",
                   help="seed of the test inputs, 0 or a positive integer (default: $LSTMKIT_SECRET_SEED, "
                        "else 0, the seed a learner grading their own notebook uses)")
    g.add_argument("--timeout", type=_seconds, default=120.0, metavar="S",
                   help=f"seconds per notebook (120; at least {MIN_TIMEOUT_S})")
    g.add_argument("--memory-mb", type=_memory_mb, default=3072, metavar="MB",
                   help=f"address-space limit of each learner kernel (3072; 0: no limit; else at least "
                        f"{MIN_MEMORY_MB})")
    g.add_argument("--jobs", type=bench.positive_int, default=None, metavar="N",
                   help="notebooks at once (CPU cores)")
    g.add_argument("--feedback", metavar="DIR",
                   help="per-notebook feedback (default: feedback/ next to --out)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.add_argument("--verbose", action="store_true", help="print every task of every notebook")
    g.set_defaults(grading_handler="grade_main")
    ex = sub.add_parser("exercises", help="exercise notebooks").add_subparsers(dest="action", required=True,
                                                                               metavar="build")
    b = ex.add_parser("build", help="write exercises/ from solutions/",
                      description="Write each exercises/NN_topic.ipynb from solutions/NN_topic.ipynb: "
                                  "the answers between ### BEGIN SOLUTION and ### END SOLUTION become "
                                  "`raise NotImplementedError()`, outputs are cleared, and the grade "
                                  "cells are checked against lstmkit/grading/tasks.py.")
    b.add_argument("--check", action="store_true", help="only compare; exit 1 when exercises/ is out of date")
    b.add_argument("--root", default=".", help="folder holding solutions/ and exercises/ (default: ., "
                                               "else an editable install's own checkout, which it names)")
    b.set_defaults(grading_handler="build_main")
    return {"grade": g, "exercises": b}


def _unrecognized(parser: argparse.ArgumentParser, extra: list[str]) -> None:
    """Exit with the subcommand's own usage, and the option meant where one is close: argparse
    reports a mistyped option with the top-level usage only."""
    options = [o for action in parser._actions for o in action.option_strings]
    flags = [e.split("=")[0] for e in extra if e.startswith("-")]
    guess = next((m[0] for f in flags if (m := difflib.get_close_matches(f, options, n=1))), None)
    meant = f" (did you mean {guess}?)" if guess else ""
    parser.error(f"unrecognized arguments: {' '.join(extra)}{meant}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lstmkit", description="Tools for the LSTM course.")
    sub = parser.add_subparsers(dest="command", required=True)
    parsers = {}
    parsers["doctor"] = sub.add_parser("doctor", help="check that this machine can run the course",
                   description="Check Python, the packages, the widget front end, a first compile of "
                               "the CPU kernels and CUDA (optional: no lesson needs a GPU), one line "
                               "each, with the fix for anything that fails. Exit code 0 when "
                               "everything required works.")
    bench.add_arguments(parsers.setdefault("bench", sub.add_parser(
        "bench", help="time lstmkit's LSTM backends against torch.nn.LSTM",
        description="Time lstmkit's LSTM backends against torch.nn.LSTM (same weights, same threads), "
                    "interleaved in one process: median time, GFLOP/s, torch/lstmkit and the fraction "
                    "of this machine's SGEMM peak, for forward and training over a grid of batch and "
                    "hidden sizes (input = hidden; by default T = 100).")))
    parsers.update(_add_grading_commands(sub))
    args, extra = parser.parse_known_args(argv)
    if extra:
        _unrecognized(parsers[args.command], extra)
    if getattr(args, "grading_handler", None):  # grade, exercises build
        from lstmkit.grading import commands

        return getattr(commands, args.grading_handler)(args)
    if args.command == "doctor":
        return doctor()
    if args.command == "bench":
        return bench.main(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
