"""The ``lstmkit grade`` and ``lstmkit exercises build`` commands (argparse lives in lstmkit.cli)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from lstmkit.grading.report import fmt_points


def _say(message: str) -> int:
    print(f"lstmkit grade: {message}", file=sys.stderr)
    return 2


def _unwritable(path: Path, what: str) -> str | None:
    """Why ``path`` (a file to write, or a folder to write into) cannot be written, or None:
    checked before grading, which may take minutes, rather than after it."""
    if what == "--out" and path.is_dir():
        return f"--out names a folder, {path}: give a file name, e.g. {path / 'grades.csv'}"
    if what != "--out" and path.exists() and not path.is_dir():
        return f"{what} names a file, {path}: give a folder"
    folder = path.parent if what == "--out" else path
    while not folder.exists() and folder != folder.parent:  # (missing folders are created)
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        return f"{what}: cannot write into {folder}"
    return None


def _first_chars(path: Path, n: int) -> str:
    """The first n characters of a text file (a feedback folder may hold many large files)."""
    with path.open(encoding="utf-8", errors="replace") as f:
        return f.read(n)


def grade_main(args) -> int:
    """Exit 0 when every notebook has full marks, 1 otherwise, 2 when there is nothing to grade."""
    from lstmkit.cli import secret_seed
    from lstmkit.grading.batch import feedback_path, find_submissions, grade, summary_line

    seed, env = args.secret_seed, os.environ.get("LSTMKIT_SECRET_SEED")
    if seed is None and env:
        try:
            seed = secret_seed(env)
        except argparse.ArgumentTypeError as exc:
            return _say(f"LSTMKIT_SECRET_SEED {exc}")
    try:
        subs = find_submissions(args.submissions)
    except (FileNotFoundError, ValueError) as exc:
        return _say(str(exc))
    if not subs:
        return _say(f"no .ipynb notebooks found in {', '.join(args.submissions)}")
    feedback = args.feedback
    if feedback is None and args.out:
        feedback = os.path.join(os.path.dirname(os.path.abspath(args.out)), "feedback")
    for path, what in ((args.out, "--out"), (feedback, "--feedback")):
        problem = path and _unwritable(Path(path).resolve(), what)
        if problem:
            return _say(problem)
    if seed is None:
        seed = 0
        if len(subs) > 1:  # a class, most likely, rather than a learner grading their own work
            print("lstmkit grade: note: no secret seed (--secret-seed N or LSTMKIT_SECRET_SEED): the test "
                  "inputs come from seed 0, which learners can use too", file=sys.stderr)
    results = grade(args.submissions, args.out, secret_seed=seed, timeout=args.timeout,
                    memory_mb=args.memory_mb, jobs=args.jobs, feedback_dir=feedback,
                    progress=not args.quiet and sys.stderr.isatty())  # no bar in a log file
    if len(results) == 1 or args.verbose:
        for r in results:
            print(f"{r.identifier} ({r.exercise or 'unknown exercise'}): {fmt_points(r.total)}/"
                  f"{fmt_points(r.max_points)} points; status: {r.status}")
            for t in r.results:
                print(f"  {t.task:<28} {fmt_points(t.points):>5}/{fmt_points(t.max_points):<3} {t.message}")
    print(summary_line(results, args.out, feedback))
    if feedback:  # left there by an earlier run: not to be handed out with this one's
        written = {feedback_path(Path(feedback), r.identifier).resolve() for r in results}
        old = [p for p in sorted(Path(feedback).rglob("*.md")) if p.resolve() not in written
               and _first_chars(p, len("# Feedback: ")) == "# Feedback: "]
        if old:
            print(f"note: {len(old)} other feedback file{'s' * (len(old) > 1)} in {feedback} "
                  f"({', '.join(p.name for p in old[:3])}{', ...' if len(old) > 3 else ''}) "
                  f"{'are' if len(old) > 1 else 'is'} from an earlier run, not this one")
    if not args.out and not feedback:
        print("(nothing saved: --out grades.csv writes the grades, and feedback files with hints "
              "next to it)")
    return 0 if all(r.full_marks for r in results) else 1


def build_main(args) -> int:
    """Exit 0 when exercises/ is (now) up to date, 1 with --check when it is not."""
    from lstmkit.grading.builder import BuildError, build_exercises

    root = Path(args.root)
    if args.root == "." and not (root / "solutions").is_dir():
        checkout = Path(__file__).resolve().parents[2]  # an editable install: the repository
        if (checkout / "solutions").is_dir():
            root = checkout
            print(f"no solutions/ here: using the course at {root}")
    try:
        report = build_exercises(root, check=args.check)
    except BuildError as exc:
        print(f"lstmkit exercises build: {exc}", file=sys.stderr)
        return 1
    for p in report.written:
        print(f"wrote {p}")
    for p in report.extra:
        print(f"{'out of date' if args.check else 'note'}: {p} has no solution notebook")
    if args.check:
        if report.stale or report.extra:
            for p in report.stale:
                print(f"out of date: {p}")
            print("exercises/ is out of date with solutions/: run `lstmkit exercises build`")
            return 1
        print(f"exercises/ is up to date ({len(report.unchanged)} notebooks)")
        return 0
    print(f"{len(report.written)} written, {len(report.unchanged)} unchanged")
    return 0
